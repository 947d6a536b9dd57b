"""How good a CLSGen model is: its head against gold labels (`classification_report`), and against the verdicts its
own explanations state (`alignment_report`: AUROC-Alignment, R-LKappa, RLI, readability; arXiv 2604.11801).

Probabilities are the positive-class probability per example (binary, decided at `probability >= threshold`) or
one row of N class probabilities (decided by argmax). `evaluate_metrics/` repeats the alignment math standalone.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    cohen_kappa_score,
    f1_score,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)

from .verdicts import NO_VERDICT, VerdictFormat


def _validated(probabilities: ArrayLike, targets: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n,) or (n, N) and integer `name` (n,); `verdicts` may also be `NO_VERDICT`, `labels` not."""
    probs = np.asarray(probabilities, dtype=float)
    values = np.asarray(targets)
    if probs.ndim not in (1, 2) or (probs.ndim == 2 and probs.shape[1] < 2):
        raise ValueError(f"`probabilities` must have shape (n,) or (n, n_classes >= 2), got {probs.shape}.")
    if len(probs) == 0:
        raise ValueError("No examples: `probabilities` is empty.")
    if values.shape != (len(probs),):
        raise ValueError(
            f"Expected one of `{name}` per probability ({len(probs)} examples), got shape {values.shape}."
        )
    if not np.all((probs >= 0) & (probs <= 1)):
        raise ValueError("`probabilities` must lie in [0, 1].")
    n_classes = 2 if probs.ndim == 1 else probs.shape[1]
    allowed = [NO_VERDICT, *range(n_classes)] if name == "verdicts" else list(range(n_classes))
    if not np.isin(values, allowed).all():
        raise ValueError(f"`{name}` must be in {allowed}, got {sorted(set(values.tolist()) - set(allowed))}.")
    return probs, values.astype(int)


def _undefined(metric: str, reason: str) -> float:
    """NaN with a warning, so that one degenerate evaluation set does not crash a whole evaluation run."""
    warnings.warn(f"{metric} is undefined ({reason}); returning NaN.", UndefinedMetricWarning, stacklevel=3)
    return float("nan")


def positive_scores(probabilities: ArrayLike) -> np.ndarray:
    """What the binary metrics score: the positive-class column of `(n, 2)` probabilities; N classes stay `(n, N)`."""
    probs = np.asarray(probabilities, dtype=float)
    return probs[:, 1] if probs.ndim == 2 and probs.shape[1] == 2 else probs


