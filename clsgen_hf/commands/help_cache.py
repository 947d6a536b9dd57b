"""`clsgen-hf <command> --help` without building the command's parser, for a command whose parser imports the training
stack (`train`: its options are TRL's and transformers' `TrainingArguments`, whose module loads torch and peft).

The help text is a pure function of the installed code, so it is cached: `save_help` writes it (on the first
`--help`, and whenever the command has built its parser anyway) to `$HF_HOME/clsgen_hf/help/<command>.json` with the
key it holds for, and `print_help` prints it while the key still matches. The key hashes what the text depends on:
the versions of clsgen_hf and of the libraries whose dataclasses make the options, the Python version, clsgen_hf's
sources (an editable install changes without a new version) and the terminal width argparse wraps the text to. A
missing, stale, corrupt or unwritable cache only means that the live parser prints the help, as without a cache.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import sys
from argparse import ArgumentParser
from importlib import metadata
from pathlib import Path

from ..atomic import write_text_atomic


SOURCES = Path(__file__).resolve().parents[1]  # the clsgen_hf package
LIBRARIES = ("clsgen_hf", "transformers", "trl", "peft", "accelerate", "torch")


def help_key() -> str:
    """The hash of everything a command's help text depends on (see the module docstring)."""
    digest = hashlib.sha256()
    for name in LIBRARIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:  # clsgen_hf run from a checkout: its sources say which
            version = None
        digest.update(f"{name}=={version}\n".encode())
    digest.update(f"python {sys.version}\ncolumns {shutil.get_terminal_size().columns}\n".encode())
    for path in sorted(SOURCES.rglob("*.py")):
        digest.update(f"{path.relative_to(SOURCES).as_posix()}\n".encode() + path.read_bytes())
    return digest.hexdigest()


def cache_file(command: str) -> Path:
    """Where `command`'s help is cached: beside the Hugging Face libraries' caches (`HF_HOME`)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "clsgen_hf" / "help" / f"{command}.json"


def cached_help(command: str, key: str | None = None) -> str | None:
    """`command`'s help text, if the cache holds it for this installation and terminal width (`key`: `help_key()`, if
    the caller has it already); else None."""
    try:
        saved = json.loads(cache_file(command).read_bytes())
        fresh = saved["key"] == (key or help_key()) and isinstance(saved["help"], str)
    except (OSError, ValueError, LookupError, TypeError):  # missing, unreadable, or not what `save_help` wrote
        return None
    return saved["help"] if fresh else None


def save_help(command: str, parser: ArgumentParser) -> str:
    """`parser.format_help()`, cached as `command`'s help unless it already is (skipped where it cannot be written)."""
    text, key = parser.format_help(), help_key()
    if cached_help(command, key) != text:
        try:
            write_text_atomic(cache_file(command), json.dumps({"key": key, "help": text}))
        except OSError:
            pass
    return text


def print_help(command: str, module: str) -> int:
    """Print `command`'s help: the cached text, else that of the live parser (`make_parser()` of the command's
    `module`), which fills the cache. Returns 0, the exit status of `--help`."""
    text = cached_help(command)
    if text is None:
        text = save_help(command, importlib.import_module(module).make_parser())
    try:
        sys.stdout.write(text)
    except OSError:  # as argparse's `print_help`: a reader that went away (`| head`) is no error
        pass
    return 0


__all__ = ["cache_file", "cached_help", "help_key", "print_help", "save_help"]
