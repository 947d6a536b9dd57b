"""What a training run reports: the numbers it saves (`clsgen_results.json`) and the summary it prints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset

from .evaluation import CALIBRATION_KEYS
from .model_card import mode_table


SUMMARY_KEYS = ("auroc", "f1", "auroc_alignment", "r_lkappa", "rli", "readability")
PREDICTIONS_FILE = "predictions.jsonl"
ID_COLUMNS = ("id", "index")  # the first one a dataset has identifies its rows in the predictions file


def prediction_rows(records: Sequence[dict], rows: Dataset) -> list[dict]:
    """`predict` records of dataset `rows`, each led by the row's `input_id` (its id column, else its position) and
    `gold` label: what `predictions.jsonl` holds, one line per row and explanation mode."""
    column = next((name for name in ID_COLUMNS if name in rows.column_names), None)
    ids = rows[column] if column else range(len(rows))
    return [{"input_id": input_id, "gold": gold, **record}
            for input_id, gold, record in zip(ids, rows["label"], records)]


def results_record(results: dict, rule: dict, train_rows: Dataset, validation_rows: Dataset, test_rows: Dataset,
                   train_seconds: float) -> dict:
    """`evaluate_model`'s numbers as saved: curves dropped; the rule, the rows' counts and class shares added."""
    record = {key: value for key, value in results.items() if key not in ("reliability", "before_calibration")}
    before = results.get("before_calibration", {})
    shares = np.bincount(train_rows["label"], minlength=len(results["mean_probability"])) / len(train_rows)
    record.update(
        before_calibration={key: before[key] for key in CALIBRATION_KEYS if key in before},
        calibration=rule["calibration"].to_dict(), validation_rows=len(validation_rows), train_rows=len(train_rows),
        test_rows=len(test_rows), train_seconds=round(train_seconds, 1), class_shares=shares.round(4).tolist(),
    )
    return record


def recipe_report(results: dict, predictions: list[dict], rows: Dataset, output_dir: Path, plot_file: str) -> str:
    """The run's summary: the decision rule, calibration before and after, alignment per explanation mode, and example
    predictions of each mode (`predictions`: `prediction_rows`, natural mode first)."""
    header = "| " + " | ".join(SUMMARY_KEYS) + " |"
    values = "| " + " | ".join(f"{results.get(n, float('nan')):.3f}" for n in SUMMARY_KEYS) + " |"
    calibration, before = results["calibration"], results["before_calibration"]
    threshold = "argmax" if results["threshold"] is None else f"{results['threshold']:.3f}"
    lines = [
        "", f"CLSGen on {results['test_rows']} held-out rows (trained on {results['train_rows']}, calibrated and "
        f"thresholded on {results['validation_rows']} validation rows):", "",
        f"Decision rule stored in config.json: threshold {threshold}, {calibration['method']} calibration "
        f"(temperature {calibration['temperature']:.3f}, bias {calibration['bias']}).",
        "Calibration on the test rows, raw head -> calibrated: " + ", ".join(
            f"{key} {before[key]:.3f} -> {results[key]:.3f}" for key in ("ece", "brier", "log_loss")),
        f"Mean probability per class on the test rows: {results['mean_probability']} (class shares of the training "
        f"rows: {results['class_shares']}).",
        "", "Alignment at the stored threshold (natural mode, the paper's):", header, "|" + "---|" * len(SUMMARY_KEYS),
        values, f"{results['disagreements']} of {results['test_rows']} explanations do not state the head's label "
        "(`agrees` is false): review them.", "", "Explanations per mode (decision: the head decides first, the "
        "explanation follows its cue):", mode_table(results), "",
    ]
    for mode in ("natural", "decision"):
        examples = [prediction for prediction in predictions if prediction["explain"] == mode][:2]
        lines += [f"Example predictions ({mode} mode):"] if examples else []
        for prediction in examples:
            lines += [
                f"- gold {prediction['gold']} | P = {[round(p, 3) for p in prediction['probability']]} | head label "
                f"{prediction['label']} | verdict {prediction['verdict']}",
                "  " + prediction["explanation"].replace("\n", "\n  "),
            ]
    lines += ["", f"Saved the model, its prompt template, the results, {PREDICTIONS_FILE} (every test row, each mode) "
              f"and {plot_file} to {output_dir}"]
    return "\n".join(lines)


__all__ = ["PREDICTIONS_FILE", "prediction_rows", "recipe_report", "results_record"]
