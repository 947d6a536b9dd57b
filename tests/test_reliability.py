"""What a hurried user or a hostile file does to the `clsgen-hf` commands: bad config files, options out of range,
outputs over inputs or model folders, links where files are expected, a NaN head, a foreign `auto_map`, two runs on
one output, Ctrl-C during training. Each must end in one line with exit status 2 (130 for Ctrl-C), before any model
loads where it can, and leave every file it did not write as it was. Hostile teachers are in `test_synthesis.py`."""

import csv
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from clsgen_hf import CLSGenConfig, CLSGenTrainer
from clsgen_hf.atomic import atomic_path
from clsgen_hf.cli import main as cli_main
from clsgen_hf.configuration_clsgen import LlamaCLSGenConfig
from clsgen_hf.data import OpenAITeacher, TeacherError
from clsgen_hf.json_files import write_json
from clsgen_hf.prompt_template import default_prompt_template

from .toy import lora_config, tiny_model_for, toy_dataset


REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "predict", "synthesize", "export", "install-metrics")
REASON = "The note reports what the trial measured in its patients and how the treated arm compared with the other."


@pytest.fixture(scope="module")
def model(tmp_path_factory, _smollm2_tokenizer) -> Path:
    """A tiny CLSGen model folder (real tokenizer, the generic template over `note`)."""
    folder = tmp_path_factory.mktemp("models") / "tiny"
    tiny_model_for(_smollm2_tokenizer).save_pretrained(folder)
    _smollm2_tokenizer.save_pretrained(folder)
    default_prompt_template("note").save_pretrained(folder)
    return folder


@pytest.fixture
def rows(tmp_path) -> Path:
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["note", "label", "why"])
        writer.writeheader()
        writer.writerows({"note": f"Patient {i}: the dose was {'raised' if i % 2 else 'kept'}.", "label": i % 2,
                          "why": f"{REASON} Row {i}."} for i in range(8))
    return path


