"""Resumable runs: each method's result (per seed) is written as soon as it is finished, keyed by a hash of every
option that shapes it, so a rerun with the same options skips it and a changed option recomputes it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from clsgen_hf.atomic import write_text_atomic


def options_key(options: dict[str, Any]) -> str:
    """A short, stable hash of `options` (JSON-serialisable values; key order does not matter)."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class ResultStore:
    """One JSON file per method and seed in `folder`, holding the options key it was computed under."""

    def __init__(self, folder: Path, key: str):
        self.folder, self.key = Path(folder), key

    def path(self, method: str, seed: int) -> Path:
        return self.folder / f"{method}-seed{seed}.json"

    def load(self, method: str, seed: int) -> dict | None:
        """The saved result, or `None` when there is none or it was computed under other options."""
        path = self.path(method, seed)
        if not path.is_file():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        return saved["result"] if saved.get("options_key") == self.key else None

    def save(self, method: str, seed: int, result: dict) -> Path:
        path = self.path(method, seed)
        write_text_atomic(path, json.dumps({"options_key": self.key, "result": result}) + "\n")
        return path
