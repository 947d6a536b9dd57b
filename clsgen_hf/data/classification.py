"""Text classification rows (CSV, JSON Lines, Parquet or `datasets` objects) -> classifier prompts and label ids.

Bad input fails here, as a `UsageError` naming the file, line, columns, labels or rows, not deep inside training.
Files are read without the persistent `datasets` cache: a cache keyed by path and modification time would serve the
old rows of a file rewritten within the same second, and would leave a copy of the user's rows in a shared folder.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset
from transformers import PreTrainedTokenizerBase

from ..errors import UsageError
from ..prompt_template import PromptTemplate, default_prompt_template
from .stats import describe_dataset


logger = logging.getLogger(__name__)

Source = str | Path | Mapping[str, str | Path] | Dataset | DatasetDict
_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_SHOWN = 20  # row indices listed in an error message


def load_classification_dataset(
    source: Source,
    *,
    text_fields: str | Sequence[str],
    label_field: str,
    label2id: Mapping[Any, int] | None = None,
    prompt_template: PromptTemplate | None = None,
    split: str | None = None,
    allow_empty_text: bool = False,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_prompt_tokens: int | None = None,
) -> Dataset | DatasetDict:
    """Load a classification dataset and build the classifier's prompt for every row.

    Args:
        source: a `.csv`, `.jsonl`/`.json` or `.parquet` file, a dict split -> file, or a `Dataset`/`DatasetDict`.
        text_fields: the column(s) holding the text; they must be non-empty.
        label2id: raw label -> label id (strings, or ints to remap such as `{0: 0, 1: 1, 2: 0}`); without it labels
            must be integers. A remapped `label` column keeps its raw values as `original_label`.
        prompt_template: default `default_prompt_template(text_fields)` (labels 0/1).
        split: return this split only, as a `Dataset`.
        allow_empty_text: drop rows with an empty text field (logged) instead of raising.
        tokenizer: counts prompt tokens, for `max_prompt_tokens` and the length statistics logged on load.
        max_prompt_tokens: cut the middle of the longest text field of longer prompts.

    Returns:
        A `Dataset` for a single file, a `Dataset` or `split`, else a `DatasetDict`.
    """
    if max_prompt_tokens is not None and tokenizer is None:
        raise ValueError("`max_prompt_tokens` needs a `tokenizer` to count tokens.")
    text_fields = [text_fields] if isinstance(text_fields, str) else list(text_fields)
    template = prompt_template or default_prompt_template(text_fields)
    text_fields = list(dict.fromkeys([*text_fields, *template.fields]))
    ds = _load_source(source, split)
    if isinstance(ds, DatasetDict) and len(ds) > 1:
        _check_split_columns(ds, [*text_fields, label_field])

    def prepare(ds: Dataset, where: str) -> Dataset:
        for name in [*text_fields, label_field]:
            if name not in ds.column_names:
                raise UsageError(f"{where}Field {name!r} does not exist; the columns are: {ds.column_names}.")
        ds, rows = _drop_empty(ds, text_fields, allow_empty_text, where)
        labels = _map_labels(list(ds[label_field]), label2id, template.labels, where, rows, label_field)
        prompts = _prompts(ds, template, tokenizer, max_prompt_tokens, where)
        if label_field == "label" and label2id is not None:
            ds = ds.remove_columns([c for c in ["original_label"] if c in ds.column_names])
            ds = ds.rename_column("label", "original_label")
        ds = ds.remove_columns([c for c in ["prompt", "label"] if c in ds.column_names])
        return ds.add_column("prompt", prompts).add_column("label", labels)

    if isinstance(ds, DatasetDict):
        ds = DatasetDict({name: prepare(part, f"[{name}] ") for name, part in ds.items()})
    else:
        ds = prepare(ds, "")
    logger.info("Loaded classification dataset:\n%s", describe_dataset(ds, tokenizer))
    return ds


def read_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """The rows of one CSV, JSON Lines or Parquet file, streamed (memory does not grow with the file), read and
    checked as `load_classification_dataset` does."""
    path = Path(path)
    builder, empty = _check_file(path)
    with tempfile.TemporaryDirectory(prefix="clsgen-read-") as cache_dir, _reading(path, builder, empty):
        rows = load_dataset(builder, data_files={"train": str(path)}, split="train", streaming=True,
                            cache_dir=cache_dir)  # only the builder's lock goes there
    count = 0
    with _reading(path, builder, empty):
        for row in rows:
            count += 1
            yield row
    if count == 0:
        raise empty


def parse_label2id(text: str) -> dict[str, int]:
    """A `label2id` written as text (as on a command line): a JSON object (`{"neg": 0, "pos": 1}`), a JSON list of
    the raw labels in id order (`["neg", "pos"]`), or `neg=0,pos=1`. Keys are compared with the raw labels as text
    too."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        if not pairs or any(len(pair) != 2 for pair in pairs):
            raise UsageError("{label2id}: give a JSON object like '{\"neg\": 0, \"pos\": 1}', a JSON list like "
                             "'[\"neg\", \"pos\"]' or neg=0,pos=1.", label2id=text) from None
        value = {key.strip(): value.strip() for key, value in pairs}
    if isinstance(value, list):
        value = {str(label): i for i, label in enumerate(value)}
    if not isinstance(value, dict) or not all(str(v).lstrip("-").isdigit() for v in value.values()):
        raise UsageError("{label2id}: every raw label must map to an integer label id.", label2id=text)
    return {str(key): int(v) for key, v in value.items()}


