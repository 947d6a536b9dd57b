"""The one error class for user mistakes (a bad file, option or folder), shared by every `clsgen-hf` command.

Library functions raise `UsageError` (a `ValueError`, so `except ValueError` still catches it) with a message that
names the file, column, row or option at fault and what to do; each command's `main` prints it as one line,
`clsgen-hf <command>: error: <message>`, and exits with status 2, as argparse does for a bad option.
"""

from __future__ import annotations

import sys


USAGE_EXIT_STATUS = 2


class UsageError(ValueError):
    """Bad input from the user: reported as one line, without a traceback, with exit status 2."""


def report_usage_error(command: str, error: BaseException) -> int:
    """Print `error` as `clsgen-hf <command>: error: <message>` on stderr; returns the exit status (2)."""
    print(f"clsgen-hf {command}: error: {error}", file=sys.stderr)
    return USAGE_EXIT_STATUS


__all__ = ["USAGE_EXIT_STATUS", "UsageError", "report_usage_error"]
