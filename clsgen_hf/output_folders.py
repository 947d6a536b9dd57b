"""Where `clsgen-hf` commands may write. Every command checks its outputs against its inputs and model folders before
any work (`claim_output_file`, `claim_output_folder`: never an output over an input or a model), and claims them so
that a second run writing the same output refuses. `clsgen-hf export` (all formats) also stages the export next to
the output folder and replaces that folder only if `check_output_dir` accepts it, so that it never deletes what it
did not write."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import OutputBusyError, claim
from .errors import UsageError
from .json_files import read_json


SERVING_FOLDERS = ("classifier", "generator")  # what `clsgen_hf.serving.export_serving` writes
# Every name an export writes: `overwrite` replaces only a folder that holds nothing else.
_EXPORTED_NAMES = re.compile(
    r"(config|generation_config|adapter_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|vocab"
    r"|clsgen_\w+|model\.safetensors\.index)\.json|(model|adapter_model|model-\d+-of-\d+)\.safetensors"
    r"|(modeling|configuration)_clsgen\.py|README\.md|chat_template\.jinja|merges\.txt|tokenizer\.model"
)


@contextmanager
def staged_output(out: Path, source: Path, overwrite: bool) -> Iterator[Path]:
    """A new folder next to `out` to write and validate the export in, moved to `out` (checked again: it may have
    changed meanwhile) when the block ends; deleted if writing fails, kept if validation (a `UsageError`) does."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
    except UsageError as error:
        raise UsageError(f"{error.message}\nThe unvalidated export was left in {staging} for inspection.",
                         **error.parameters) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        check_output_dir(out, source, overwrite)
    except UsageError as error:
        raise UsageError(f"{error.message}\nThe export was left in {staging}.", **error.parameters) from None
    old = Path(tempfile.mkdtemp(prefix=f"{out.name}.", suffix=".old", dir=out.parent))
    if out.exists():
        out.rename(old / out.name)  # a previous `out` is deleted only once `staging` is in place
    staging.rename(out)
    shutil.rmtree(old)


def claim_output_file(flag: str, output: str | Path, inputs: dict[str, str | Path | None], *,
                      lock: bool = True) -> Path:
    """Refuse an output file that is a folder, lies under a file or is one of `inputs` (flag -> path; links and hard
    links resolved), then claim it for this run (`lock=False`: only check it, as the other processes of a
    distributed run do); returns it as a `Path`."""
    out = Path(output)
    if out.is_dir():
        raise UsageError(f"{flag} {output} is a folder: name the file to write.")
    _check_parents(flag, out)
    for name, path in inputs.items():
        if path is not None and _same_file(out, Path(path)):
            raise UsageError(f"{flag} {output} is the {name} file {path}: writing it would destroy the input; "
                             f"choose another {flag}.")
    return _claim(flag, out) if lock else out


def claim_output_folder(flag: str, output_dir: str | Path, sources: dict[str, str | Path | None], *,
                        lock: bool = True) -> Path:
    """Refuse an output folder that is a file, lies under a file, or is, contains or lies inside one of the local
    `sources` (what it is, e.g. "the source folder" -> its path; a Hub id is skipped), then claim it for this run
    (`lock=False`: only check it, as the other processes of a distributed run do); returns it as a `Path`."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {output_dir} is a file: name a folder.")
    _check_parents(flag, out)
    for what, source in sources.items():
        if source is not None and Path(source).exists() and (where := _relation(out, Path(source))):
            raise UsageError(f"{flag} {output_dir} {where} {what} {source}: writing there could overwrite it; "
                             f"choose a {flag} apart from it.")
    return _claim(flag, out) if lock else out


def _relation(out: Path, source: Path) -> str | None:
    """How `out` overlaps `source` (links resolved): "is", "lies inside", "contains", or `None`."""
    target, src = out.resolve(), source.resolve()
    if target == src:
        return "is"
    return "lies inside" if src in target.parents else "contains" if target in src.parents else None


def _check_parents(flag: str, out: Path) -> None:
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"{flag} {out}: {parent} is a file, not a folder.")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _claim(flag: str, out: Path) -> Path:
    try:
        claim(out)
    except OutputBusyError as error:
        raise UsageError(f"{flag} {error}") from None
    return out


def check_output_dir(out: Path, source: Path, overwrite: bool) -> None:
    """Refuse an output folder whose replacement could delete what the export did not write (links resolved)."""
    if where := _relation(out, source):
        raise UsageError(f"{out} {where} the source folder {source}: write the export to a folder outside it "
                         "({overwrite} does not change this).", overwrite=True)
    if out.is_symlink():
        raise UsageError(f"{out} is a symbolic link: give the folder itself.")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise UsageError(f"{out} is a file: choose a folder.")
    if not overwrite:
        raise UsageError(f"{out} exists and is not empty; choose another folder or pass {{overwrite}}.",
                         overwrite=True)
    if what := _not_an_export(out):
        raise UsageError(f"{{overwrite}} replaces only a folder written by an export, and {out} {what}: move what "
                         "you want to keep, or choose another folder.", overwrite=True)


def _not_an_export(folder: Path, model_type: str = "llama_clsgen") -> str | None:
    """What in `folder` an export did not write (`None`: nothing): a merged or adapter export holds only exported
    names and a `model_type` config; a serving export holds `SERVING_FOLDERS`, each such a folder of a plain Llama."""
    entries = sorted(folder.iterdir())
    if model_type == "llama_clsgen" and [p.name for p in entries] == sorted(SERVING_FOLDERS) and all(
        p.is_dir() and not p.is_symlink() for p in entries
    ):
        return next((f"has {p.name}/, which {why}" for p in entries if (why := _not_an_export(p, "llama"))), None)
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in entries
                     if p.is_symlink() or not p.is_file() or not _EXPORTED_NAMES.fullmatch(p.name))
    if foreign:
        return f"holds {', '.join(foreign[:8])}{' ...' if len(foreign) > 8 else ''}"
    try:
        config = read_json(folder / "config.json")
    except UsageError:  # not JSON: not an export either
        config = None
    if not isinstance(config, dict) or config.get("model_type") != model_type:
        return f"has no {'CLSGen' if model_type == 'llama_clsgen' else 'Llama'} config.json"
    return None


__all__ = ["SERVING_FOLDERS", "check_output_dir", "claim_output_file", "claim_output_folder", "staged_output"]