def _one_line_error(capsys, command: str) -> str:
    """The error line, the last of stderr (progress bars of the work done before it may precede it)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"clsgen-hf {command}: error: "), err
    return err[-1]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind, message", [
    ("unparsable", "is not a YAML file"),
    ("list", "must hold a YAML mapping (option: value lines), not a list"),
    ("unknown-key", "unknown option(s) batch_sise"),
    ("binary", "is not a YAML file"),
    ("missing", "No such file or directory"),
])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_config_file_is_one_line_for_every_command(tmp_path, capsys, command, kind, message):
    config = tmp_path / "config.yaml"
    contents = {"unparsable": b"output_dir: [unclosed\n", "list": b"- train_file\n- rows.csv\n",
                "unknown-key": b"batch_sise: 4\n", "binary": bytes(range(256)) * 4}
    if kind in contents:
        config.write_bytes(contents[kind])
    assert cli_main([command, "--config", str(config)]) == 2
    error = _one_line_error(capsys, command)
    assert f"--config {config}" in error and message in error


@pytest.mark.parametrize("command, option, value, expected", [
    ("predict", "--batch_size", "0", "at least 1, got 0"),
    ("predict", "--batch_size", "-1", "at least 1, got -1"),
    ("predict", "--max_new_tokens", "-1", "at least 0, got -1"),
    ("predict", "--threshold", "1.5", "between 0 and 1 (exclusive), got 1.5"),
    ("train", "--max_train_samples", "-1", "at least 1, got -1"),
    ("train", "--per_device_train_batch_size", "0", "at least 1, got 0"),
    ("train", "--predict_batch_size", "0", "at least 1, got 0"),
    ("train", "--validation_fraction", "1", "between 0 and 1 (exclusive), got 1.0"),
    ("synthesize", "--teacher_timeout", "0", "above 0, got 0.0"),
    ("synthesize", "--teacher_batch_size", "0", "at least 1, got 0"),
    ("export", "--atol", "-1", "at least 0, got -1.0"),
])
def test_an_option_out_of_range_is_refused_naming_it_before_any_model_loads(tmp_path, capsys, command, option, value,
                                                                             expected):
    """Every other argument names what does not exist: the range is checked first."""
    missing = str(tmp_path / "missing")
    argv = {"predict": ["--model", missing, "--input", f"{missing}.csv", "--output", str(tmp_path / "out.csv")],
            "train": ["--model_name_or_path", missing, "--train_file", f"{missing}.csv", "--test_file",
                      f"{missing}.csv", "--text_fields", "note", "--output_dir", str(tmp_path / "out")],
            "synthesize": ["--input", f"{missing}.csv", "--text_fields", "note", "--output",
                           str(tmp_path / "o.jsonl")],
            "export": [missing, str(tmp_path / "out")]}[command]
    assert cli_main([command, *argv, option, value]) == 2
    assert f"{option} must be {expected}." in _one_line_error(capsys, command)


def test_a_combination_trainer_arguments_reject_is_one_line(capsys):
    assert cli_main(["train", "--load_best_model_at_end", "true", "--eval_strategy", "steps", "--save_strategy",
                     "epoch"]) == 2
    assert "--load_best_model_at_end requires the save and eval strategy to match" in _one_line_error(capsys, "train")


def test_predict_never_writes_over_its_input(model, rows, tmp_path, capsys):
    before = rows.read_bytes()
    (tmp_path / "link.csv").symlink_to(rows)
    os.link(rows, tmp_path / "hard.csv")
    for output in (rows, tmp_path / "link.csv", tmp_path / "hard.csv", tmp_path / "." / "rows.csv"):
        assert cli_main(["predict", "--model", str(model), "--input", str(rows), "--output", str(output)]) == 2
        assert f"is the --input file {rows}" in _one_line_error(capsys, "predict")
    assert rows.read_bytes() == before
    for output, message in ((rows / "preds.csv", f"{rows} is a file, not a folder"),
                            (tmp_path, "is a folder: name the file to write")):
        assert cli_main(["predict", "--model", str(model), "--input", str(rows), "--output", str(output)]) == 2
        assert message in _one_line_error(capsys, "predict")


@pytest.mark.parametrize("command, flag", [("predict", "--input"), ("train", "--train_file"),
                                           ("train", "--test_file"), ("train", "--validation_file")])
def test_a_folder_where_a_data_file_is_expected_is_named(model, rows, tmp_path, capsys, command, flag):
    folder = tmp_path / "data"
    folder.mkdir()
    argv = {"predict": ["--model", str(model), "--input", str(rows), "--output", str(tmp_path / "out.jsonl")],
            "train": ["--model_name_or_path", str(model), "--train_file", str(rows), "--test_file", str(rows),
                      "--validation_file", str(rows), "--text_fields", "note", "--explanation_column", "why",
                      "--output_dir", str(tmp_path / "run")]}[command]
    argv[argv.index(flag) + 1] = f"{folder}/"
    assert cli_main([command, *argv]) == 2
    assert f"{folder} is a folder: name the data file in it (" in _one_line_error(capsys, command)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "rows.csv"]


@pytest.mark.parametrize("where", ["is", "lies inside", "contains"])
def test_train_never_writes_over_its_base_model(model, rows, tmp_path, capsys, where):
    base = tmp_path / "parent" / "base"
    shutil.copytree(model, base)
    before = _snapshot(base.parent)
    output_dir = {"is": base, "lies inside": base / "run", "contains": base.parent}[where]
    argv = ["train", "--model_name_or_path", str(base), "--train_file", str(rows), "--test_file", str(rows),
            "--text_fields", "note", "--explanation_column", "why", "--output_dir", str(output_dir)]
    assert cli_main(argv) == 2
    assert f"--output_dir {output_dir} {where} the base model folder {base}" in _one_line_error(capsys, "train")
    assert _snapshot(base.parent) == before


def test_train_refuses_an_output_dir_that_is_a_file(rows, capsys):
    assert cli_main(["train", "--train_file", str(rows), "--test_file", str(rows), "--text_fields", "note",
                     "--output_dir", str(rows)]) == 2
    assert f"--output_dir {rows} is a file: name a folder." in _one_line_error(capsys, "train")


@pytest.mark.parametrize("flag", ["--output", "--cache"])
def test_synthesize_never_writes_over_its_input(rows, tmp_path, capsys, flag):
    before = rows.read_bytes()
    outputs = {"--output": str(tmp_path / "out.jsonl"), flag: str(rows)}
    argv = ["synthesize", "--input", str(rows), "--text_fields", "note", "--teacher", "openai:http://127.0.0.1:9/v1",
            *[item for pair in outputs.items() for item in pair]]
    assert cli_main(argv) == 2
    assert f"{flag} {rows} is the --input file {rows}" in _one_line_error(capsys, "synthesize")
    assert rows.read_bytes() == before


def test_predict_refuses_a_model_whose_head_is_nan(model, rows, tmp_path, capsys):
    diverged = tmp_path / "diverged"
    shutil.copytree(model, diverged)
    weights = load_file(diverged / "model.safetensors")
    weights["score.weight"] = torch.full_like(weights["score.weight"], float("nan"))
    save_file(weights, diverged / "model.safetensors", metadata={"format": "pt"})
    output = tmp_path / "preds.jsonl"
    assert cli_main(["predict", "--model", str(diverged), "--input", str(rows), "--output", str(output)]) == 2
    assert "the classification head (`score`) holds NaN or infinite weights" in _one_line_error(capsys, "predict")
    assert not output.exists()


def test_refresh_code_writes_regular_files_inside_the_folder_and_resets_auto_map(model, tmp_path, caplog):
    folder, outside = tmp_path / "sent", tmp_path / "outside.py"
    shutil.copytree(model, folder)
    outside.write_text("# the user's own file\n")
    (folder / "modeling_clsgen.py").unlink()
    (folder / "modeling_clsgen.py").symlink_to(outside)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {**config["auto_map"], "AutoModel": "evil.EvilModel", "AutoModelForSequenceClassification":
                          "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text("raise SystemExit('evil code ran')\n")

    assert cli_main(["refresh-code", str(folder)]) == 0
    assert "auto_map pointed AutoModel at evil.EvilModel" in caplog.text
    assert outside.read_text() == "# the user's own file\n"
    assert not (folder / "modeling_clsgen.py").is_symlink()
    assert (folder / "modeling_clsgen.py").read_text() == (REPO / "clsgen_hf" / "modeling_clsgen.py").read_text()
    assert json.loads((folder / "config.json").read_text())["auto_map"] == LlamaCLSGenConfig.default_auto_map
    assert sorted(p.name for p in folder.iterdir()) == sorted([p.name for p in model.iterdir()] + ["evil.py"])


def test_writes_replace_links_and_leave_the_old_file_when_they_fail(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("keep me\n")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "clsgen_results.json").symlink_to(outside)
    (folder / "clsgen_prompt.json").symlink_to(outside)
    write_json(folder / "clsgen_results.json", {"accuracy": 1.0})
    default_prompt_template("note").save_pretrained(folder)
    assert outside.read_text() == "keep me\n"
    assert json.loads((folder / "clsgen_results.json").read_text()) == {"accuracy": 1.0}
    assert not (folder / "clsgen_prompt.json").is_symlink()

    with pytest.raises(RuntimeError), atomic_path(folder / "clsgen_results.json") as temporary:
        temporary.write_text("{half")
        raise RuntimeError("killed mid-write")
    assert json.loads((folder / "clsgen_results.json").read_text()) == {"accuracy": 1.0}
    assert sorted(p.name for p in folder.iterdir()) == ["clsgen_prompt.json", "clsgen_results.json"]


def test_two_commands_writing_one_output_the_second_refuses(model, rows, tmp_path, capsys):
    """Another process holds the output (as a running `clsgen-hf predict` does): this one refuses in one line; once
    that process is killed, the output is free again (the kernel drops its lock)."""
    output = tmp_path / "preds.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from clsgen_hf.atomic import claim; "
                               f"claim({str(output)!r}); print('held', flush=True); time.sleep(300)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["predict", "--model", str(model), "--input", str(rows), "--output", str(output), "--max_new_tokens",
                "0"]
        assert cli_main(argv) == 2
        assert "is being written by another clsgen-hf command" in _one_line_error(capsys, "predict")
    finally:
        holder.kill()
        holder.wait()
    assert cli_main(argv) == 0 and len(output.read_text().splitlines()) == 8
    assert not list(tmp_path.glob(".*.lock"))


def test_options_before_the_command_are_named(capsys):
    assert cli_main(["--model", "m", "predict"]) == 2
    assert "The command comes first: clsgen-hf predict [options]." in capsys.readouterr().err


def test_ctrl_c_while_the_command_imports_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first seconds, while `train` imports its libraries (before its own handling starts). Not a bare
    `--help`, which a primed help cache answers without importing the command."""
    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    try:
        status = cli_main(["train", "--max_steps", "1"])
    except KeyboardInterrupt:
        status = "a traceback"
    assert status == 130
    assert capsys.readouterr().err == "clsgen-hf train: interrupted (Ctrl-C); the files it had finished writing are " \
        "kept.\n"


