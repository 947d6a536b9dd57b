"""Reading and writing the JSON and JSON Lines files of a run (results, predictions, configs): standard JSON only
(an undefined metric is `null`, never a bare `NaN`), UTF-8, written atomically."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .atomic import atomic_path, write_text_atomic
from .errors import UsageError


def read_json(path: str | os.PathLike) -> Any:
    """The parsed JSON file at `path`, `None` when there is none; one that is not JSON raises a `UsageError`."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not valid JSON ({error}).") from error


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinity (an undefined metric, an empty reliability bin) as `None`."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def json_line(row: Any) -> str:
    """One JSON Lines record (with its newline)."""
    return json.dumps(json_safe(row), ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> None:
    """`data` as standard JSON, indented."""
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(rows: Iterable[Any], path: str | os.PathLike) -> None:
    """`rows` as JSON Lines, one record a line."""
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as file:
        file.writelines(json_line(row) for row in rows)
