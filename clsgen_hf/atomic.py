"""How `clsgen-hf` commands write: every file goes to a new temporary file in the same folder (an exclusive name) and
is moved over the target with `os.replace`, so that a kill or a full disk leaves either the old file or the new one,
never a truncated one, and a symbolic link at the target is replaced, never followed (a set of files written by a
library, a saved model, goes to a hidden folder beside them first: `atomic_files`); and each output is claimed by
one command at a time (`claim`), so that two runs writing the same output do not interleave."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writes are still atomic
    fcntl = None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path next to `path` (same suffix, for writers that read the format from it) to write to;
    moved to `path` when the block ends, deleted if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would make every output private
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """`Path.write_text(text)` (UTF-8), atomically; returns `path`."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def atomic_files(folder: str | os.PathLike, last: tuple[str, ...] = ("config.json", "adapter_config.json")) -> \
        Iterator[Path]:
    """A fresh hidden folder inside `folder` to write a set of files to (a model's weights, config, tokenizer) with
    writers that cannot write atomically themselves (`save_pretrained`); when the block ends, each file is moved into
    `folder` with `os.replace`, the `last` names (those that make a folder look like a model) after the others;
    deleted, and `folder` left as it was, if the block raises. A kill therefore leaves the previous files, or all the
    new ones but for the instant of the moves; never a half-written file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".saving.", dir=folder))
    try:
        yield staging
        files = sorted((path for path in staging.rglob("*") if not path.is_dir()), key=lambda path: path.name in last)
        for path in files:
            target = folder / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_CLAIMS: dict[Path, int] = {}  # lock file -> its open descriptor, held by this process


class OutputBusyError(OSError):
    """Another process holds the claim on an output."""


def claim(path: str | os.PathLike) -> None:
    """Hold an exclusive lock on `path` (a file or folder, existing or not) until `release_claims`, through a hidden
    lock file beside it; raises `OutputBusyError` when another process holds it. The lock is the kernel's (`flock`):
    a killed process releases it, so a stale lock file never blocks a rerun."""
    path = Path(path).absolute()
    lock = path.with_name(f".{path.name}.lock")
    if lock in _CLAIMS or fcntl is None:
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputBusyError(f"{path} is being written by another clsgen-hf command (it holds {lock}); wait for it "
                              "to end, or choose another output.") from None
    _CLAIMS[lock] = fd


def release_claims() -> None:
    """Release every claim this process holds, deleting the lock files."""
    while _CLAIMS:
        lock, fd = _CLAIMS.popitem()
        lock.unlink(missing_ok=True)
        os.close(fd)


__all__ = ["OutputBusyError", "atomic_files", "atomic_path", "claim", "release_claims", "write_text_atomic"]
