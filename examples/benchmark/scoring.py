"""Scoring the benchmark's saved results: each method and seed calibrated by the same procedure on the same validation
rows and scored on every test row, on the leakage-free subset and (explanations) on the explained rows; then the
seeds pooled, with bootstrap intervals for every AUROC and the paired CLSGen - SeqCls difference."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_curve

from clsgen_hf.evaluation import evaluate_predictions
from clsgen_hf.metrics import classification_report, generation_report
from clsgen_hf.verdicts import VerdictFormat

from .stats import apply_calibration, bootstrap_auroc, calibrate, paired_bootstrap


PROBABILITY_KEYS = ("auroc", "auprc", "f1", "brier", "ece", "log_loss")
EXPLANATION_KEYS = ("agreement", "auroc_alignment", "r_lkappa", "rli", "readability", "loop_rate",
                    "ends_at_verdict")
# Names the metrics use in their "<name> is undefined (...)" warnings.
WARNING_NAMES = {"auroc_alignment": "AUROC-Alignment", "r_lkappa": "R-LKappa", "rli": "RLI", "auroc": "AUROC",
                 "auprc": "AUPRC"}
COMPARED = ("clsgen", "discriminative")  # the paired bootstrap: CLSGen - SeqCls


def _recorded(compute: Callable[[], dict]) -> tuple[dict, list[str]]:
    """`compute()` and the messages of the undefined-metric warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        numbers = compute()
    return numbers, [str(warning.message) for warning in caught]


def _finite(numbers: dict, messages: list[str], undefined: dict, prefix: str = "") -> dict:
    """`numbers` with NaN replaced by `None`; the reason (the metric's warning) recorded in `undefined`."""
    clean = {}
    for key, value in numbers.items():
        if isinstance(value, float) and math.isnan(value):
            name = WARNING_NAMES.get(key, key)
            undefined[prefix + key] = next((m for m in messages if m.startswith(f"{name} is undefined")), "NaN")
            value = None
        clean[key] = value
    return clean


def score_run(result: dict, validation_labels: Sequence[int], test_labels: Sequence[int], rows: dict,
              verdict_format: VerdictFormat, base_perplexity: float) -> dict:
    """The numbers of one method and seed. `result`: a `MethodResult` as a dict; `rows`: the test positions
    `explained` and `disjoint`."""
    labels = np.asarray(test_labels)
    calibration, threshold = calibrate(result["validation"], validation_labels)
    calibrated = apply_calibration(calibration, result["test"])
    undefined: dict[str, str] = {}

    def probability_metrics(positions: Sequence[int]) -> dict:
        records = [{"probability": calibrated[i].tolist()} for i in positions]
        numbers, messages = _recorded(lambda: evaluate_predictions(records, labels[positions], threshold=threshold,
                                                                   calibration=calibration))
        before = numbers["before_calibration"]
        kept = {key: numbers[key] for key in PROBABILITY_KEYS}
        kept.update({f"{key}_before": before[key] for key in ("brier", "ece", "log_loss")}, n=len(positions))
        return kept, numbers, messages

    everything = list(range(len(labels)))
    full, numbers, messages = probability_metrics(everything)
    row = _finite(full, messages, undefined)
    row["threshold"], row["calibration"] = threshold, calibration.to_dict()
    row["f1_at_half"] = classification_report(calibrated[:, 1], labels)["f1"]
    row["reliability"] = numbers["reliability"]
    row["reliability_before"] = numbers["before_calibration"]["reliability"]
    fpr, tpr, _ = roc_curve(labels, calibrated[:, 1])
    row["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    disjoint, _, messages = probability_metrics(rows["disjoint"])
    row["disjoint"] = _finite(disjoint, messages, undefined, "disjoint.")

    explanations = result["explanations"]
    if explanations is not None:
        explained = rows["explained"]
        records = [{"probability": calibrated[i].tolist(), "explanation": text}
                   for i, text in zip(explained, explanations)]
        numbers, messages = _recorded(lambda: evaluate_predictions(records, labels[explained],
                                                                   verdict_format=verdict_format,
                                                                   threshold=threshold))
        scored = {key: numbers[key] for key in ("auroc_alignment", "r_lkappa", "rli", "readability")}
        scored["agreement"] = 1 - numbers["disagreements"] / len(explained)
        scored.update(generation_report(explanations, verdict_format=verdict_format), n_explained=len(explained))
        row.update(_finite(scored, messages, undefined))
    perplexity = result["lm_perplexity"]
    row["lm_perplexity"] = perplexity
    row["language_retention"] = None if perplexity is None else base_perplexity / perplexity
    row["train_seconds"], row["predict_seconds"] = result["train_seconds"], result["predict_seconds"]
    row["not_applicable"] = ([*EXPLANATION_KEYS] if explanations is None else []) + (
        ["lm_perplexity", "language_retention"] if perplexity is None else [])
    row["undefined"] = undefined
    row["calibrated_test"] = calibrated[:, 1].tolist()  # per-row, for the bootstrap and any later metric
    return row


def _mean(values: list) -> float | None:
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def pool_seeds(per_seed: dict[int, dict], labels: Sequence[int], rows: dict, samples: int) -> dict:
    """One method over its seeds: the mean of every number (`None` if undefined for some seed), the spread of the
    AUROC, and bootstrap intervals of the seed-averaged AUROC on all test rows and on the disjoint subset."""
    runs = list(per_seed.values())
    first = runs[0]
    numeric = [key for key, value in first.items() if isinstance(value, (int, float)) or value is None]
    pooled = {key: _mean([run[key] for run in runs]) for key in numeric}
    pooled["disjoint"] = {key: _mean([run["disjoint"][key] for run in runs]) for key in first["disjoint"]}
    pooled["auroc_sd"] = float(np.std([run["auroc"] for run in runs])) if len(runs) > 1 else None
    pooled["not_applicable"] = first["not_applicable"]
    pooled["undefined"] = {key: reason for run in runs for key, reason in run["undefined"].items()}
    labels, scores = np.asarray(labels), np.array([run["calibrated_test"] for run in runs])
    pooled["auroc_ci"] = bootstrap_auroc(labels, scores, samples=samples)
    disjoint = rows["disjoint"]
    pooled["disjoint"]["auroc_ci"] = bootstrap_auroc(labels[disjoint], scores[:, disjoint], samples=samples)
    pooled["seeds"] = list(per_seed)
    return pooled


def compare(per_method: dict[str, dict[int, dict]], labels: Sequence[int], rows: dict, samples: int) -> dict | None:
    """CLSGen - SeqCls AUROC with a paired bootstrap interval (same rows, same seeds), on all test rows and on the
    disjoint subset; `None` unless both methods ran."""
    if not all(method in per_method for method in COMPARED):
        return None
    seeds = [seed for seed in per_method[COMPARED[0]] if seed in per_method[COMPARED[1]]]
    a, b = (np.array([per_method[method][seed]["calibrated_test"] for seed in seeds]) for method in COMPARED)
    labels, disjoint = np.asarray(labels), rows["disjoint"]
    return {"methods": list(COMPARED), "seeds": seeds,
            "all": paired_bootstrap(labels, a, b, samples=samples),
            "disjoint": paired_bootstrap(labels[disjoint], a[:, disjoint], b[:, disjoint], samples=samples)}
