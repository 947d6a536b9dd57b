"""`clsgen-hf install-metrics`: make `evaluate.load("clsgen/<metric>")` work offline, or publish Hub Spaces."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError, run_command
from ..metric_modules import METRIC_NAMES, NAMESPACE, install_metrics, prepare_spaces, push_spaces
from .options import CommandParser, parse_options


@dataclass
class InstallMetricsArguments:
    """Install the CLSGen alignment metrics into evaluate's modules cache, so that `evaluate.load("clsgen/<name>")`
    works offline (HF_HUB_OFFLINE=1 HF_EVALUATE_OFFLINE=1); with --spaces, write Hugging Face Space folders instead,
    and with --push upload them."""

    cache_dir: str | None = field(default=None, metadata={"help": "evaluate's modules cache to install into "
                                  "(default: $HF_MODULES_CACHE, else ~/.cache/huggingface/modules)."})
    spaces: str | None = field(default=None, metadata={"help": "Write one Space folder per metric under this folder."})
    push: str | None = field(default=None, metadata={"help": "With --spaces: prepare the Spaces for this namespace "
                             "and upload them to <namespace>/<name> (needs a Hub token)."})

    def __post_init__(self):
        if self.push and not self.spaces:
            raise UsageError("--push uploads the folders written by --spaces: give both.")
        if self.spaces and self.cache_dir:
            raise UsageError("--cache_dir is for installing; --spaces writes Space folders instead.")


def make_parser() -> CommandParser:
    return CommandParser(InstallMetricsArguments, prog="clsgen-hf install-metrics",
                         description=InstallMetricsArguments.__doc__)


def main(argv: list[str] | None = None) -> int:
    return run_command("install-metrics", lambda: run(*parse_options(make_parser(), argv)))


def run(args: InstallMetricsArguments) -> None:
    """Install the metrics into the cache, or write (and push) the Space folders."""
    if not args.spaces:
        for path in install_metrics(args.cache_dir):
            print(f"installed {path}")
        print(f'usage: evaluate.load("{NAMESPACE}/{METRIC_NAMES[0]}")  # works offline from this cache')
        return
    namespace = args.push or NAMESPACE
    for folder in prepare_spaces(args.spaces, namespace):
        print(f"prepared Space {folder}")
    if args.push:
        for url in push_spaces(args.spaces, namespace):
            print(f"pushed {url}")
    print(f'usage: evaluate.load("{namespace}/{METRIC_NAMES[0]}")  # once the Spaces are on the Hub')