def _load_source(source: Source, split: str | None) -> Dataset | DatasetDict:
    if isinstance(source, (str, Path)):
        return _load_file(Path(source))
    if isinstance(source, Dataset):
        return source
    if split is not None and split not in source:
        raise UsageError(f"Split {split!r} is not among the splits given: {list(source)}.")
    if not isinstance(source, DatasetDict):  # split -> file
        # One split at a time: files whose columns differ are then reported by name, not as a cast error.
        source = DatasetDict({name: _load_file(Path(path)) for name, path in source.items() if split in (None, name)})
    return source if split is None else source[split]


def _load_file(path: Path) -> Dataset:
    builder, empty = _check_file(path)
    # A cache of its own, removed once the rows are in memory: nothing left behind, nothing stale served.
    with tempfile.TemporaryDirectory(prefix="clsgen-read-") as cache_dir, _reading(path, builder, empty):
        ds = load_dataset(builder, data_files={"train": str(path)}, split="train", cache_dir=cache_dir,
                          keep_in_memory=True)
    if len(ds) == 0:
        raise empty
    return ds


def _check_file(path: Path) -> tuple[str, UsageError]:
    """The `datasets` builder of `path` and the error its emptiness raises, after the checks that need no parser."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder: name the data file in it ({', '.join(_BUILDERS)}).")
    if not path.is_file():
        raise UsageError(f"No such data file: {path}")
    builder = _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise UsageError(f"{path}: unknown format; use one of {', '.join(_BUILDERS)}.")
    if path.suffix.lower() == ".jsonl":
        _check_json_lines(path)
    header = " or has only a header" if builder == "csv" else ""
    empty = UsageError(f"{path} holds no rows (the file is empty{header}).")
    if path.stat().st_size == 0:
        raise empty
    return builder, empty


@contextmanager
def _reading(path: Path, builder: str, empty: UsageError) -> Iterator[None]:
    """The parser's errors in the block as a `UsageError` naming the file."""
    try:
        yield
    except ValueError as error:
        if "corresponds to no data" in str(error):
            raise empty from None
        raise UsageError(f"{path} could not be read as {builder}: {error}") from error
    except Exception as error:  # noqa: BLE001 - datasets wraps the parser's error; its cause says what is wrong
        cause = error.__cause__ or error
        raise UsageError(f"{path} could not be read as {builder}: {type(cause).__name__}: {cause}") from error


def _check_json_lines(path: Path) -> None:
    """Names the first line of `path` that is not one JSON object (datasets' own error names none)."""
    with path.open(encoding="utf-8-sig") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                message = f"not valid JSON ({error.msg}, column {error.colno})"
                raise UsageError(f"{path}, line {number}: {message}.") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")


def _check_split_columns(ds: DatasetDict, needed: list[str]) -> None:
    """Splits may differ in extra columns, not in the ones the prompt and label need: name the difference."""
    columns = {name: set(part.column_names) for name, part in ds.items()}
    every, anywhere = set.intersection(*columns.values()), set.union(*columns.values())
    # A column missing everywhere is reported by `prepare`, naming the columns there are.
    lacking = {name: [c for c in needed if c in anywhere - have] for name, have in columns.items()}
    if any(lacking.values()):
        only = "; ".join(f"{name} alone has {sorted(have - every)}" for name, have in columns.items() if have - every)
        missing = "; ".join(f"{name} lacks {cols}" for name, cols in lacking.items() if cols)
        raise UsageError(f"The splits' columns differ: {missing} ({only}). Give every split the same columns.")


