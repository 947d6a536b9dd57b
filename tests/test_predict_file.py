"""`predict_file` / `clsgen-hf predict` at scale: streamed in input order, resumable after SIGKILL, refusing to resume
with other options, two processes equal to one, memory flat in the number of rows, no cached or stale file reads."""

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from clsgen_hf import predict
from clsgen_hf.batch_prediction import predict_file
from clsgen_hf.commands import predict as predict_command
from clsgen_hf.data import load_classification_dataset, read_rows
from clsgen_hf.errors import UsageError
from clsgen_hf.prompt_template import default_prompt_template

from .toy import tiny_model_for


REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
WORDS = "the patient trial dose outcome arm group week study result measure improved unchanged".split()
CLI = [sys.executable, "-m", "clsgen_hf.cli", "predict"]


def _rows(n: int, seed: int = 0, max_words: int = 40) -> list[dict]:
    """Rows whose notes have shuffled lengths (1 to `max_words` words), an id and a gold label."""
    rng = random.Random(seed)
    return [{"id": f"r{i}", "note": " ".join(rng.choices(WORDS, k=rng.randint(1, max_words))), "label": i % 2}
            for i in range(n)]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_same_predictions(written: list[dict], expected: list[dict]):
    assert [row["id"] for row in written] == [row["id"] for row in expected]
    assert [row["explanation"] for row in written] == [row["explanation"] for row in expected]
    np.testing.assert_allclose([row["probability"] for row in written], [row["probability"] for row in expected],
                               atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def model_dir(_smollm2_tokenizer, tmp_path_factory):
    """A tiny random CLSGen model folder (SmolLM2's vocabulary) with a `note` prompt template."""
    folder = tmp_path_factory.mktemp("model")
    tiny_model_for(_smollm2_tokenizer).save_pretrained(folder)
    _smollm2_tokenizer.save_pretrained(folder)
    default_prompt_template("note").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(model_dir):
    from clsgen_hf import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_dir)
    return model.eval(), tokenizer


# ------------------------------------------------------------------------------------------ reading the input
def _rewrite_same_size_and_mtime(path: Path, text: str):
    stat = path.stat()
    assert len(text.encode()) == stat.st_size
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_rewritten_file_with_same_size_and_mtime_is_read_anew_and_nothing_is_cached(tmp_path, monkeypatch, suffix):
    cache = tmp_path / "hf_datasets_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)  # read at import; the module's copy is used
    source = tmp_path / f"rows{suffix}"
    texts = ("alpha note", "bravo note")
    for text in texts:
        if suffix == ".jsonl":
            content = json.dumps({"note": text, "label": 1}) + "\n"
        else:
            content = f"note,label\n{text},1\n"
        if source.exists():
            _rewrite_same_size_and_mtime(source, content)
        else:
            source.write_text(content)
        assert [row["note"] for row in read_rows(source)] == [text]
        assert load_classification_dataset(source, text_fields="note", label_field="label")["note"] == [text]
    assert list(cache.rglob("*")) == [] and not (tmp_path / "hf_home").exists()


def test_predict_file_reads_a_rewritten_input_anew(tiny, tmp_path):
    model, tokenizer = tiny
    source, output = tmp_path / "rows.jsonl", tmp_path / "preds.jsonl"
    for text in ("alpha note", "bravo note"):
        content = json.dumps({"note": text}) + "\n"
        if source.exists():
            _rewrite_same_size_and_mtime(source, content)
        else:
            source.write_text(content)
        predict_file(model, source, output, tokenizer=tokenizer, text_fields=["note"], max_new_tokens=0)
        assert [row["note"] for row in _read_jsonl(output)] == [text]


