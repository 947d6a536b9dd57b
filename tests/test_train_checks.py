"""`clsgen-hf train` on bad input: every check runs before the weights load and reads as one line (exit status 2);
a killed run resumes with `--resume_from_checkpoint true` and ends with the weights of an uninterrupted one."""

import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clsgen_hf import training
from clsgen_hf.cli import main as cli_main

from .toy import tiny_model_for


REPO = Path(__file__).resolve().parents[1]
TRAIN_TOY = REPO / "tests" / "scripts" / "train_toy.py"
REASON = "The note reports what the trial measured in its patients and how the treated arm compared with the other."


@pytest.fixture(scope="module")
def models(tmp_path_factory, _smollm2_tokenizer):
    """A tiny CLSGen model folder with the real tokenizer, and the same folder without weights: a run that gets past
    the checks to the model load fails there, with an OSError."""
    root = tmp_path_factory.mktemp("models")
    tiny_model_for(_smollm2_tokenizer).save_pretrained(root / "tiny")
    _smollm2_tokenizer.save_pretrained(root / "tiny")
    (root / "no-weights").mkdir()
    for name in os.listdir(root / "tiny"):
        if not name.endswith(".safetensors"):
            (root / "no-weights" / name).write_bytes((root / "tiny" / name).read_bytes())
    return root


