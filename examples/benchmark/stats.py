"""The benchmark's statistics: one calibration procedure for every method, bootstrap intervals over the test rows,
and the leakage-free subset of the test rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from clsgen_hf.calibration import Calibration, fit_calibration
from clsgen_hf.metrics import tune_threshold


def calibrate(validation: ArrayLike, labels: Sequence[int], seed: int = 0) -> tuple[Calibration, float]:
    """The decision rule every method gets, as `clsgen_hf.evaluation.fit_decision_rule` fits it for a CLSGen head:
    `fit_calibration` on the log of the raw validation probabilities `(n, 2)` (softmax ignores the per-row shift),
    then the F1 threshold tuned on the calibrated validation probabilities."""
    calibration = fit_calibration(_logits(validation), labels, seed=seed)
    return calibration, tune_threshold(calibration.probabilities(_logits(validation))[:, 1], labels)


def apply_calibration(calibration: Calibration, probabilities: ArrayLike) -> np.ndarray:
    """Calibrated `(n, 2)` probabilities of raw ones."""
    return calibration.probabilities(_logits(probabilities))


def _logits(probabilities: ArrayLike) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, dtype=float), 1e-300, None))


def _resampled_rows(labels: np.ndarray, samples: int, seed: int):
    """`samples` bootstrap resamples of the row indices (with replacement), skipping those with a single class."""
    rng = np.random.default_rng(seed)
    drawn = 0
    while drawn < samples:
        rows = rng.integers(0, len(labels), len(labels))
        if labels[rows].min() != labels[rows].max():
            drawn += 1
            yield rows


def _mean_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of each seed's scores (rows of `scores`), averaged over the seeds: the Mann-Whitney statistic from the
    ranks (ties averaged), equal to `roc_auc_score` and fast enough for thousands of resamples."""
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    ranks = rankdata(scores, axis=1)
    return float(np.mean((ranks[:, positives].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))


def bootstrap_auroc(labels: Sequence[int], scores: ArrayLike, *, samples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, float]:
    """AUROC with a percentile bootstrap interval over the test rows.

    `scores`: `(n,)` or `(seeds, n)` positive-class probabilities; with several seeds each resample scores the mean
    over seeds of the per-seed AUROC on the same rows, so the interval is that of the seed-averaged AUROC.
    """
    labels, scores = np.asarray(labels), np.atleast_2d(np.asarray(scores, dtype=float))
    values = [_mean_auroc(labels[rows], scores[:, rows]) for rows in _resampled_rows(labels, samples, seed)]
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return {"auroc": _mean_auroc(labels, scores), "low": float(low), "high": float(high), "samples": samples}


def paired_bootstrap(labels: Sequence[int], scores_a: ArrayLike, scores_b: ArrayLike, *, samples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """AUROC of A minus AUROC of B on the same test rows, with a paired percentile bootstrap interval (each resample
    draws one set of rows for both) and the share of resamples where A is below B."""
    labels = np.asarray(labels)
    a, b = (np.atleast_2d(np.asarray(s, dtype=float)) for s in (scores_a, scores_b))
    differences = np.array([_mean_auroc(labels[rows], a[:, rows]) - _mean_auroc(labels[rows], b[:, rows])
                            for rows in _resampled_rows(labels, samples, seed)])
    low, high = np.quantile(differences, [(1 - level) / 2, (1 + level) / 2])
    return {"difference": _mean_auroc(labels, a) - _mean_auroc(labels, b), "low": float(low), "high": float(high),
            "share_below_zero": float(np.mean(differences < 0)), "samples": samples}


def disjoint_rows(test_abstracts: Sequence[str], train_abstracts: Sequence[str]) -> list[int]:
    """Positions of the test rows whose abstract is in none of the training rows (CliniFact pairs one abstract with
    several claims, some of them in the training split): the rows no method could have memorised."""
    seen = {" ".join(text.split()) for text in train_abstracts}
    return [i for i, text in enumerate(test_abstracts) if " ".join(text.split()) not in seen]
