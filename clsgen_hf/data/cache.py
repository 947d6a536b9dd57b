"""An append-only JSON Lines store of teacher answers, so that an interrupted synthesis loses nothing: each answer is
written and flushed as it returns, and a line cut short by a kill is skipped on load (its answer asked again)."""

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


class AnswerCache(dict):
    """`key -> record` backed by a JSON Lines file; records are dicts with at least a `key`."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        text = self.path.read_text(encoding="utf-8") if self.path.is_file() else ""
        self._mid_line = not text.endswith("\n") and text != ""  # the last run was killed mid-line
        broken = 0
        for line in text.splitlines():
            try:
                record = json.loads(line)
                self[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                broken += line.strip() != ""
        if broken:
            logger.warning("%s: skipped %d unreadable lines (an interrupted write?).", self.path, broken)

    def extend(self, records: list[dict[str, Any]]) -> None:
        """Append `records` to the file (closed, so flushed, before this returns)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            if self._mid_line:
                file.write("\n")
            file.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        self._mid_line = False
        self.update((record["key"], record) for record in records)


__all__ = ["AnswerCache", "cache_key"]