def fit_prompts(
    dataset: Dataset, template: PromptTemplate, tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: int
) -> Dataset:
    """`dataset` (as `load_classification_dataset` returns it) with its prompts rebuilt from the row's text fields and
    fitted to `max_prompt_tokens`: load without a budget, take a subset, then fit only the rows you use."""
    prompts = _prompts(dataset, template, tokenizer, max_prompt_tokens, where="")
    return dataset.remove_columns("prompt").add_column("prompt", prompts).select_columns(dataset.column_names)


def _prompts(
    ds: Dataset, template: PromptTemplate, tokenizer: PreTrainedTokenizerBase | None, max_prompt_tokens: int | None,
    where: str,
) -> list[list[dict[str, str]]]:
    rows = ds.select_columns(list(template.fields))
    if max_prompt_tokens is None:
        return [template.to_messages(row) for row in rows]
    fitted = [template.fit(row, tokenizer, max_prompt_tokens) for row in rows]
    if cut := sum(was_cut for _, was_cut in fitted):
        logger.warning(
            "%sCut the middle of the longest text field(s) in %d of %d prompts to fit max_prompt_tokens=%d.",
            where, cut, len(ds), max_prompt_tokens,
        )
    return [messages for messages, _ in fitted]


def _drop_empty(ds: Dataset, text_fields: list[str], allow_empty_text: bool, where: str) -> tuple[Dataset, list[int]]:
    """Rows whose text fields are all present (and their row numbers), or a UsageError naming the rows that are not."""
    columns = [ds[name] for name in text_fields]
    empty = [i for i, texts in enumerate(zip(*columns)) if any(_missing(t) or not str(t).strip() for t in texts)]
    if empty and not allow_empty_text:
        raise UsageError(
            f"{where}{len(empty)} rows have an empty text field among {text_fields}: rows {_rows(empty)}. "
            "Fix them, or pass {allow_empty_text} to skip them.", allow_empty_text=True,
        )
    if empty:
        logger.warning("%sSkipping %d rows with an empty text field: rows %s.", where, len(empty), _rows(empty))
    kept = sorted(set(range(len(ds))) - set(empty))
    return ds.select(kept), kept


def _map_labels(
    values: list, label2id: Mapping[Any, int] | None, allowed: list[int], where: str, rows: list[int], field: str
) -> list[int]:
    """Label ids of `values` (the label column of the file's rows `rows`), or a UsageError naming what is wrong."""
    unlabelled = [row for row, value in zip(rows, values) if _missing(value)]
    if unlabelled:
        raise UsageError(f"{where}{len(unlabelled)} rows have no label (empty, None or NaN in {field!r}): rows "
                         f"{_rows(unlabelled)}. Fill them in, or remove those rows.")
    labels = [_label_id(value, label2id) for value in values]
    bad = Counter(value for value, label in zip(values, labels) if label not in allowed)
    if bad:
        listed = ", ".join(f"{value!r} ({n} rows)" for value, n in bad.most_common())
        found = sorted(Counter(values).items(), key=lambda item: str(item[0]))
        example = ({str(value): label for (value, _), label in zip(found, allowed)} if len(found) == len(allowed)
                   else {"<raw label>": allowed[0]})
        raise UsageError(
            f"{where}Labels outside the label set {allowed}: {listed}. The labels found: "
            f"{', '.join(f'{value!r} ({n} rows)' for value, n in found)}. Map them to ids with {{label2id}}, or use a "
            "prompt template whose verbalizers cover them.", label2id=example,
        )
    return labels


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _rows(indices: list[int]) -> str:
    """Row numbers for a message (counted from 0, as `Dataset` indices; the header of a CSV is not a row)."""
    shown = ", ".join(map(str, indices[:_SHOWN]))
    return shown + (f" ... ({len(indices)} in all)" if len(indices) > _SHOWN else "") + " (0-based)"


def _label_id(value: Any, label2id: Mapping[Any, int] | None) -> int | None:
    """`value` as a label id: through `label2id` (tried as is, then as text), else as an integer."""
    if label2id is not None:
        label = label2id.get(value, label2id.get(str(value)))
        return None if label is None else int(label)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        return int(value.strip()) if value.strip().lstrip("-").isdigit() else None
    return int(value)


__all__ = ["fit_prompts", "load_classification_dataset", "parse_label2id", "read_rows"]
