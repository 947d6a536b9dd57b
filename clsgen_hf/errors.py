"""`UsageError`, the one error class for user mistakes (a bad file, option or folder). Every `clsgen-hf` command
prints it as one line, `clsgen-hf <command>: error: <message>`, and exits with status 2, as argparse does; Ctrl-C
ends a command with one line and status 130."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .atomic import release_claims


class UsageError(ValueError):
    """Bad input from the user: reported as one line, without a traceback, with exit status 2."""


def run_command(
    command: str,
    body: Callable[[], object],
    *,
    usage_errors: tuple[type[BaseException], ...] = (UsageError,),
    failures: tuple[type[BaseException], ...] = (),
) -> int:
    """Run a command's `body`; returns its exit status: 2 for `usage_errors`, 1 for `failures` (each printed as
    `clsgen-hf <command>: error: <message>` on stderr), 130 for Ctrl-C, else 0. The outputs the body claimed are
    released when it ends."""
    try:
        body()
    except (*usage_errors, *failures) as error:
        print(f"clsgen-hf {command}: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, usage_errors) else 1
    except KeyboardInterrupt:
        return interrupted(command)
    finally:
        release_claims()
    return 0


def interrupted(command: str) -> int:
    """Report a Ctrl-C that ended `command` (one line on stderr); returns its exit status, 130."""
    print(f"clsgen-hf {command}: interrupted (Ctrl-C); the files it had finished writing are kept.", file=sys.stderr)
    return 130


__all__ = ["UsageError", "interrupted", "run_command"]
