"""Where `clsgen-hf` commands may write. Every command checks its outputs against its inputs and model folders before
any work (`claim_output_file`, `claim_output_folder`: never an output over an input or a model), and claims them so
that a second run writing the same output refuses. `clsgen-hf export` (all formats) writes into `staged_output`,
which lists what it wrote (`EXPORT_FILE`) and so replaces an output folder only if an export wrote all it holds."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import OutputBusyError, claim
from .errors import UsageError
from .json_files import read_json, write_json


EXPORT_FILE = "clsgen_export.json"
"""The names an export wrote in a folder of files: `overwrite` replaces a folder only if it lists all it holds."""


@contextmanager
def staged_output(out: str | os.PathLike, source: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """Refuse `out` if replacing it could delete what no export wrote (before any work), else a new folder next to it
    to write and validate the export in, marked and moved to `out` (checked again: it may have changed meanwhile)
    when the block ends; deleted if the block fails, kept if validation (a `UsageError` once something is written)
    does."""
    out, source = Path(out), Path(source)
    _check_output_dir(out, source, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
    except BaseException as error:
        if isinstance(error, UsageError) and any(staging.iterdir()):
            raise UsageError(f"{error.message}\nThe unvalidated export was left in {staging} for inspection.",
                             **error.parameters) from None
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _mark(staging)
    try:
        _check_output_dir(out, source, overwrite)
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


def _check_output_dir(out: Path, source: Path, overwrite: bool) -> None:
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


def _mark(folder: Path) -> None:
    """List what the export wrote in each of its folders of files (in a serving export, each of its folders)."""
    entries = sorted(folder.iterdir())
    if entries and all(p.is_dir() for p in entries):
        for entry in entries:
            _mark(entry)
    else:
        write_json(folder / EXPORT_FILE, [p.name for p in entries])


def _not_an_export(folder: Path) -> str | None:
    """What in `folder` no export wrote (`None`: nothing), as `_mark` lists it: an entry its `EXPORT_FILE` does not
    name, or in a folder of folders, what is in one of them."""
    entries = sorted(folder.iterdir())
    if all(p.is_dir() and not p.is_symlink() for p in entries):
        return next((f"has {p.name}/, which {why}" for p in entries if (why := _not_an_export(p))), None)
    try:
        written = read_json(folder / EXPORT_FILE)
    except UsageError:  # not JSON: no list of an export's
        written = None
    if not isinstance(written, list):
        return f"has no {EXPORT_FILE} (the list of what an export wrote there)"
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in entries
                     if p.is_symlink() or not p.is_file() or p.name not in {*map(str, written), EXPORT_FILE})
    return f"holds {', '.join(foreign[:8])}{' ...' if len(foreign) > 8 else ''}" if foreign else None


__all__ = ["EXPORT_FILE", "claim_output_file", "claim_output_folder", "staged_output"]