def head_labels(probabilities: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """The classification head's label: `probability >= threshold` (binary) or the argmax (N classes)."""
    probs = np.asarray(probabilities, dtype=float)
    return probs.argmax(axis=1) if probs.ndim == 2 else (probs >= threshold).astype(int)


def _one_vs_rest(metric: Callable, name: str, targets: np.ndarray, scores: np.ndarray) -> float:
    """`metric` (AUROC or AP) of `scores`; for N classes the macro mean over the classes present in `targets`."""
    classes = np.unique(targets)
    if len(classes) < 2:
        return _undefined(name, f"only {classes.tolist()} present among {len(targets)} examples")
    if scores.ndim == 1:
        return float(metric(targets, scores))
    if len(classes) < scores.shape[1]:
        warnings.warn(
            f"{name}: macro mean over the classes present only, {classes.tolist()}.", UndefinedMetricWarning,
            stacklevel=2,
        )
    return float(metric((targets[:, None] == classes).astype(int), scores[:, classes], average="macro"))


def _counts(readable: np.ndarray) -> dict[str, int]:
    return {"n": len(readable), "n_unreadable": int((~readable).sum())}


def auroc_alignment(probabilities: ArrayLike, verdicts: ArrayLike) -> dict[str, float | int]:
    """ROC AUC of the head's probabilities against the explanations' readable verdicts (not the gold labels)."""
    probs, verdicts = _validated(probabilities, verdicts, "verdicts")
    readable = verdicts != NO_VERDICT
    score = _one_vs_rest(roc_auc_score, "AUROC-Alignment", verdicts[readable], probs[readable])
    return {"auroc_alignment": score, **_counts(readable)}


def r_lkappa(probabilities: ArrayLike, verdicts: ArrayLike, *, threshold: float = 0.5) -> dict[str, float | int]:
    """Cohen's kappa between the explanations' verdicts and the head's labels, over readable examples."""
    probs, verdicts = _validated(probabilities, verdicts, "verdicts")
    readable = verdicts != NO_VERDICT
    stated, head = verdicts[readable], head_labels(probs[readable], threshold)
    if len(np.union1d(stated, head)) < 2:  # chance agreement is 1: kappa is 0 / 0
        kappa = _undefined("R-LKappa", f"a single label among {len(stated)} readable examples")
    else:
        kappa = float(cohen_kappa_score(stated, head))
    return {"r_lkappa": kappa, **_counts(readable)}


def rli(probabilities: ArrayLike, verdicts: ArrayLike, *, threshold: float = 0.5) -> dict[str, float | int]:
    """Reasoning-label inconsistency (share of readable verdicts that differ from the head's label) and readability
    (share of examples with a readable verdict)."""
    probs, verdicts = _validated(probabilities, verdicts, "verdicts")
    readable = verdicts != NO_VERDICT
    if readable.any():
        inconsistency = float(np.mean(verdicts[readable] != head_labels(probs[readable], threshold)))
    else:
        inconsistency = _undefined("RLI", "no explanation has a readable verdict")
    return {"rli": inconsistency, "readability": float(readable.mean()), **_counts(readable)}


def alignment_report(
    probabilities: ArrayLike, explanations: Sequence[str | None], *, verdict_format: VerdictFormat | None = None,
    threshold: float = 0.5,
) -> dict[str, float | int]:
    """`auroc_alignment`, `r_lkappa`, `rli` and `readability` (with `n`, `n_unreadable`) from raw explanations.

    Args:
        verdict_format: reads each explanation's verdict (the prompt template's; default `"Answer: No"`/`"Yes"`).
    """
    verdict_format = verdict_format or VerdictFormat()
    verdicts = [verdict_format.read(text) for text in explanations]
    return {
        **auroc_alignment(probabilities, verdicts),
        **r_lkappa(probabilities, verdicts, threshold=threshold),
        **rli(probabilities, verdicts, threshold=threshold),
    }


LOOP_NGRAM, LOOP_REPEATS = 4, 3  # a loop: some word 4-gram said three times or more


def has_loop(text: str | None, n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> bool:
    """Whether `text` repeats a word `n`-gram at least `repeats` times (a generation stuck in a loop)."""
    words = (text or "").lower().split()
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(counts) and max(counts.values()) >= repeats


def generation_report(explanations: Sequence[str | None], *, verdict_format: VerdictFormat | None = None) -> dict:
    """How explanations end: `loop_rate` (share with a loop, see `has_loop`) and `ends_at_verdict` (share whose last
    line is a readable verdict line)."""
    verdict_format = verdict_format or VerdictFormat()
    return {"loop_rate": float(np.mean([has_loop(text) for text in explanations])),
            "ends_at_verdict": float(np.mean([verdict_format.ends_with_verdict(text) for text in explanations]))}


def tune_threshold(probabilities: ArrayLike, labels: ArrayLike) -> float:
    """The threshold `t` maximising F1 of `probability >= t` on these (validation) examples; ties go to the lowest."""
    probs, labels = _validated(probabilities, labels, "labels")
    if probs.ndim != 1:
        raise ValueError("Threshold tuning is for binary probabilities of shape (n,).")
    if len(np.unique(labels)) < 2:
        raise ValueError("Threshold tuning needs both classes among the labels.")
    precision, recall, thresholds = precision_recall_curve(labels, probs, drop_intermediate=False)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    return float(thresholds[int(np.argmax(f1))])


def reliability_curve(probabilities: ArrayLike, labels: ArrayLike, *, n_bins: int = 10) -> list[dict[str, float]]:
    """One row per equal-width bin: `bin_lower`, `bin_upper`, `count`, mean `confidence`, observed `frequency` (NaN
    for empty bins), binned as `sklearn.calibration.calibration_curve` does. N classes: top-class confidence vs
    "is correct"."""
    probs, labels = _validated(probabilities, labels, "labels")
    if probs.ndim == 1:
        confidence, outcome = probs, (labels == 1).astype(float)
    else:
        confidence, outcome = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence)  # right-closed bins
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(bins, confidence, minlength=n_bins) / counts
        frequency = np.bincount(bins, outcome, minlength=n_bins) / counts
    return [
        {"bin_lower": float(edges[b]), "bin_upper": float(edges[b + 1]), "count": int(counts[b]),
         "confidence": float(mean_confidence[b]), "frequency": float(frequency[b])}
        for b in range(n_bins)
    ]


def expected_calibration_error(probabilities: ArrayLike, labels: ArrayLike, *, n_bins: int = 10) -> float:
    """ECE: |observed frequency - mean confidence| over the bins of `reliability_curve`, weighted by bin size."""
    rows = [row for row in reliability_curve(probabilities, labels, n_bins=n_bins) if row["count"]]
    n = sum(row["count"] for row in rows)
    return float(sum(row["count"] / n * abs(row["frequency"] - row["confidence"]) for row in rows))


def classification_report(
    probabilities: ArrayLike, labels: ArrayLike, *, threshold: float | None = None,
    validation_probabilities: ArrayLike | None = None, validation_labels: ArrayLike | None = None, n_bins: int = 10,
) -> dict:
    """`auroc`, `auprc`, `f1` (at 0.5; macro argmax for N classes), `brier`, `ece`, `log_loss`, `n` and `reliability`
    of the head's probabilities against gold labels.

    Binary only: given a `threshold`, or validation data to tune one (`tune_threshold`), also `threshold` and
    `f1_at_threshold`.
    """
    probs, labels = _validated(probabilities, labels, "labels")
    tuning = validation_probabilities is not None or validation_labels is not None
    if threshold is not None and tuning:
        raise ValueError("Give either `threshold` or validation data to tune one, not both.")
    if (threshold is not None or tuning) and probs.ndim != 1:
        raise ValueError("A decision threshold applies to binary probabilities of shape (n,) only.")
    if tuning:
        if validation_probabilities is None or validation_labels is None:
            raise ValueError("Threshold tuning needs both `validation_probabilities` and `validation_labels`.")
        threshold = tune_threshold(validation_probabilities, validation_labels)
    classes = list(range(2 if probs.ndim == 1 else probs.shape[1]))
    report = {
        "auroc": _one_vs_rest(roc_auc_score, "AUROC", labels, probs),
        "auprc": _one_vs_rest(average_precision_score, "AUPRC", labels, probs),
        "f1": float(f1_score(labels, head_labels(probs), average="binary" if probs.ndim == 1 else "macro")),
        "brier": float(brier_score_loss(labels, probs, labels=classes)),
        "ece": expected_calibration_error(probs, labels, n_bins=n_bins),
        "log_loss": float(log_loss(labels, probs, labels=classes)),
        "n": len(labels),
        "reliability": reliability_curve(probs, labels, n_bins=n_bins),
    }
    if threshold is not None:
        report["threshold"] = float(threshold)
        report["f1_at_threshold"] = float(f1_score(labels, head_labels(probs, threshold)))
    return report


__all__ = [
    "alignment_report", "auroc_alignment", "classification_report", "expected_calibration_error", "generation_report",
    "has_loop", "head_labels", "positive_scores", "r_lkappa", "reliability_curve", "rli", "tune_threshold",
]
