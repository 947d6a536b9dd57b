"""What a run reports: the predictions file and the per-mode agreement figures of the summary and the model card."""

import json

from datasets import Dataset

from clsgen_hf.json_files import write_jsonl
from clsgen_hf.model_card import build_model_card
from clsgen_hf.reports import prediction_rows, recipe_report

from .toy import tiny_config


RECORD = {"probability": [0.7, 0.3], "label": 0, "explanation": "Because.\nAnswer: No", "verdict": 0, "agrees": True}
MODES = {"agreement": 0.5, "auroc_alignment": float("nan"), "r_lkappa": 0.1, "rli": 0.5, "readability": 1.0,
         "loop_rate": 0.0, "ends_at_verdict": 1.0}


def test_predictions_file_has_one_line_per_row_and_mode(tmp_path):
    rows = Dataset.from_dict({"index": [17, 4], "prompt": ["a", "b"], "label": [1, 0]})
    records = [{**RECORD, "explain": mode} for mode in ("natural", "decision")]
    lines = prediction_rows(records, rows) + prediction_rows([{**RECORD, "probability": [float("nan"), 1.0],
                                                               "explain": "decision"}], rows)
    write_jsonl(lines, tmp_path / "out" / "predictions.jsonl")
    written = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [(row["input_id"], row["gold"], row["explain"]) for row in written] == [
        (17, 1, "natural"), (4, 0, "decision"), (17, 1, "decision")]
    assert written[0]["explanation"] == RECORD["explanation"] and written[2]["probability"] == [None, 1.0]
    positions = prediction_rows(records, rows.remove_columns("index"))
    assert [row["input_id"] for row in positions] == [0, 1]  # no id column: the row's position


def test_summary_and_card_show_both_modes():
    results = {"auroc": 0.8, "f1": 0.5, **MODES, "disagreements": 1, "test_rows": 2, "train_rows": 4,
               "validation_rows": 2, "threshold": 0.3, "class_shares": [0.5, 0.5], "mean_probability": [0.5, 0.5],
               "calibration": {"method": "platt", "temperature": 1.0, "bias": None},
               "before_calibration": {"ece": 0.1, "brier": 0.2, "log_loss": 0.6},
               "ece": 0.1, "brier": 0.2, "log_loss": 0.6, "decision": {**MODES, "agreement": 1.0, "loop_rate": 0.5}}
    rows = Dataset.from_dict({"prompt": ["a"], "label": [0]})
    predictions = [{**row, "explain": mode} for mode in ("natural", "decision")
                   for row in prediction_rows([RECORD], rows)]
    summary = recipe_report(results, predictions, rows, "out", "plot.png")
    natural = "| natural | 0.500 | n/a | 0.100 | 0.500 | 1.000 | 0.000 | 1.000 |"
    decision = "| decision | 1.000 | n/a | 0.100 | 0.500 | 1.000 | 0.500 | 1.000 |"
    assert natural in summary and decision in summary
    assert "Example predictions (natural mode):" in summary and "Example predictions (decision mode):" in summary
    card = build_model_card(tiny_config(id2label={0: "No", 1: "Yes"}), results=results, model_name="toy").text
    assert natural in card and decision in card
