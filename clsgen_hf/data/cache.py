"""An append-only JSON Lines store of teacher answers, so that an interrupted synthesis loses nothing.

Each answer is written (and flushed) as soon as its batch returns; a restarted run finds it by key and does not ask
the teacher again. A line cut short by a kill is skipped on load and its answer asked for again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)


def cache_key(*parts: Any) -> str:
    """A stable hash of JSON-serialisable `parts` (a row's prompt and label, the teacher, the template, ...)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    """`key -> record` backed by a JSON Lines file; records are dicts with at least a `key`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            broken = 0
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self.records[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    broken += line.strip() != ""
            if broken:
                logger.warning("%s: skipped %d unreadable lines (an interrupted write?).", self.path, broken)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self.records[key]

    def extend(self, records: list[dict[str, Any]]) -> None:
        """Append `records` to the file and flush, so that a kill right after loses none of them."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = _ends_mid_line(self.path)
        with self.path.open("a", encoding="utf-8") as file:
            if needs_newline:  # the previous run was killed mid-line: start on a fresh one
                file.write("\n")
            file.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            file.flush()
        self.records.update((record["key"], record) for record in records)


def _ends_mid_line(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as file:
        file.seek(-1, 2)
        return file.read(1) != b"\n"


__all__ = ["AnswerCache", "cache_key"]
