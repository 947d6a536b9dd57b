"""A summary of a classification dataset, printed on load: class imbalance and overlong prompts show before
training."""

from __future__ import annotations

from collections import Counter

import numpy as np
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from ..prompt_template import count_prompt_tokens


def describe_dataset(ds: Dataset | DatasetDict, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """Rows per class and, with a tokenizer, prompt length percentiles in tokens; one block per split."""
    if isinstance(ds, DatasetDict):
        return "\n".join(f"[{name}] {describe_dataset(split, tokenizer)}" for name, split in ds.items())
    lines = [f"{len(ds)} rows"]
    counts = Counter(ds["label"]) if "label" in ds.column_names else Counter()
    lines += [f"  label {label}: {n} ({n / len(ds):.1%})" for label, n in sorted(counts.items())]
    if tokenizer is not None and "prompt" in ds.column_names and len(ds):
        lengths = np.array([count_prompt_tokens(tokenizer, messages) for messages in ds["prompt"]])
        p50, p90, p99 = np.percentile(lengths, [50, 90, 99]).round().astype(int)
        mean, longest = lengths.mean(), lengths.max()
        lines.append(f"  prompt tokens: mean {mean:.0f}, p50 {p50}, p90 {p90}, p99 {p99}, max {longest}")
    return "\n".join(lines)


__all__ = ["describe_dataset"]
