"""The decision rule (calibration, then threshold) is fitted on validation rows and stored in the model; evaluation
scores predictions at that rule, alignment included."""

import numpy as np
import pytest
import torch

from clsgen_hf import predict
from clsgen_hf.calibration import Calibration
from clsgen_hf.evaluation import evaluate_predictions, fit_decision_rule
from clsgen_hf.metrics import alignment_report

from .toy import tiny_model_for, toy_dataset


def test_fit_decision_rule_stores_calibration_then_threshold(smollm2_tokenizer):
    model = tiny_model_for(smollm2_tokenizer).eval()
    with torch.no_grad():
        model.score.bias.copy_(torch.tensor([2.0, -2.0]))  # a head far below the base rate of its rows
    rows = toy_dataset(40)
    rule = fit_decision_rule(model, smollm2_tokenizer, rows["prompt"], rows["label"], batch_size=8)
    assert rule["validation_rows"] == 40 and rule["calibration"].method in ("none", "temperature", "platt")
    assert model.config.cls_threshold == pytest.approx(rule["threshold"])
    assert model.config.cls_logit_scale == pytest.approx(rule["calibration"].scale)
    records = predict(model, smollm2_tokenizer, rows["prompt"], max_new_tokens=0, show_progress=False)
    mean = np.mean([r["probability"][1] for r in records])
    assert rule["calibration"].method != "platt" or abs(mean - 0.5) < 0.15  # the shift is undone
    assert all(r["label"] == int(r["probability"][1] >= rule["threshold"]) for r in records)


def test_evaluation_scores_alignment_at_the_stored_threshold():
    probabilities = [[0.7, 0.3], [0.6, 0.4], [0.8, 0.2], [0.3, 0.7]]
    explanations = ["Answer: Yes", "Answer: Yes", "Answer: No", "Answer: Yes"]
    records = [{"probability": p, "explanation": e, "agrees": (e == "Answer: Yes") == (p[1] >= 0.25)}
               for p, e in zip(probabilities, explanations)]
    labels = [1, 1, 0, 1]
    results = evaluate_predictions(records, labels, threshold=0.25,
                                   calibration=Calibration("temperature", scale=2.0))
    at_half = alignment_report([p[1] for p in probabilities], explanations)
    assert results["rli"] == 0.0 and at_half["rli"] == 0.5  # at 0.25 every head label matches its verdict
    assert results["r_lkappa"] == pytest.approx(1.0) and results["threshold"] == 0.25
    assert results["f1"] == 1.0 and results["disagreements"] == 0
    assert set(results["before_calibration"]) == {"brier", "ece", "log_loss", "reliability"}
    assert results["before_calibration"]["log_loss"] != pytest.approx(results["log_loss"])


def test_uncalibrated_inverts_the_map():
    calibration = Calibration("platt", scale=0.5, bias=[0.0, 1.3])
    raw = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    calibrated = calibration.probabilities(np.log(raw))
    np.testing.assert_allclose(calibration.uncalibrated(calibrated), raw, atol=1e-9)
