"""`predict_file`: `predict` over a whole CSV, JSON Lines or Parquet file, as `clsgen-hf predict` runs it.

Made for files of hundreds of thousands of rows and hours of generation:

- streamed: rows are read, predicted and written `chunk_size` at a time, so memory does not grow with the file; each
  chunk is sorted by prompt length before batching (less padding) and written back in the input's order;
- resumable: predictions are appended, flushed batch by batch, to `<output>.partial`, whose first line records the
  options and the input's content hash; a killed run restarted with the same options predicts only the rows not yet
  written (a line cut short by the kill is dropped), a restart with other options is refused unless `overwrite`; the
  finished file replaces `output` in one `os.replace`, so an earlier output survives a kill;
- data-parallel: under `accelerate launch` (or `torchrun`) each process predicts every N-th row into a shard of its
  own, and the main process merges the shards in input order (the same file as one process writes);
- probabilities only (`max_new_tokens=0`): one forward per row, batched by a token budget instead of a row count.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .atomic import atomic_path
from .data import read_rows
from .errors import UsageError
from .inference import _BatchPredictor
from .json_files import json_line
from .loading import load_model_and_tokenizer
from .model_folders import inspect_model_folder
from .prompt_template import PromptTemplate, default_prompt_template, encode_prompts


logger = logging.getLogger("clsgen_hf.predict")

OUTPUT_FORMATS = (".jsonl", ".csv")


def predict_file(
    model: str | os.PathLike | PreTrainedModel,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    prompt_template: PromptTemplate | str | os.PathLike | None = None,
    text_fields: list[str] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    max_prompt_tokens: int | None = None,
    threshold: float | None = None,
    max_batch_tokens: int = 8192,
    chunk_size: int = 256,
    overwrite: bool = False,
    explain: str = "natural",
) -> dict[str, Any]:
    """Predict every row of `input` and write `output` (`.jsonl`, or `.csv` with one `probability_<i>` per class).

    Args:
        model: a CLSGen model folder (checked before any weight loads, then loaded), or a loaded model with its
            `tokenizer`.
        prompt_template: a `PromptTemplate` or its JSON file; default one built from `text_fields`, else the model
            folder's `clsgen_prompt.json`. Rows with a non-empty `prompt` are used as they are.
        batch_size: prompts per batch when generating; `max_batch_tokens` bounds the padded tokens of a batch when
            `max_new_tokens=0`.
        chunk_size: rows read, predicted and written at a time (per process).
        overwrite: discard an unfinished run of other options instead of refusing.
        explain: `predict`'s explanation mode ("natural" or "decision").

    Every input column is kept, followed by `predict`'s fields (an input column of the same name is kept as
    `input_<name>`). Returns a summary: `rows` (in the file), `predicted` and `resumed_at` (this process's rows),
    `seconds`, and in the main process `disagreeing` (explanations that do not state the head's label; `None`
    without explanations).
    """
    state = PartialState(cpu=not torch.cuda.is_available())  # without `cpu`, accelerate finds no gloo group on CPU
    input, output = Path(input), Path(output)
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise UsageError(f"output must end in {' or '.join(OUTPUT_FORMATS)}, got {output}.")
    folder = None if isinstance(model, PreTrainedModel) else Path(model)
    if folder is not None:
        try:
            inspect_model_folder(folder)  # a CLSGen model with a trained head and readable weights, before it loads
        except UsageError as error:
            raise UsageError(f"model {model}: {error}") from None
    elif tokenizer is None:
        raise ValueError("A loaded `model` needs its `tokenizer`.")
    shards = [_shard(output, rank, state.num_processes) for rank in range(state.num_processes)]
    identity = _model_identity(model, folder)
    if isinstance(prompt_template, (str, os.PathLike)):
        prompt_template = PromptTemplate.from_pretrained(prompt_template)
    template = prompt_template or (default_prompt_template(text_fields) if text_fields else
                                   PromptTemplate.in_folder(folder))
    rows, digest = _check_rows(input, template)
    options = {"model": identity, "prompt_template": template and template.to_dict(), "threshold": threshold,
               "max_new_tokens": max_new_tokens, "max_prompt_tokens": max_prompt_tokens, "explain": explain,
               "input": digest, "rows": rows}
    shard = shards[state.process_index]
    done = _open_journal(shard, options, overwrite)
    share = len(range(state.process_index, rows, state.num_processes))
    if done:
        where = "" if state.num_processes == 1 else f" of process {state.process_index}'s share"
        logger.info("%s: resuming at row %d of %d%s.", input, done, share, where)

    if folder is not None:
        try:
            model, tokenizer = load_model_and_tokenizer(folder)
        except (OSError, ValueError) as error:  # e.g. missing tokenizer files
            raise UsageError(f"model {folder}: {str(error).strip().splitlines()[0]}") from None
        model.to(state.device)
    predictor = _BatchPredictor(model, tokenizer, verdict_format=template.verdict_format if template else None,
                                max_new_tokens=max_new_tokens, threshold=threshold, explain=explain)
    started, first, tokens = time.time(), done, 0
    mine = islice(read_rows(input), state.process_index + done * state.num_processes, None, state.num_processes)
    with shard.open("a", encoding="utf-8") as journal:
        while chunk := list(islice(mine, chunk_size)):
            numbers = range((first * state.num_processes + state.process_index) + 1, rows + 1, state.num_processes)
            tokens += _predict_chunk(predictor, template, chunk, numbers, input, max_prompt_tokens, batch_size,
                                     max_batch_tokens if max_new_tokens == 0 else None, journal)
            first += len(chunk)
            seconds = time.time() - started
            logger.info("%d of %d rows (%.1f rows/s, %.0f tokens/s)", first, share, (first - done) / seconds,
                        tokens / seconds)
    state.wait_for_everyone()
    summary = {"rows": rows, "predicted": share - done, "resumed_at": done, "seconds": time.time() - started}
    if state.is_main_process:
        summary["disagreeing"] = _merge(output, shards, rows, max_new_tokens > 0)
        logger.info("Wrote %s (%d rows; %d predicted by this process in %.1f s)", output, rows, summary["predicted"],
                    summary["seconds"])
    state.wait_for_everyone()
    return summary


def _check_rows(path: Path, template: PromptTemplate | None) -> tuple[int, str]:
    """Row count and content hash of the input, every row checked (before any weight loads), in one streamed pass."""
    count = 0
    for count, row in enumerate(read_rows(path), start=1):
        _prediction_input(row, template, path, count)
    with path.open("rb") as file:
        return count, hashlib.file_digest(file, "sha256").hexdigest()


def _model_identity(model, folder: Path | None) -> dict[str, Any]:
    """The model as the journal records it: the folder and its weight files' sizes and times (retrained in place:
    another model), or a loaded model's `name_or_path`."""
    if folder is None:
        return {"name_or_path": model.name_or_path}
    weights = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    return {"folder": str(folder.resolve()), "weights": [[p.name, p.stat().st_size, p.stat().st_mtime_ns]
                                                         for p in weights]}