# ------------------------------------------------------------------------------------------- order, chunks
@pytest.mark.parametrize("suffix, max_new_tokens", [(".jsonl", 3), (".csv", 0)])
def test_order_and_columns_kept_with_shuffled_lengths(tiny, tmp_path, suffix, max_new_tokens):
    """Chunks of 7 rows sorted by length, batches of 3 (or of at most 150 padded tokens): the output is the input's
    rows in the input's order, every column kept, each row's prediction the one `predict` gives it alone."""
    model, tokenizer = tiny
    rows = _rows(23)
    output = tmp_path / f"preds{suffix}"
    predict_file(model, _write_jsonl(tmp_path / "rows.jsonl", rows), output, tokenizer=tokenizer,
                 text_fields=["note"], batch_size=3, max_new_tokens=max_new_tokens, chunk_size=7, max_batch_tokens=150)
    if suffix == ".csv":
        written = list(csv.DictReader(output.open()))
        for row in written:
            row["probability"] = [float(row.pop("probability_0")), float(row.pop("probability_1"))]
            row["input_label"] = int(row["input_label"])
    else:
        written = _read_jsonl(output)
    assert [{k: row[k] for k in ("id", "note", "input_label")} for row in written] == [
        {"id": row["id"], "note": row["note"], "input_label": row["label"]} for row in rows]
    template = default_prompt_template("note")
    alone = [predict(model, tokenizer, [{"note": row["note"]}], prompt_template=template,
                     max_new_tokens=max_new_tokens, show_progress=False)[0] for row in rows]
    _assert_same_predictions(written, [{**record, "id": row["id"]} for row, record in zip(rows, alone)])
    assert not list(tmp_path.glob("*.partial*"))


# --------------------------------------------------------------------------------------- kill and resume
RESUME_ROWS = 240
RESUME_OPTIONS = ["--text_fields", "note", "--batch_size", "4", "--chunk_size", "6", "--max_new_tokens", "8"]


@pytest.fixture(scope="module")
def resume_input(tmp_path_factory):
    return _write_jsonl(tmp_path_factory.mktemp("resume") / "rows.jsonl", _rows(RESUME_ROWS, seed=1))


@pytest.fixture(scope="module")
def uninterrupted(model_dir, resume_input, tmp_path_factory):
    output = tmp_path_factory.mktemp("uninterrupted") / "preds.jsonl"
    assert predict_command.main(["--model", str(model_dir), "--input", str(resume_input), "--output", str(output),
                                 *RESUME_OPTIONS]) == 0
    return _read_jsonl(output)


def _journal_rows(partial: Path) -> int:
    return max(partial.read_bytes().count(b"\n") - 1, 0) if partial.is_file() else 0


def _kill_at_row(cmd: list[str], partial: Path, row: int) -> int:
    """Start `cmd`, SIGKILL it once `partial` holds `row` or more rows; returns the rows it held when killed."""
    process = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while _journal_rows(partial) < row:
        assert process.poll() is None, f"the run ended before row {row}: {process.stderr.read().decode()[-3000:]}"
        assert time.time() < deadline, f"row {row} not reached in 300 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    return _journal_rows(partial)


