"""Loading a text classification dataset (CSV, JSON Lines, Parquet or `datasets` objects) into classifier prompts.

Every row leaves with `prompt` (the classifier's chat messages, built by a `PromptTemplate`) and an integer `label`;
its original columns stay. Bad input fails here, with the offending columns, labels or rows named, rather than as a
shape error deep inside training.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset
from transformers import PreTrainedTokenizerBase

from .stats import describe_dataset
from .templates import PromptTemplate, default_prompt_template
from .truncation import fit_prompt


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
        text_fields: the column(s) holding the text; they must exist and be non-empty.
        label_field: the column holding the label.
        label2id: raw label value -> label id (strings, or ints to remap, e.g. `{0: 0, 1: 1, 2: 0}`); without it
            labels must be integers. When it remaps the `label` column itself, the raw value is kept as
            `original_label`.
        prompt_template: how rows become messages; default `default_prompt_template(text_fields)` (labels 0/1).
        split: return this split only, as a `Dataset`.
        allow_empty_text: drop rows with an empty text field (logged) instead of raising.
        tokenizer: counts prompt tokens, for `max_prompt_tokens` and the length statistics logged on load.
        max_prompt_tokens: cut the middle of the longest text field of longer prompts (counted and logged).

    Returns:
        A `Dataset` for a single file, a `Dataset` or `split`, else a `DatasetDict`.
    """
    if max_prompt_tokens is not None and tokenizer is None:
        raise ValueError("`max_prompt_tokens` needs a `tokenizer` to count tokens.")
    text_fields = [text_fields] if isinstance(text_fields, str) else list(text_fields)
    template = prompt_template or default_prompt_template(text_fields)
    ds = _load_source(source, split)
    kwargs = dict(
        template=template,
        text_fields=list(dict.fromkeys([*text_fields, *template.fields])),
        label_field=label_field,
        label2id=label2id,
        allow_empty_text=allow_empty_text,
        tokenizer=tokenizer,
        max_prompt_tokens=max_prompt_tokens,
    )
    if isinstance(ds, DatasetDict):
        ds = DatasetDict({name: _prepare(part, where=f"[{name}] ", **kwargs) for name, part in ds.items()})
    else:
        ds = _prepare(ds, where="", **kwargs)
    logger.info("Loaded classification dataset:\n%s", describe_dataset(ds, tokenizer))
    return ds


def _load_source(source: Source, split: str | None) -> Dataset | DatasetDict:
    if isinstance(source, (Dataset, DatasetDict)):
        ds = source
    else:
        files = dict(source) if isinstance(source, Mapping) else {"train": source}
        if split is not None and isinstance(source, Mapping):
            if split not in files:
                raise ValueError(f"Split {split!r} is not among the files given: {sorted(files)}.")
            files = {split: files[split]}
        builder = _builder(files.values())
        ds = load_dataset(builder, data_files={name: str(path) for name, path in files.items()})
        if not isinstance(source, Mapping):
            return ds["train"]
    if split is not None and isinstance(ds, DatasetDict):
        if split not in ds:
            raise ValueError(f"Split {split!r} is not in the dataset; it has {list(ds)}.")
        return ds[split]
    return ds


def _builder(paths) -> str:
    """The `datasets` builder ("csv", "json", "parquet") shared by all `paths`."""
    builders = set()
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"No such data file: {path}")
        if path.suffix.lower() not in _BUILDERS:
            raise ValueError(f"{path}: unknown format; use one of {', '.join(_BUILDERS)}.")
        builders.add(_BUILDERS[path.suffix.lower()])
    if len(builders) != 1:
        raise ValueError(f"All splits must share one file format, got {sorted(builders)}.")
    return builders.pop()


def _prepare(
    ds: Dataset,
    *,
    where: str,
    template: PromptTemplate,
    text_fields: list[str],
    label_field: str,
    label2id: Mapping[Any, int] | None,
    allow_empty_text: bool,
    tokenizer: PreTrainedTokenizerBase | None,
    max_prompt_tokens: int | None,
) -> Dataset:
    for name in [*text_fields, label_field]:
        if name not in ds.column_names:
            raise ValueError(f"{where}Field {name!r} does not exist; the columns are: {ds.column_names}.")
    ds = _drop_empty(ds, text_fields, allow_empty_text, where)
    labels = _map_labels(list(ds[label_field]), label2id, template.labels, where)

    prompts = _prompts(ds, template, tokenizer, max_prompt_tokens, where)
    if label_field == "label" and label2id is not None:
        ds = ds.remove_columns([c for c in ["original_label"] if c in ds.column_names])
        ds = ds.rename_column("label", "original_label")
    ds = ds.remove_columns([c for c in ["prompt", "label"] if c in ds.column_names])
    return ds.add_column("prompt", prompts).add_column("label", labels)


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
    if max_prompt_tokens is None:
        return [template.to_messages(row) for row in ds.select_columns(list(template.fields))]
    prompts, cut = [], 0
    for row in ds.select_columns(list(template.fields)):
        messages, was_cut = fit_prompt(template, row, tokenizer, max_prompt_tokens)
        prompts.append(messages)
        cut += was_cut
    if cut:
        logger.warning(
            "%sCut the middle of the longest text field(s) in %d of %d prompts to fit max_prompt_tokens=%d.",
            where, cut, len(ds), max_prompt_tokens,
        )
    return prompts


def _drop_empty(ds: Dataset, text_fields: list[str], allow_empty_text: bool, where: str) -> Dataset:
    """Rows whose text fields are all present, or a ValueError naming the rows that are not."""
    columns = [ds[name] for name in text_fields]
    empty = [i for i, texts in enumerate(zip(*columns)) if any(t is None or not str(t).strip() for t in texts)]
    if not empty:
        return ds
    shown = ", ".join(map(str, empty[:_SHOWN])) + (f" ... ({len(empty)} in all)" if len(empty) > _SHOWN else "")
    if not allow_empty_text:
        raise ValueError(
            f"{where}{len(empty)} rows have an empty text field among {text_fields}: rows {shown}. "
            "Fix them, or pass allow_empty_text=True (--allow-empty-text) to skip them."
        )
    logger.warning("%sSkipping %d rows with an empty text field: rows %s.", where, len(empty), shown)
    drop = set(empty)
    return ds.select([i for i in range(len(ds)) if i not in drop])


def _map_labels(values: list, label2id: Mapping[Any, int] | None, allowed: list[int], where: str) -> list[int]:
    labels, bad = [], Counter()
    for value in values:
        label = _label_id(value, label2id)
        if label not in allowed:
            bad[value] += 1
        labels.append(label)
    if bad:
        listed = ", ".join(f"{value!r} ({n} rows)" for value, n in bad.most_common())
        raise ValueError(
            f"{where}Labels outside the label set {allowed}: {listed}. Map them with `label2id`, or use a prompt "
            "template whose verbalizers cover them."
        )
    return labels


def _label_id(value: Any, label2id: Mapping[Any, int] | None) -> int | None:
    """`value` as a label id: through `label2id` (tried as is, then as text), else as an integer."""
    if label2id is not None:
        if value in label2id:
            return int(label2id[value])
        return int(label2id[str(value)]) if str(value) in label2id else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        return int(value.strip()) if value.strip().lstrip("-").isdigit() else None
    return int(value)


__all__ = ["fit_prompts", "load_classification_dataset"]
