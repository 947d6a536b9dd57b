"""Choosing the rows a run uses: reproducible subsets, a stratified validation slice, a refusal of one-class data."""

from __future__ import annotations

import logging
from collections import Counter

from datasets import Dataset

from ..errors import UsageError
from ..verdicts import VerdictFormat


logger = logging.getLogger(__name__)


def subset(rows: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A random `n` of the rows (all of them when `n` is None or not smaller)."""
    return rows if n is None or n >= len(rows) else rows.shuffle(seed=seed).select(range(n))


def stratified_split(rows: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(rest, held out): `fraction` of the rows of every label held out, at least one per label."""
    from sklearn.model_selection import train_test_split

    kept, held = train_test_split(
        list(range(len(rows))), test_size=max(fraction, len(set(rows["label"])) / len(rows)), random_state=seed,
        stratify=rows["label"],
    )
    return rows.select(sorted(kept)), rows.select(sorted(held))


def check_classes(labels: list[int], verdict_format: VerdictFormat, allow_single_class: bool, what: str) -> None:
    """Refuse (or, with `allow_single_class`, warn about) rows that all have one label: a head trained on them
    cannot learn to tell classes apart."""
    counts = Counter(labels)
    if len(counts) > 1:
        return
    only = next(iter(counts))
    message = (f"All {len(labels)} {what} have the label {only} ({verdict_format.verbalizers.get(only)}): "
               "one class can neither teach the head to tell classes apart nor fit its decision rule.")
    if not allow_single_class:
        raise UsageError(f"{message} Add rows of the other class(es) (a subset of the rows may have left them out), "
                         "or pass {allow_single_class} to train anyway.", allow_single_class=True)
    logger.warning("%s Training anyway (allow_single_class).", message)


__all__ = ["check_classes", "stratified_split", "subset"]
