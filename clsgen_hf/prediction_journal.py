"""The journal that makes `predict_file` resumable and data-parallel: output rows are appended to `<output>.partial`
(a `.partial-<rank>-of-<N>` shard per process, which predicts every N-th row) after a first line that records the
options, model and input; the main process merges the shards in input order into `output` in one `os.replace`."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from accelerate import PartialState

from .atomic import atomic_path
from .errors import UsageError


logger = logging.getLogger("clsgen_hf.predict")


@dataclass
class Journal:
    """This process's shard, open for appending after its `done` rows; the merge's count of `disagreeing` rows."""

    file: TextIO
    done: int
    disagreeing: int | None = None


@contextmanager
def prediction_journal(input: Path, rows: int, output: Path, options: dict[str, Any], *, overwrite: bool,
                       state: PartialState) -> Iterator[Journal]:
    """This process's journal of a run of `options` over the `rows` rows of `input` (recorded by content): resumed
    where a killed run of the same options stopped (a line cut short is cut off), refused if one of other options
    holds rows unless `overwrite` (one without rows is simply replaced); merged into `output` if the run succeeds."""
    with input.open("rb") as file:
        options = {**options, "input": hashlib.file_digest(file, "sha256").hexdigest(), "rows": rows}
    n = state.num_processes
    shards = [output.with_name(f"{output.name}.partial" + ("" if n == 1 else f"-{rank}-of-{n}")) for rank in range(n)]
    done = _resume(shards[state.process_index], options, overwrite)
    with shards[state.process_index].open("a", encoding="utf-8", buffering=1) as file:  # a kill loses no row written
        yield (journal := Journal(file, done))
    state.wait_for_everyone()
    if state.is_main_process:
        journal.disagreeing = _merge(output, shards, rows)
    state.wait_for_everyone()


def model_identity(model, folder: Path | None) -> dict[str, Any]:
    """The model as the journal records it: its weight files' sizes and times (retrained in place: another model)."""
    if folder is None:
        return {"name_or_path": model.name_or_path}
    weights = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    return {"folder": str(folder.resolve()), "weights": [[p.name, p.stat().st_size, p.stat().st_mtime_ns]
                                                         for p in weights]}


def _resume(path: Path, options: dict, overwrite: bool) -> int:
    """Rows already in the journal at `path` (created with `options` as its first line if absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"clsgen_predict": options}, sort_keys=True) + "\n"
    expected = json.loads(header)["clsgen_predict"]  # as read back (tuples as lists)
    if path.is_file():
        with path.open("r+b") as file:
            try:
                recorded = json.loads(file.readline()).get("clsgen_predict", {})
            except (json.JSONDecodeError, AttributeError):  # killed while writing the header
                recorded = {}
            count, end = 0, file.tell()
            for line in file:
                if not line.endswith(b"\n"):
                    break
                count, end = count + 1, end + len(line)
            if recorded == expected:
                file.truncate(end)
                return count
        changed = next((key for key in expected if recorded.get(key) != expected[key]), "journal")
        if count and not overwrite:
            raise UsageError(f"{path} holds an unfinished run with another {changed}: rerun with the same options to "
                             f"resume it, or pass {{overwrite}} to start again.", overwrite=True)
        if count:
            logger.warning("%s: discarding an unfinished run with another %s.", path, changed)
    path.write_text(header, encoding="utf-8")
    return 0


def _merge(output: Path, shards: list[Path], rows: int) -> int:
    """Write `output` from the shards through a temporary file; returns how many rows have `agrees` false."""
    columns, disagreeing = {}, 0  # the CSV's: every row's, in order of first use
    for row in map(json.loads, _journal_lines(shards, rows)):
        columns.update(dict.fromkeys(_flat(row)))
        disagreeing += not row["agrees"]
    with atomic_path(output) as temporary, temporary.open("w", encoding="utf-8", newline="") as file:
        if output.suffix.lower() == ".jsonl":
            file.writelines(_journal_lines(shards, rows))  # as the journals hold them
        else:
            writer = csv.DictWriter(file, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(_flat(json.loads(line)) for line in _journal_lines(shards, rows))
    for shard in shards:
        shard.unlink()
    return disagreeing


def _journal_lines(shards: list[Path], rows: int) -> Iterator[str]:
    """The journals' rows in input order (row i from shard i mod N), as written."""
    with ExitStack() as stack:
        files = [stack.enter_context(shard.open(encoding="utf-8")) for shard in shards]
        for file in files:
            file.readline()  # the options
        yield from (files[i % len(files)].readline() for i in range(rows))


def _flat(row: dict) -> dict:
    """A CSV row: `probability` as one `probability_<i>` column per class."""
    return {**{key: value for key, value in row.items() if key != "probability"},
            **{f"probability_{i}": p for i, p in enumerate(row["probability"])}}


__all__ = ["Journal", "model_identity", "prediction_journal"]