@pytest.mark.slow
def test_killed_twice_at_random_rows_resumes_to_the_uninterrupted_file(model_dir, resume_input, uninterrupted,
                                                                       tmp_path, caplog):
    output = tmp_path / "preds.jsonl"
    earlier = "an earlier predictions file\n"
    output.write_text(earlier)
    partial = output.with_name("preds.jsonl.partial")
    cmd = CLI + ["--model", str(model_dir), "--input", str(resume_input), "--output", str(output), *RESUME_OPTIONS]
    rng = random.Random()
    first = rng.randint(1, RESUME_ROWS // 3)
    second = rng.randint(first + 12, 2 * RESUME_ROWS // 3)
    held = [_kill_at_row(cmd, partial, first), _kill_at_row(cmd, partial, second)]
    assert first <= held[0] < RESUME_ROWS and second <= held[1] < RESUME_ROWS, (first, second, held)
    print(f"SIGKILL at rows {held} of {RESUME_ROWS} (targets {first}, {second})")
    assert output.read_text() == earlier  # a kill leaves the earlier output as it was
    with partial.open("ab") as file:
        file.write(b'{"id": "torn')  # a line cut short by the kill

    caplog.set_level("INFO", logger="clsgen_hf")
    assert predict_command.main(cmd[len(CLI):]) == 0
    assert f"resuming at row {held[1]} of {RESUME_ROWS}" in caplog.text, (first, second, held)
    _assert_same_predictions(_read_jsonl(output), uninterrupted)
    assert not partial.exists()


@pytest.fixture
def killed(model_dir, resume_input, tmp_path):
    """An output whose run was killed after 10 or more rows: (command line options, partial file, its text)."""
    output = tmp_path / "preds.jsonl"
    options = ["--model", str(model_dir), "--input", str(resume_input), "--output", str(output), *RESUME_OPTIONS]
    partial = output.with_name("preds.jsonl.partial")
    _kill_at_row(CLI + options, partial, 10)
    return options, partial, partial.read_text()


def test_resuming_with_other_options_is_refused_naming_the_option(killed, model_dir, resume_input, tmp_path, capsys):
    options, partial, text = killed
    other_model = tmp_path / "other_model"
    shutil.copytree(model_dir, other_model)
    template = tmp_path / "template.json"
    template.write_text(json.dumps({**default_prompt_template("note").to_dict(), "system": "Decide."}))
    changes = {"threshold": ["--threshold", "0.3"], "max_new_tokens": ["--max_new_tokens", "5"],
               "prompt_template": ["--prompt_template", str(template)],
               "model": ["--model", str(other_model)], "input": []}
    original = resume_input.read_bytes()
    for option, extra in changes.items():
        if option == "input":
            resume_input.write_bytes(original.replace(b"patient", b"patients", 1))
        try:
            assert predict_command.main([*options, *extra]) == 2, option
        finally:
            resume_input.write_bytes(original)
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and f"an unfinished run with another {option}:" in error, error
        assert "--overwrite" in error and partial.read_text() == text

    output = Path(options[options.index("--output") + 1])
    assert predict_command.main([*options, "--threshold", "0.3", "--max_new_tokens", "0", "--overwrite"]) == 0
    assert len(_read_jsonl(output)) == RESUME_ROWS and not partial.exists()


def test_a_run_stopped_before_its_first_row_does_not_block_a_corrected_rerun(tiny, tmp_path):
    model, tokenizer = tiny
    source, output = _write_jsonl(tmp_path / "rows.jsonl", _rows(3)), tmp_path / "preds.jsonl"
    kwargs = dict(tokenizer=tokenizer, text_fields=["note"], max_new_tokens=0)
    with pytest.raises(UsageError, match="max_prompt_tokens=20"):
        predict_file(model, source, output, max_prompt_tokens=20, **kwargs)
    predict_file(model, source, output, **kwargs)  # another max_prompt_tokens, no overwrite needed: nothing to lose
    assert len(_read_jsonl(output)) == 3


# -------------------------------------------------------------------------------------------- two processes
def test_two_cpu_processes_write_the_one_process_file(model_dir, tmp_path):
    rows = _rows(37, seed=2)
    source = _write_jsonl(tmp_path / "rows.jsonl", rows)
    options = ["--model", str(model_dir), "--input", str(source), "--text_fields", "note", "--batch_size", "3",
               "--chunk_size", "5", "--max_new_tokens", "4"]
    single, double = tmp_path / "one.csv", tmp_path / "two.csv"
    assert predict_command.main([*options, "--output", str(single)]) == 0
    # accelerate launch starts CPU processes through MPI only; torchrun is what it runs on GPUs.
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "clsgen_hf.cli", "predict"]
    result = subprocess.run(launch + [*options, "--output", str(double)], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "of 19 rows" in result.stderr and "of 18 rows" in result.stderr  # each process predicted its share
    one, two = list(csv.DictReader(single.open())), list(csv.DictReader(double.open()))
    assert [row["id"] for row in two] == [row["id"] for row in rows] and list(two[0]) == list(one[0])
    for a, b in zip(one, two):
        assert a["explanation"] == b["explanation"]
        np.testing.assert_allclose(float(a["probability_1"]), float(b["probability_1"]), atol=1e-6, rtol=0)
    assert not list(tmp_path.glob("*.partial*"))


# ------------------------------------------------------------------------------------------------- memory
MEMORY_SCRIPT = """
import json, resource, sys
from clsgen_hf.batch_prediction import predict_file
predict_file(sys.argv[1], sys.argv[2], sys.argv[3], text_fields=["note"], max_new_tokens=1, batch_size=32)
print(json.dumps({"peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _peak_rss_mib(model_dir: Path, tmp_path: Path, n: int) -> float:
    source = _write_jsonl(tmp_path / f"rows{n}.jsonl", _rows(n, seed=3, max_words=12))
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(model_dir), str(source),
                             str(tmp_path / f"preds{n}.jsonl")], cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_read_jsonl(tmp_path / f"preds{n}.jsonl")) == n
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_kib"] / 1024


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_rows(model_dir, tmp_path):
    """Peak resident memory predicting 5,000 short rows against 50 (tiny random model, --max_new_tokens 1)."""
    small, large = _peak_rss_mib(model_dir, tmp_path, 50), _peak_rss_mib(model_dir, tmp_path, 5000)
    print(f"peak RSS: {small:.0f} MiB for 50 rows, {large:.0f} MiB for 5000 rows")
    assert large - small < 200, (small, large)
