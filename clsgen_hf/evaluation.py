"""The decision rule of a trained head (calibration, then a binary threshold, both stored in the model config so that
every later prediction follows it) and the scoring of predictions at that rule: one path for recipe and benchmark."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from datasets import Dataset

from .calibration import Calibration, DecisionRule, fit_calibration
from .inference import predict, tune_and_store_threshold
from .metrics import alignment_report, classification_report, generation_report, head_labels, positive_scores
from .prompt_template import PromptTemplate
from .verdicts import VerdictFormat


logger = logging.getLogger(__name__)

CLASSIFICATION_KEYS = ("auroc", "auprc", "brier", "ece", "log_loss")
CALIBRATION_KEYS = ("brier", "ece", "log_loss")


def fit_decision_rule(
    model, tokenizer, prompts: Sequence, labels: Sequence[int], *, batch_size: int = 8,
    max_prompt_tokens: int | None = None,
) -> dict:
    """Fit the calibration map and (binary) threshold of `model`'s head on validation prompts; store both in its
    config.

    Returns `calibration` (the fitted `Calibration`), `threshold` (`None` for N classes), `validation_rows` and
    `note` (why the rule is the default one, else `None`). Rows of one class fit nothing: the model keeps the identity
    map and, if binary, the threshold 0.5 (warned about), so that a run ends with its weights saved.
    """
    Calibration().store(model)  # fit on the raw head
    if len(set(labels)) < 2:
        rule = DecisionRule(id2label=DecisionRule.from_config(model).id2label)  # identity map, threshold 0.5
        rule.store(model)
        note = (f"The {len(labels)} validation rows hold one class ({sorted(set(labels))}): no calibration was fitted "
                f"and the threshold is the default {rule.cls_threshold}; fit the rule on rows of every class "
                "(`fit_decision_rule`).")
        logger.warning(note)
        threshold = rule.cls_threshold if len(rule.id2label) == 2 else None
        return {"calibration": Calibration(), "threshold": threshold, "validation_rows": len(labels), "note": note}
    records = predict(model, tokenizer, list(prompts), max_new_tokens=0, batch_size=batch_size,
                      max_prompt_tokens=max_prompt_tokens, show_progress=False)
    raw = np.array([record["probability"] for record in records])
    logits = np.log(np.clip(raw, 1e-300, None))  # the raw logits up to a per-row shift, which softmax ignores
    calibration = fit_calibration(logits, labels)
    calibration.store(model)
    calibrated = calibration.probabilities(logits)
    threshold = tune_and_store_threshold(model, calibrated, labels) if calibrated.shape[1] == 2 else None
    return {"calibration": calibration, "threshold": threshold, "validation_rows": len(labels), "note": None}


def evaluate_predictions(
    records: Sequence[dict], labels: Sequence[int], *, verdict_format: VerdictFormat | None = None,
    threshold: float = 0.5, calibration: Calibration | None = None,
) -> dict:
    """Score `predict` records (`probability`, optionally `explanation`) against gold labels at the model's
    `threshold`.

    Returns the `classification_report` numbers (F1 at `threshold`; macro argmax for N classes); when every record has
    an explanation, the alignment metrics, `generation_report`'s loop rate and ends-at-verdict share, `disagreements`
    (explanations not stating the head's label) and `agreement` (the share that do); given the
    `calibration` the records went through, `before_calibration` (the raw head's Brier, ECE, log-loss, reliability).
    """
    probabilities = np.array([record["probability"] for record in records])
    scores = positive_scores(probabilities)
    binary = scores.ndim == 1
    report = classification_report(scores, labels, threshold=threshold if binary else None)
    results = {key: report[key] for key in (*CLASSIFICATION_KEYS, "reliability")}
    results["f1"] = report["f1_at_threshold"] if binary else report["f1"]
    results["threshold"] = threshold if binary else None
    explanations = [record.get("explanation") for record in records]
    if None not in explanations:
        results.update(alignment_report(scores, explanations, verdict_format=verdict_format, threshold=threshold))
        results.update(generation_report(explanations, verdict_format=verdict_format))
        stated = [(verdict_format or VerdictFormat()).read(text) for text in explanations]
        results["disagreements"] = int(np.sum(np.array(stated) != head_labels(scores, threshold)))
        results["agreement"] = 1 - results["disagreements"] / len(records)
    if calibration is not None:
        raw = classification_report(positive_scores(calibration.uncalibrated(probabilities)), labels)
        results["before_calibration"] = {key: raw[key] for key in (*CALIBRATION_KEYS, "reliability")}
    return results


def evaluate_model(
    model, tokenizer, rows: Dataset, prompt_template: PromptTemplate, *, calibration: Calibration | None = None,
    batch_size: int = 8, max_new_tokens: int = 128, explain: str = "natural",
) -> tuple[dict, list[dict]]:
    """Predict `rows` at the model's stored rule (explanations in `explain` mode) and score them with
    `evaluate_predictions` (plus `predict_seconds` and `mean_probability` per class); returns the numbers and the
    `predict` records."""
    started = time.time()
    records = predict(model, tokenizer, rows["prompt"], prompt_template=prompt_template, batch_size=batch_size,
                      max_new_tokens=max_new_tokens, explain=explain)
    results = evaluate_predictions(records, rows["label"], verdict_format=prompt_template.verdict_format,
                                   threshold=DecisionRule.from_config(model).cls_threshold, calibration=calibration)
    results["predict_seconds"] = round(time.time() - started, 1)
    results["mean_probability"] = np.mean([r["probability"] for r in records], axis=0).round(4).tolist()
    return results, records


__all__ = ["evaluate_model", "evaluate_predictions", "fit_decision_rule"]
