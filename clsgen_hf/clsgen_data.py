"""CLSGen training data: `prepare_clsgen_dataset` turns rows into features, `DataCollatorForCLSGen` features into
batches. `CLSGenTrainer` prepares the datasets it is given itself, so rows and prepared features are both accepted."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, ProcessorMixin
from trl.trainer.utils import pad

from .clsgen_config import CLSGenConfig
from .prompt_template import encode_example
from .verdicts import DECISION_CUE_COLUMN


logger = logging.getLogger(__name__)


@dataclass
class DataCollatorForCLSGen:
    """Pads CLSGen rows (right side) into `input_ids`, `attention_mask`, `labels`, `cls_positions`, `cls_labels`."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = [torch.tensor(e["input_ids"]) for e in examples]
        multiple = self.pad_to_multiple_of
        return {
            "input_ids": pad(input_ids, self.pad_token_id, pad_to_multiple_of=multiple),
            "attention_mask": pad([torch.ones_like(x) for x in input_ids], 0, pad_to_multiple_of=multiple),
            "labels": pad([torch.tensor(e["labels"]) for e in examples], -100, pad_to_multiple_of=multiple),
            "cls_positions": torch.tensor([e["cls_positions"] for e in examples]),
            "cls_labels": torch.tensor([e["cls_labels"] for e in examples]),
        }


def prepare_clsgen_dataset(
    dataset: Dataset,
    processing_class: PreTrainedTokenizerBase | ProcessorMixin,
    args: CLSGenConfig,
    num_labels: int,
    dataset_name: str = "train",
) -> Dataset:
    """Check the rows (`prompt`, `completion`, an id below `num_labels` in `args.label_column`) and tokenize them into
    CLSGen features: `input_ids`, `labels` (-100 off the explanation), `cls_positions` (the last prompt token, which
    the head reads) and `cls_labels`. Shuffled once if `args.shuffle_dataset`; a dataset of features is returned as
    is."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"The {dataset_name} dataset must be a `datasets.Dataset`, got {type(dataset).__name__}.")
    if len(dataset) == 0:
        raise ValueError(f"The {dataset_name} dataset is empty: nothing to train or evaluate on.")
    if "cls_positions" in dataset.column_names:  # already prepared
        return dataset
    _check_rows(dataset, args.label_column, num_labels, dataset_name)
    tokenizer = getattr(processing_class, "tokenizer", processing_class)

    def encode(row):
        example = encode_example(tokenizer, row["prompt"], row["completion"], args.max_length)
        labels = _mask_decision_cue(tokenizer, example, row.get(DECISION_CUE_COLUMN))
        return {"input_ids": example.input_ids, "labels": labels, "cls_positions": example.cls_position,
                "cls_labels": row[args.label_column], "truncated": example.truncated}

    prepared = dataset.map(encode, remove_columns=dataset.column_names, num_proc=args.dataset_num_proc,
                           desc=f"Tokenizing {dataset_name} dataset")
    n_truncated = sum(prepared["truncated"])
    if n_truncated:
        logger.warning("%d of %d %s rows exceed max_length=%d: the end of their explanation was cut (the prompt "
                       "is kept whole, as inference sees it).", n_truncated, len(prepared), dataset_name,
                       args.max_length)
    prepared = prepared.remove_columns("truncated")
    if args.shuffle_dataset:
        prepared = prepared.shuffle(seed=args.seed)
    return prepared


def _check_rows(dataset: Dataset, label_column: str, num_labels: int, dataset_name: str) -> None:
    present = dataset.column_names
    for column in ("prompt", "completion", label_column):
        if column not in present:
            raise ValueError(f"The {dataset_name} dataset has no `{column}` column; CLSGen needs `prompt`, "
                             f"`completion` and `{label_column}`. Columns present: {present}.")
    labels = dataset[label_column]
    bad = Counter(label for label in labels if not (isinstance(label, int) and 0 <= label < num_labels))
    if bad:
        found = ", ".join(f"{value!r} ({count} rows)" for value, count in bad.most_common())
        raise ValueError(f"The {dataset_name} dataset has labels outside the model's label set [0, {num_labels}): "
                         f"{found}. Map them to integer ids first (e.g. with `label2id`).")
    texts = (c if isinstance(c, str) else "".join(m.get("content", "") for m in c) for c in dataset["completion"])
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty:
        raise ValueError(f"The {dataset_name} dataset has empty completions (no explanation to learn) at rows "
                         f"{empty[:20]}{' ...' if len(empty) > 20 else ''} ({len(empty)} rows).")


def _mask_decision_cue(tokenizer, example, cue: str | None) -> list[int]:
    """`example`'s labels, with its completion's leading decision cue (given at inference, not generated) masked."""
    if not cue:
        return example.labels
    cue_ids = tokenizer(cue, add_special_tokens=False)["input_ids"]
    start = example.cls_position + 1
    if example.input_ids[start : start + len(cue_ids)] != cue_ids:
        raise ValueError(f"A completion does not start with its decision cue {cue!r} as tokens.")
    return example.labels[:start] + [-100] * len(cue_ids) + example.labels[start + len(cue_ids) :]


__all__ = ["DataCollatorForCLSGen", "prepare_clsgen_dataset"]
