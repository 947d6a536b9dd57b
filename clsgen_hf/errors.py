"""`UsageError`, the one error class for user mistakes (a bad file, option or folder). Every `clsgen-hf` command
prints it as one line, `clsgen-hf <command>: error: <message>`, and exits with status 2, as argparse does."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UsageError(ValueError):
    """Bad input from the user: reported as one line, without a traceback, with exit status 2."""


def report_usage_error(command: str, error: BaseException, status: int = 2) -> int:
    """Print `error` as `clsgen-hf <command>: error: <message>` on stderr; returns the exit `status`."""
    print(f"clsgen-hf {command}: error: {error}", file=sys.stderr)
    return status


def run_command(
    command: str,
    body: Callable[[], object],
    *,
    usage_errors: tuple[type[BaseException], ...] = (UsageError,),
    failures: tuple[type[BaseException], ...] = (),
) -> int:
    """Run a command's `body`; returns its exit status: 2 (one line) for `usage_errors`, 1 for `failures`, else 0."""
    try:
        body()
    except usage_errors as error:
        return report_usage_error(command, error)
    except failures as error:
        return report_usage_error(command, error, status=1)
    return 0


__all__ = ["UsageError", "report_usage_error", "run_command"]