def _shard(output: Path, rank: int, processes: int) -> Path:
    suffix = ".partial" if processes == 1 else f".partial-{rank}-of-{processes}"
    return output.with_name(output.name + suffix)


def _open_journal(path: Path, options: dict, overwrite: bool) -> int:
    """Rows already in the journal at `path` (created with `options` as its first line if absent); a line cut short
    by a kill is cut off. An unfinished run of other options is refused, or discarded with `overwrite` (a journal
    without rows, e.g. of a run that stopped at a bad option, is simply replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"clsgen_predict": options}, sort_keys=True) + "\n"
    expected = json.loads(header)["clsgen_predict"]  # as read back (tuples as lists)
    if path.is_file():
        with path.open("rb") as file:
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
            os.truncate(path, end)
            return count
        changed = next((key for key in expected if recorded.get(key) != expected[key]), "journal")
        if count and not overwrite:
            raise UsageError(f"{path} holds an unfinished run with another {changed}: rerun with the same options to "
                             f"resume it, or pass {{overwrite}} to start again.", overwrite=True)
        if count:
            logger.warning("%s: discarding an unfinished run with another %s.", path, changed)
    path.write_text(header, encoding="utf-8")
    return 0


def _predict_chunk(predictor, template: PromptTemplate | None, rows: list[dict], numbers: range, path: Path,
                   max_prompt_tokens: int | None, batch_size: int, max_tokens: int | None, journal) -> int:
    """Predict `rows` (the file's rows `numbers`) in batches of similar length, `batch_size` rows each or, with
    `max_tokens`, as many as fit that many padded tokens (at least one), appending each finished prefix of the rows
    to `journal` in input order; returns the tokens processed (prompt and explanation)."""
    inputs = [_prediction_input(row, template, path, number) for row, number in zip(rows, numbers)]
    ids = encode_prompts(predictor.tokenizer, inputs, template, max_prompt_tokens)
    batches: list[list[int]] = [[]]
    for i in sorted(range(len(rows)), key=lambda i: len(ids[i])):
        size = len(batches[-1])
        if size and (size == batch_size if max_tokens is None else (size + 1) * len(ids[i]) > max_tokens):
            batches.append([])
        batches[-1].append(i)
    records: list[dict | None] = [None] * len(rows)
    written, tokens = 0, sum(map(len, ids))
    for batch in batches:
        for i, record in zip(batch, predictor([ids[i] for i in batch])):
            records[i] = record
            if record["explanation"]:
                tokens += len(predictor.tokenizer(record["explanation"], add_special_tokens=False)["input_ids"])
        while written < len(rows) and records[written] is not None:
            row, record = rows[written], records[written]
            # An input column that a prediction field would overwrite (e.g. a gold `label`) is kept as `input_<name>`.
            out = {**{(f"input_{key}" if key in record else key): value for key, value in row.items()}, **record}
            journal.write(json_line(out))
            written += 1
        journal.flush()
    return tokens


def _merge(output: Path, shards: list[Path], rows: int, explained: bool) -> int | None:
    """Write `output` from the shards in input order through a temporary file and one `os.replace`, remove the
    shards; returns how many explanations disagree with the head."""
    columns, disagreeing = {}, 0  # the CSV's: every row's, in order of first use
    for row in map(json.loads, _journal_lines(shards, rows)):
        columns.update(dict.fromkeys(_flat(row)))
        disagreeing += not row["agrees"]
    lines = _journal_lines(shards, rows)
    with atomic_path(output) as temporary, temporary.open("w", encoding="utf-8", newline="") as file:
        if output.suffix.lower() == ".jsonl":
            file.writelines(lines)  # as the journals hold them
        else:
            writer = csv.DictWriter(file, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(_flat(json.loads(line)) for line in lines)
    for shard in shards:
        shard.unlink()
    return disagreeing if explained else None


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


def _prediction_input(row: dict, template: PromptTemplate | None, path: Path, number: int) -> dict:
    """The row as `predict` takes it: its ready `prompt`, or the fields the template reads."""
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip() or isinstance(prompt, list) and prompt:
        return {"prompt": prompt}
    if template is None:
        raise UsageError(f"{path}: rows have no `prompt` column and the model folder has no clsgen_prompt.json; name "
                         f"the text column(s) ({{text_fields}}) or pass a prompt template ({{prompt_template}}). "
                         f"Columns present: {sorted(row)}.", text_fields=..., prompt_template=...)
    missing = [name for name in template.fields if name not in row]
    if missing:
        raise UsageError(f"{path}, row {number}: missing the field(s) {', '.join(map(repr, missing))} the prompt "
                         f"needs; columns present: {sorted(row)}.")
    empty = [name for name in template.fields if row[name] is None or not str(row[name]).strip()]
    if empty:
        raise UsageError(f"{path}, row {number}: the field(s) {', '.join(map(repr, empty))} are empty.")
    return {name: row[name] for name in template.fields}


__all__ = ["predict_file"]
