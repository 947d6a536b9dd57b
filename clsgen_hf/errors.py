"""`UsageError`, the one error class for user mistakes (a bad file, option or folder). Every `clsgen-hf` command
prints it as one line, `clsgen-hf <command>: error: <message>`, and exits with status 2, as argparse does; Ctrl-C
ends a command with one line and status 130. `TeacherError` lives here too, so that a command can name it (exit
status 1) without importing the teachers' model code."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from typing import Any

from .atomic import release_claims


class UsageError(ValueError):
    """Bad input from the user: reported as one line, without a traceback, with exit status 2.

    The message names the API's parameters as `{name}` fields, each valued by a keyword (`...`: named with no
    value), so that an API user reads the keyword they pass and a command's user the flag they type:
    `UsageError("{max_prompt_tokens} is too long.", max_prompt_tokens=9000)` reads `max_prompt_tokens=9000 is too
    long.`, and `--<name> 9000 is too long.` once `run_command` spells it (`as_flags`).
    """

    def __init__(self, message: str, **parameters: Any):
        self.message, self.parameters = message, parameters
        super().__init__(self._spelled(_as_keyword))

    def as_flags(self) -> str:
        """The message with each parameter spelled as the command-line option of the same name."""
        return self._spelled(_as_flag)

    def _spelled(self, spell: Callable[[str, Any], str]) -> str:
        message = self.message
        for name, value in self.parameters.items():
            message = message.replace(f"{{{name}}}", spell(name, value))
        return message


def _as_keyword(name: str, value: Any) -> str:
    return f"{name}=..." if value is ... else f"{name}={value!r}"


def _as_flag(name: str, value: Any) -> str:
    if value is ... or value is True:
        return f"--{name}"
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
    return f"--{name} {shlex.quote(text)}"


class TeacherError(RuntimeError):
    """A teacher could not answer (endpoint down, bad reply, missing backend)."""


def run_command(
    command: str,
    body: Callable[[], object],
    *,
    usage_errors: tuple[type[BaseException], ...] = (UsageError,),
    failures: tuple[type[BaseException], ...] = (),
) -> int:
    """Run a command's `body`; returns its exit status: 2 for `usage_errors`, 1 for `failures` (each printed as
    `clsgen-hf <command>: error: <message>` on stderr, a `UsageError`'s parameters spelled as the command's flags),
    130 for Ctrl-C, else 0. The outputs the body claimed are released when it ends."""
    try:
        body()
    except (*usage_errors, *failures) as error:
        print(f"clsgen-hf {command}: error: {error.as_flags() if isinstance(error, UsageError) else error}",
              file=sys.stderr)
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


__all__ = ["TeacherError", "UsageError", "interrupted", "run_command"]