def _csv(path: Path, rows: list[dict]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rows(n: int, labels=(0, 1)) -> list[dict]:
    return [{"note": f"Patient {i}: the dose was {'raised' if i % 2 else 'kept'}.", "label": labels[i % len(labels)],
             "why": f"{REASON} Row {i}."} for i in range(n)]


def _train(models, tmp_path, *extra, train_rows=None, test_rows=None, model="no-weights", files=None) -> int:
    files = files or {"train": _csv(tmp_path / "train.csv", train_rows or _rows(8)),
                      "test": _csv(tmp_path / "test.csv", test_rows or _rows(4))}
    argv = ["train", "--model_name_or_path", str(models / model), "--train_file", str(files["train"]),
            "--test_file", str(files["test"]), "--text_fields", "note", "--explanation_column", "why",
            "--output_dir", str(tmp_path / "out"), "--max_prompt_tokens", "128", *extra]
    return cli_main(argv)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("clsgen-hf train: error: "), err
    return err[-1]


@pytest.mark.parametrize("case, message", [
    ("missing-column", r"Field 'note' does not exist; the columns are: \['text', 'label', 'why'\]"),
    ("columns-differ", r"The splits' columns differ: test lacks \['note'\] \(train alone has \['note'\]; test alone "
                       r"has \['body'\]\)"),
    ("labels", r"Labels outside the label set \[0, 1\]: .*The labels found: 'neg' \(4 rows\), 'pos' \(4 rows\)\. "
               r".*--label2id '\{\"neg\": 0, \"pos\": 1\}'"),
    ("empty-text", r"2 rows have an empty text field among \['note'\]: rows 1, 4 \(0-based\).*--allow_empty_text"),
    ("no-label", r"2 rows have no label \(empty, None or NaN in 'label'\): rows 2, 5 \(0-based\)"),
    ("bad-jsonl", r"train\.jsonl, line 3: not valid JSON"),
    ("missing-file", r"No such data file: .*nowhere\.csv"),
    ("single-class", r"All 6 training rows have the label 1 \(Yes\).*--allow_single_class"),
    ("context", r"--max_prompt_tokens 9000 is above the context length of .* \(512 tokens"),
    ("explanation-column", r"--explanation_column 'why': no such column"),
    ("teacher", r"--teacher 'bard:x'"),
    ("train-without-test", r"--train_file needs --test_file"),
])
def test_bad_input_is_one_line_before_the_model_loads(models, tmp_path, capsys, case, message):
    extra, train_rows, test_rows, files = [], None, None, None
    if case == "missing-column":
        train_rows = [{"text": row["note"], "label": row["label"], "why": row["why"]} for row in _rows(8)]
        test_rows = [{"text": row["note"], "label": row["label"], "why": row["why"]} for row in _rows(4)]
    elif case == "columns-differ":
        test_rows = [{"body": row["note"], "label": row["label"], "why": row["why"]} for row in _rows(4)]
    elif case == "labels":
        train_rows = _rows(8, labels=("pos", "neg"))
    elif case == "empty-text":
        train_rows = [{**row, "note": "" if i in (1, 4) else row["note"]} for i, row in enumerate(_rows(8))]
    elif case == "no-label":
        train_rows = [{**row, "label": "" if i in (2, 5) else row["label"]} for i, row in enumerate(_rows(8))]
    elif case == "bad-jsonl":
        lines = [json.dumps(row) for row in _rows(3)]
        (tmp_path / "train.jsonl").write_text(f"{lines[0]}\n{lines[1]}\n{{\"note\": \"cut\n{lines[2]}\n")
        (tmp_path / "test.jsonl").write_text("\n".join(lines) + "\n")
        files = {"train": tmp_path / "train.jsonl", "test": tmp_path / "test.jsonl"}
    elif case == "missing-file":
        files = {"train": tmp_path / "nowhere.csv", "test": _csv(tmp_path / "test.csv", _rows(4))}
    elif case == "single-class":
        train_rows = _rows(8, labels=(1,))
    elif case == "context":
        extra = ["--max_prompt_tokens", "9000"]
    elif case == "explanation-column":
        train_rows = [{"note": row["note"], "label": row["label"]} for row in _rows(8)]
    elif case == "teacher":
        extra = ["--teacher", "bard:x", "--explanation_column", ""]
    if case == "train-without-test":
        argv = ["train", "--train_file", str(_csv(tmp_path / "train.csv", _rows(8))), "--text_fields", "note"]
        assert cli_main(argv) == 2
    else:
        assert _train(models, tmp_path, *extra, train_rows=train_rows, test_rows=test_rows, files=files) == 2
    assert re.search(message, _error(capsys))


@pytest.mark.parametrize("flag, rows", [("--allow_empty_text", "empty-text"), ("--allow_single_class", "single")])
def test_the_options_an_error_names_get_past_it(models, tmp_path, flag, rows):
    train_rows = ([{**row, "note": "" if i == 1 else row["note"]} for i, row in enumerate(_rows(8))]
                  if rows == "empty-text" else _rows(8, labels=(1,)))
    with pytest.raises(OSError):  # the checks passed: the (missing) weights are loaded next
        _train(models, tmp_path, flag, train_rows=train_rows)


def test_results_file_is_standard_json_when_a_metric_is_undefined(models, tmp_path, capsys):
    """One class in the test rows: AUROC is undefined, and written as null, not NaN."""
    assert _train(models, tmp_path, "--max_steps", "1", "--max_new_tokens", "2", model="tiny",
                  test_rows=_rows(3, labels=(1,))) == 0
    text = (tmp_path / "out" / "clsgen_results.json").read_text()
    assert "NaN" not in text and json.loads(text)["auroc"] is None


def _load_train_toy():
    spec = importlib.util.spec_from_file_location("train_toy", TRAIN_TOY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_killed_recipe_resumes_from_its_checkpoint_with_the_flag(models, tmp_path, capsys, caplog, monkeypatch):
    """SIGKILL after checkpoint 2 of 4; the rerun without the flag is refused, with it trains steps 3-4 only and ends
    with the weights of an uninterrupted run."""
    monkeypatch.setattr(training, "CLSGenTrainer", training.CLSGenTrainer)  # restored after `recipe` replaces it
    train_file, test_file = _csv(tmp_path / "train.csv", _rows(8)), _csv(tmp_path / "test.csv", _rows(4))
    common = ["--model_name_or_path", str(models / "tiny"), "--train_file", str(train_file), "--test_file",
              str(test_file), "--text_fields", "note", "--explanation_column", "why", "--max_prompt_tokens", "128",
              "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "1", "--per_device_train_batch_size",
              "2", "--gradient_accumulation_steps", "1", "--max_new_tokens", "2", "--use_cpu", "true"]
    recipe = _load_train_toy().recipe
    assert recipe(0.0, common + ["--output_dir", str(tmp_path / "whole")]) == 0
    assert "FINISHED status=0 steps_here=4" in capsys.readouterr().out

    out = tmp_path / "killed"
    argv = common + ["--output_dir", str(out)]
    process = subprocess.Popen([sys.executable, str(TRAIN_TOY), "recipe", "3", *argv], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # step 3 is done, its checkpoint 3 s away
    process.wait()
    assert not (out / "checkpoint-3").exists() and not (out / "model.safetensors").exists()

    assert cli_main(["train", *argv]) == 2
    assert "--resume_from_checkpoint true" in _error(capsys)
    with caplog.at_level(logging.INFO, logger="clsgen_hf"):
        assert recipe(0.0, argv + ["--resume_from_checkpoint", "true"]) == 0
    assert "FINISHED status=0 steps_here=2" in capsys.readouterr().out  # steps 3 and 4 only
    assert "Resuming from checkpoint-2" in caplog.text
    whole, resumed = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for name, tensor in whole.items():
        torch.testing.assert_close(resumed[name], tensor, atol=0, rtol=0, msg=name)


def test_resume_true_without_a_checkpoint_is_refused(models, tmp_path, capsys):
    assert _train(models, tmp_path, "--resume_from_checkpoint", "true") == 2
    assert "holds no complete checkpoint-N folder" in _error(capsys)


class _Teacher:
    """A teacher that explains every gold label (or, `broken`, answers nonsense); counts the questions it gets."""

    name, generated_tokens = "fake:teacher", 0

    def __init__(self, broken: bool = False):
        self.broken, self.asked = broken, 0

    def generate(self, conversations, **_):
        self.asked += len(conversations)
        if self.broken:
            return ["Service unavailable."] * len(conversations)
        gold = [re.search(r'answer is "(\w+)"', messages[-1]["content"]).group(1) for messages in conversations]
        return [f"{REASON} It is clear.\nAnswer: {word}" for word in gold]


def test_recipe_teacher_answers_are_cached_and_a_class_kept_by_none_fails(models, tmp_path, capsys, monkeypatch):
    teacher = _Teacher(broken=True)
    monkeypatch.setattr("clsgen_hf.data.teachers.make_teacher", lambda spec, **_: teacher)
    argv = ("--teacher", "openai:http://127.0.0.1:9/v1", "--explanation_column", "", "--max_steps", "1",
            "--max_new_tokens", "2", "--teacher_retries", "0")
    assert _train(models, tmp_path, *argv, model="tiny") == 1
    assert "No explanation stated the gold verdict for class(es) 0, 1" in _error(capsys)
    asked = teacher.asked  # answers and their follow-ups, cached in the output folder
    teacher.broken = False
    assert _train(models, tmp_path, *argv, model="tiny") == 1 and teacher.asked == asked  # the cache answers
    assert _train(models, tmp_path, *argv, "--retry_rejected", model="tiny") == 0
    assert teacher.asked == asked + 6  # the six training rows, asked again
    assert _train(models, tmp_path, *argv, model="tiny") == 0 and teacher.asked == asked + 6  # now all cached


def test_one_class_validation_rows_are_refused_before_the_model_loads(models, tmp_path, capsys):
    """The decision rule cannot be fitted on one class: refused before training, not after it (losing the weights)."""
    files = {"train": _csv(tmp_path / "train.csv", _rows(8)), "test": _csv(tmp_path / "test.csv", _rows(4))}
    validation = _csv(tmp_path / "validation.csv", _rows(4, labels=(1,)))
    assert _train(models, tmp_path, "--validation_file", str(validation), files=files) == 2
    assert re.search(r"All 4 validation rows have the label 1 \(Yes\).*--allow_single_class", _error(capsys))
