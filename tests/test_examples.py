"""The main job end to end: `examples/train_clsgen.py` on the embedded SmolLM2 and a handful of CliniFact rows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
CLINIFACT = REPO.parent / "shared" / "data" / "clinifact"


def test_help_lists_every_option():
    result = subprocess.run([sys.executable, "-m", "clsgen_hf.cli", "train", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for option in ("--max_train_samples", "--teacher", "--explanation_column", "--cls_loss_weight", "--lora_r"):
        assert option in result.stdout


def test_missing_data_folder_says_where_to_put_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "examples/train_clsgen.py", "--data_dir", str(tmp_path / "nowhere"),
         "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert result.returncode != 0
    assert "No CliniFact data at" in result.stderr and "train.csv" in result.stderr


def test_explanations_default_to_clinifact_registry_rationales_unless_a_teacher_is_named(tmp_path, capsys):
    from datasets import Dataset

    from clsgen_hf.commands.options import TeacherArguments
    from clsgen_hf.commands.train import ScriptArguments, explanation_column, main

    clinifact_rows = Dataset.from_dict({"prompt": ["p"], "label": [1], "registry_rationale": ["r"]})
    user_rows = Dataset.from_dict({"prompt": ["p"], "label": [1], "why": ["r"]})
    assert explanation_column(ScriptArguments(), TeacherArguments(), clinifact_rows) == "registry_rationale"
    assert explanation_column(ScriptArguments(), TeacherArguments(teacher="self"), clinifact_rows) is None
    assert explanation_column(ScriptArguments(), TeacherArguments(), user_rows) is None  # the teacher ("self")
    assert explanation_column(ScriptArguments(explanation_column="why"), TeacherArguments(), user_rows) == "why"
    with pytest.raises(ValueError, match="--explanation_column 'nope': no such column"):
        explanation_column(ScriptArguments(explanation_column="nope"), TeacherArguments(), user_rows)
    out = ["--output_dir", str(tmp_path / "out")]
    assert main(["--explanation_column", "why", "--teacher", "openai:http://localhost:8000/v1", *out]) == 2
    assert "--explanation_column (rationales you have) or --teacher" in capsys.readouterr().err
    rows = tmp_path / "rows.csv"
    rows.write_text("note,label\na,0\nb,1\n")
    assert main(["--train_file", str(rows), "--text_fields", "note", *out]) == 2
    assert "--train_file needs --test_file" in capsys.readouterr().err


def test_validation_slice_is_stratified_and_held_out():
    from datasets import Dataset

    from clsgen_hf.data.splits import stratified_split

    rows = Dataset.from_dict({"label": [0] * 12 + [1] * 8, "i": list(range(20))})
    rest, held = stratified_split(rows, 0.25)
    assert sorted(held["label"]) == [0, 0, 0, 1, 1] and len(rest) == 15
    assert not set(rest["i"]) & set(held["i"])


def test_user_template_takes_label_names_verbalizers_question_and_prefix():
    from clsgen_hf.commands.options import PromptArguments
    from clsgen_hf.errors import UsageError

    args = PromptArguments(text_fields=["note"], question="Is it benign?", system_prompt="You read radiology notes.",
                           label2id='["benign", "unclear", "malignant"]', verdict_prefix="Finding:")
    template = args.build_template()
    assert template.verdict_format.verbalizers == {0: "benign", 1: "unclear", 2: "malignant"}
    assert template.verdict_format.line(2) == "Finding: malignant" and template.question == "Is it benign?"
    assert template.system == "You read radiology notes."
    args = PromptArguments(text_fields=["note"], verbalizers=["Low", "High"])
    assert args.build_template().verdict_format.verbalizers == {0: "Low", 1: "High"}
    with pytest.raises(UsageError, match="each label once"):
        PromptArguments(text_fields=["n"], verbalizers=["A", "A"]).build_template()
    from clsgen_hf.data import CLINIFACT_BINARY_TEMPLATE

    clinifact = PromptArguments(verbalizers=["False", "True"], verdict_prefix="Verdict:", question="Supported?")
    template = clinifact.build_template(CLINIFACT_BINARY_TEMPLATE)  # a dataset's own template, the user's verdict
    assert template.verdict_format.line(1) == "Verdict: True" and template.question == "Supported?"
    assert template.user_template == CLINIFACT_BINARY_TEMPLATE.user_template
    with pytest.raises(UsageError, match="names 3 labels; the template has 2"):
        PromptArguments(verbalizers=["A", "B", "C"]).build_template(CLINIFACT_BINARY_TEMPLATE)


@pytest.mark.slow
@pytest.mark.skipif(not CLINIFACT.is_dir(), reason="CliniFact is not beside the repository")
def test_three_class_clinifact_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "clsgen_hf.cli", "train", "--clinifact_view", "multiclass", "--data_dir",
           str(CLINIFACT), "--max_train_samples", "12", "--max_validation_samples", "9", "--max_eval_samples", "6",
           "--max_new_tokens", "16", "--output_dir", str(out), "--gradient_accumulation_steps", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1200,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-4000:]
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "Inconclusive", "1": "Evidence", "2": "No information"}
    results = json.loads((out / "clsgen_results.json").read_text())
    assert results["threshold"] is None and len(results["mean_probability"]) == 3  # argmax over three classes
    assert {"auroc", "f1", "rli", "readability", "r_lkappa", "loop_rate", "ends_at_verdict"} <= set(results)
    assert {"agreement", "loop_rate", "ends_at_verdict"} <= set(results["decision"])
    assert "Decision rule stored in config.json: threshold argmax" in result.stdout
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [row["explain"] for row in predictions] == ["natural"] * 6 + ["decision"] * 6
    assert {"input_id", "gold", "probability", "label", "explanation", "verdict", "agrees"} <= set(predictions[0])


def _rows_with_rationales(split: str, n: int, path: Path) -> None:
    """A user dataset in CSV with a human-style rationale column, built from CliniFact rows."""
    import csv

    with open(CLINIFACT / f"{split}.csv", newline="") as source, open(path, "w", newline="") as target:
        writer = csv.DictWriter(target, ["claim", "abstract", "supported", "rationale"])
        writer.writeheader()
        for row, _ in zip(csv.DictReader(source), range(n)):
            supported = int(row["label"] == "1")
            reason = "reports results for" if supported else "does not report results that settle"
            writer.writerow({"claim": row["claim"], "abstract": row["article_abstract"][:600], "supported": supported,
                             "rationale": f"The abstract {reason} the claim."})


@pytest.mark.slow
@pytest.mark.skipif(not CLINIFACT.is_dir(), reason="CliniFact is not beside the repository")
def test_train_example_end_to_end_on_a_user_csv_with_rationales(tmp_path):
    _rows_with_rationales("train", 6, tmp_path / "train.csv")
    _rows_with_rationales("test", 3, tmp_path / "test.csv")
    _rows_with_rationales("validation", 8, tmp_path / "validation.csv")
    out = tmp_path / "run"
    cmd = [
        sys.executable, "examples/train_clsgen.py", "--train_file", str(tmp_path / "train.csv"),
        "--test_file", str(tmp_path / "test.csv"), "--validation_file", str(tmp_path / "validation.csv"),
        "--text_fields", "claim", "abstract", "--label_field", "supported",
        "--explanation_column", "rationale", "--output_dir", str(out), "--max_new_tokens", "24",
        "--max_prompt_tokens", "256", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1200,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Example predictions (natural mode):" in result.stdout and "| auroc | f1 |" in result.stdout
    assert "Decision rule stored in config.json: threshold" in result.stdout
    assert "Calibration on the test rows, raw head -> calibrated: ece" in result.stdout
    results = json.loads((out / "clsgen_results.json").read_text())
    assert results["test_rows"] == 3 and results["train_rows"] == 6 and results["validation_rows"] == 8
    config = json.loads((out / "config.json").read_text())
    assert config["cls_threshold"] == pytest.approx(results["threshold"])  # the saved model decides by that rule
    assert config["cls_logit_scale"] == pytest.approx(results["calibration"]["scale"])
    assert set(results["before_calibration"]) == {"brier", "ece", "log_loss"}
    assert (out / "reliability_diagram.png").stat().st_size > 0
    assert 0 <= results["readability"] <= 1
    assert {"model.safetensors", "config.json", "modeling_clsgen.py", "clsgen_prompt.json",
            "tokenizer_config.json", "README.md"} <= {p.name for p in out.iterdir()}