@pytest.mark.slow
def test_ctrl_c_during_train_is_one_line_and_keeps_the_checkpoints(model, rows, tmp_path):
    """One Ctrl-C ends the run. Before, the process printed its line at once but then spent seconds tearing the
    interpreter down (torch, the model), and a second press was needed. The run starts with Ctrl-C at its default, as
    at a terminal: a job started in the background (`nohup ... &`, as CI may run the suite) inherits SIGINT ignored,
    and Python then installs no KeyboardInterrupt at all. The wait after the one press bounds a hang on a loaded
    machine; it does not time the exit."""
    output_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "clsgen_hf.cli", "train", "--model_name_or_path", str(model), "--train_file",
            str(rows), "--test_file", str(rows), "--text_fields", "note", "--explanation_column", "why",
            "--output_dir", str(output_dir), "--max_prompt_tokens", "128", "--save_strategy", "steps",
            "--save_steps", "1", "--max_steps", "500", "--per_device_train_batch_size", "1",
            "--gradient_accumulation_steps", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with (tmp_path / "train.log").open("w") as log:
        run = subprocess.Popen(argv, stdout=log, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not (output_dir / "checkpoint-1" / "trainer_state.json").exists():
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()[-3000:]
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=180)
    finally:
        run.kill()
    assert run.returncode == 130, stderr[-3000:]
    assert "clsgen-hf train: interrupted (Ctrl-C); the files it had finished writing are kept.\n" in stderr
    assert "Traceback" not in stderr
    state = json.loads((output_dir / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1


class _TrickledHeaders(BaseHTTPRequestHandler):
    """A valid chat reply whose status line and headers arrive one byte every 0.1 s (10 s in all): every read
    returns within any per-read timeout, so only a total deadline ends the wait."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests += 1
        body = json.dumps({"choices": [{"message": {"content": "Answer: Yes"}}]}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        head += f"X-Padding: {'a' * (97 - len(head))}\r\n\r\n"
        try:
            for byte in head.encode():
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(body)
        except OSError:  # the client hung up at its deadline
            pass


def test_a_teacher_trickling_its_headers_is_bounded_by_the_total_deadline():
    """The deadline covers connecting and the headers, not only the body: each try ends after `timeout` seconds in
    all, is retried, then fails naming the URL (without it, each try waits the 10 s out and succeeds)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TrickledHeaders)
    server.daemon_threads, server.requests = True, 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        teacher = OpenAITeacher(url, model="m", timeout=1.0, max_retries=1)
        with pytest.raises(TeacherError, match=f"{url}/chat/completions did not answer within 1 s, 2 attempts"):
            teacher.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=4)
        assert server.requests == 2
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("save_merged", [False, True])
def test_a_final_save_that_fails_midway_leaves_the_previous_model(smollm2_tokenizer, tmp_path, monkeypatch,
                                                                   save_merged):
    """The new weights are written, then saving the tokenizer fails (as on a full disk, or a kill): the previous
    final model is still there, whole and unchanged, and nothing of the failed save is left."""
    run = tmp_path / "run"
    args = CLSGenConfig(str(run), report_to=[], use_cpu=True, save_merged=save_merged)
    trainer = CLSGenTrainer(tiny_model_for(smollm2_tokenizer), args, train_dataset=toy_dataset(4),
                            processing_class=smollm2_tokenizer, peft_config=lora_config())
    trainer.save_model()
    before = _snapshot(run)
    with torch.no_grad():  # weights that differ from the saved ones
        for parameter in trainer.model.parameters():
            if parameter.requires_grad:
                parameter.add_(1.0)

    # The real tokenizer fails to save after the weights are written: a setting JSON cannot hold (as a full disk or
    # a kill would stop it there)
    monkeypatch.setitem(smollm2_tokenizer.init_kwargs, "unsaveable", object())
    with pytest.raises(TypeError, match="not JSON serializable"):
        trainer.save_model()
    assert _snapshot(run) == before
    assert sorted(p.name for p in run.iterdir()) == sorted({path.parts[0] for path in before})  # no staging left
