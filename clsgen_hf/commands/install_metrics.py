"""`clsgen-hf install-metrics`: make `evaluate.load("clsgen/<metric>")` work offline, or publish the metrics as Spaces."""

from __future__ import annotations

import argparse

from ..metric_modules import METRIC_NAMES, NAMESPACE, install_metrics, prepare_spaces, push_spaces


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clsgen-hf install-metrics",
        description=(
            f"Install the CLSGen alignment metrics ({', '.join(METRIC_NAMES)}) into evaluate's modules cache, so "
            f'that evaluate.load("{NAMESPACE}/<name>") works offline (HF_HUB_OFFLINE=1 HF_EVALUATE_OFFLINE=1). '
            "With --spaces, write Hugging Face Space folders instead; add --push to upload them."
        ),
    )
    parser.add_argument(
        "--cache-dir",
        help="evaluate's modules cache to install into (default: $HF_MODULES_CACHE, else ~/.cache/huggingface/modules).",
    )
    parser.add_argument("--spaces", metavar="OUT_DIR", help="Write one Space folder per metric under OUT_DIR.")
    parser.add_argument(
        "--push",
        metavar="NAMESPACE",
        help="With --spaces: prepare the Spaces for NAMESPACE and upload them to NAMESPACE/<name> (needs a Hub token).",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.push and not args.spaces:
        parser.error("--push uploads the folders written by --spaces OUT_DIR: give both.")
    if args.spaces and args.cache_dir:
        parser.error("--cache-dir is for installing; --spaces writes Space folders instead.")

    if not args.spaces:
        for path in install_metrics(args.cache_dir):
            print(f"installed {path}")
        print(f'usage: evaluate.load("{NAMESPACE}/{METRIC_NAMES[0]}")  # works offline from this cache')
        return 0

    namespace = args.push or NAMESPACE
    for folder in prepare_spaces(args.spaces, namespace):
        print(f"prepared Space {folder}")
    if args.push:
        for url in push_spaces(args.spaces, namespace):
            print(f"pushed {url}")
    print(f'usage: evaluate.load("{namespace}/{METRIC_NAMES[0]}")  # once the Spaces are on the Hub')
    return 0
