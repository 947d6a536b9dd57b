"""`predict_file`: `predict` over a whole CSV, JSON Lines or Parquet file, streamed, resumable and data-parallel."""

from __future__ import annotations

import logging
import os
import time
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import read_rows
from .errors import UsageError
from .inference import predict_by_length
from .json_files import json_line
from .loading import load_model_and_tokenizer
from .model_folders import inspect_model_folder
from .prediction_journal import model_identity, prediction_journal
from .prompt_template import PromptTemplate, build_prompt_template, encode_prompts, prediction_input


logger = logging.getLogger("clsgen_hf.predict")


def predict_file(
    model: str | os.PathLike | PreTrainedModel, input: str | os.PathLike, output: str | os.PathLike, *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    prompt_template: PromptTemplate | str | os.PathLike | None = None, text_fields: list[str] | None = None,
    batch_size: int = 8, max_new_tokens: int = 128, max_prompt_tokens: int | None = None,
    threshold: float | None = None, max_batch_tokens: int = 8192, chunk_size: int = 256, overwrite: bool = False,
    explain: str = "natural",
) -> dict[str, Any]:
    """Predict every row of `input` and write `output` (`.jsonl`, or `.csv` with one `probability_<i>` per class).

    Args:
        model: a CLSGen model folder (checked before any weight loads), or a loaded model with its `tokenizer`.
        prompt_template: a `PromptTemplate` or its JSON file; default one built from `text_fields`, else the model
            folder's `clsgen_prompt.json`. Rows with a non-empty `prompt` are used as they are.
        batch_size, max_batch_tokens: prompts per batch; padded tokens per batch instead when `max_new_tokens=0`.
        chunk_size: rows read, predicted (batched by prompt length) and written at a time, per process.
        overwrite: discard an unfinished run of other options instead of refusing.
        explain: `predict`'s explanation mode ("natural" or "decision").

    Every input column is kept (as `input_<name>` if a field of `predict`'s has its name), then `predict`'s fields.
    Returns a summary: `rows` (in the file), `predicted` and `resumed_at` (this process's rows), `seconds`, and in
    the main process `disagreeing` (explanations not stating the head's label; `None` without explanations).
    """
    state = PartialState(cpu=not torch.cuda.is_available())  # without `cpu`, accelerate finds no gloo group on CPU
    input, output = Path(input), Path(output)
    if output.suffix.lower() not in (".jsonl", ".csv"):
        raise UsageError(f"output must end in .jsonl or .csv, got {output}.")
    folder = None if isinstance(model, PreTrainedModel) else Path(model)
    if folder is not None:
        try:
            inspect_model_folder(folder)  # a CLSGen model with a trained head and readable weights, before it loads
        except UsageError as error:
            raise UsageError(f"model {model}: {error}") from None
    elif tokenizer is None:
        raise ValueError("A loaded `model` needs its `tokenizer`.")
    template = (build_prompt_template(prompt_template, text_fields=text_fields)
                if prompt_template is not None or text_fields else PromptTemplate.in_folder(folder))
    for rows, row in enumerate(read_rows(input), start=1):  # every row checked, before any weight loads
        prediction_input(row, template, input, rows)
    options = {"prompt_template": template and template.to_dict(), "model": model_identity(model, folder),
               "threshold": threshold, "max_new_tokens": max_new_tokens, "max_prompt_tokens": max_prompt_tokens,
               "explain": explain}
    with prediction_journal(input, rows, output, options, overwrite=overwrite, state=state) as journal:
        share = len(range(state.process_index, rows, state.num_processes))
        if journal.done:
            where = "" if state.num_processes == 1 else f" of process {state.process_index}'s share"
            logger.info("%s: resuming at row %d of %d%s.", input, journal.done, share, where)
        if folder is not None:
            try:
                model, tokenizer = load_model_and_tokenizer(folder)
            except (OSError, ValueError) as error:  # e.g. missing tokenizer files
                raise UsageError(f"model {folder}: {str(error).strip().splitlines()[0]}") from None
            model.to(state.device)
        started, first, tokens = time.time(), journal.done, 0
        mine = islice(enumerate(read_rows(input), start=1), state.process_index + first * state.num_processes, None,
                      state.num_processes)  # (number, row) of this process's rows not yet journaled
        while chunk := list(islice(mine, chunk_size)):
            inputs = [prediction_input(row, template, input, number) for number, row in chunk]
            prompts, written = encode_prompts(tokenizer, inputs, template, max_prompt_tokens), 0
            for records, processed in predict_by_length(
                model, tokenizer, prompts, prompt_template=template, batch_size=batch_size, explain=explain,
                max_batch_tokens=max_batch_tokens, max_new_tokens=max_new_tokens, threshold=threshold,
            ):
                for (_, row), record in zip(chunk[written:], records):
                    out = {(f"input_{key}" if key in record else key): value for key, value in row.items()}
                    journal.file.write(json_line({**out, **record}))
                written, tokens = written + len(records), tokens + processed
            first += len(chunk)
            seconds = time.time() - started
            logger.info("%d of %d rows (%.1f rows/s, %.0f tokens/s)", first, share, (first - journal.done) / seconds,
                        tokens / seconds)
        summary = {"rows": rows, "predicted": share - journal.done, "resumed_at": journal.done,
                   "seconds": time.time() - started}
    if state.is_main_process:
        summary["disagreeing"] = journal.disagreeing if max_new_tokens > 0 else None
        logger.info("Wrote %s (%d rows; %d predicted by this process in %.1f s)", output, rows, summary["predicted"],
                    summary["seconds"])
    return summary


__all__ = ["predict_file"]
