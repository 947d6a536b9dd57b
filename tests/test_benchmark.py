"""examples/benchmark_clinifact.py and examples/gpu/benchmark_gpu.py: the statistics (bootstrap, leakage subset,
calibration, explanation text), resumability, the report (fast), and the tiny dry runs of both scripts (slow)."""

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from sklearn.metrics import roc_auc_score

from clsgen_hf import CLSGenConfig
from clsgen_hf.calibration import fit_calibration
from clsgen_hf.metrics import tune_threshold
from clsgen_hf.verdicts import VerdictFormat

from .helpers import example_module


REPO = Path(__file__).resolve().parents[1]
CLINIFACT = REPO.parent / "shared" / "data" / "clinifact"
needs_clinifact = pytest.mark.skipif(not (CLINIFACT / "train.csv").is_file(), reason="needs the CliniFact CSV files")


@pytest.fixture(scope="module")
def benchmark():
    with example_module("benchmark_clinifact") as module:
        yield module


@pytest.fixture(scope="module")
def stats(benchmark):
    """`examples/benchmark/stats.py` (importable once the script has put `examples/` on the path)."""
    return importlib.import_module("benchmark.stats")


@pytest.fixture(scope="module")
def scoring(benchmark):
    return importlib.import_module("benchmark.scoring")


@pytest.fixture(scope="module")
def report(benchmark):
    return importlib.import_module("benchmark.report")


def _table(markdown: str, first_header: str) -> dict[str, dict[str, str]]:
    """Method -> column header -> cell, from the Markdown table whose first metric column is `first_header`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| Method | {first_header}"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    return {cells[0]: dict(zip(header[1:], cells[1:]))
            for cells in ([cell.strip() for cell in line.strip("|").split("|")] for line in table[2:])}


# ------------------------------------------------------------------------------------------------ statistics
def test_bootstrap_auroc_interval(stats):
    rng = np.random.default_rng(0)
    labels = np.array([0] * 60 + [1] * 40)
    noisy = labels * 0.3 + rng.random(100)
    result = stats.bootstrap_auroc(labels, noisy, samples=300)
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, noisy))
    assert result["low"] < result["auroc"] < result["high"] and result["high"] - result["low"] > 0.05
    perfect = stats.bootstrap_auroc(labels, labels + 0.1 * rng.random(100), samples=100)
    assert perfect["auroc"] == 1.0 and perfect["low"] == pytest.approx(1.0) and perfect["high"] == pytest.approx(1.0)
    # Two seeds: the point estimate is the mean of the seeds' AUROCs on the same rows.
    two = stats.bootstrap_auroc(labels, np.stack([noisy, labels + 0.1 * rng.random(100)]), samples=100)
    assert two["auroc"] == pytest.approx((result["auroc"] + 1.0) / 2)


def test_paired_bootstrap_difference(stats):
    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 50)
    good, weak = labels + 0.5 * rng.random(100), labels * 0.2 + rng.random(100)
    same = stats.paired_bootstrap(labels, weak, weak, samples=200)
    assert same["difference"] == 0.0 and same["low"] == same["high"] == 0.0 and same["share_below_zero"] == 0.0
    better = stats.paired_bootstrap(labels, good, weak, samples=200)
    expected = roc_auc_score(labels, good) - roc_auc_score(labels, weak)
    assert better["difference"] == pytest.approx(expected) and 0 < better["low"] < expected < better["high"]
    assert stats.paired_bootstrap(labels, weak, good, samples=200)["share_below_zero"] == 1.0


def test_disjoint_rows_leave_out_abstracts_seen_in_training(stats):
    train = ["Abstract A.", "Abstract  B\nwith lines."]
    test = ["Abstract A.", "Abstract C.", "Abstract B with lines.", "abstract a."]
    assert stats.disjoint_rows(test, train) == [1, 3]  # whitespace does not matter, case does


def test_calibrate_is_fit_calibration_then_the_threshold(stats):
    rng = np.random.default_rng(2)
    labels = np.array([0, 1] * 20)
    positive = 1 / (1 + np.exp(-(4 * labels - 2 + rng.normal(0, 2, 40))))  # overconfident scores
    raw = np.stack([1 - positive, positive], axis=1)
    calibration, threshold = stats.calibrate(raw, labels)
    logits = np.log(raw)
    expected = fit_calibration(logits, labels)
    assert calibration.method == expected.method and calibration.scale == pytest.approx(expected.scale)
    calibrated = stats.apply_calibration(calibration, raw)
    assert threshold == tune_threshold(calibrated[:, 1], labels)
    assert np.allclose(calibrated, expected.probabilities(logits))


# ------------------------------------------------------------------------------------------------ resuming
def test_result_key_ignores_presentation_options(benchmark):
    args = benchmark.make_parser().parse_args_and_config(["--output_dir", "/tmp/a"])
    options = lambda parsed: {"arguments": vars(parsed[0]), "training_arguments": parsed[3].to_dict()}  # noqa: E731
    key = benchmark.options_key(benchmark.result_options(options(args)))
    same = benchmark.make_parser().parse_args_and_config(
        ["--output_dir", "/tmp/b", "--methods", "tfidf", "--seeds", "1", "2", "--readme", "R.md", "--plots", "false"])
    assert benchmark.options_key(benchmark.result_options(options(same))) == key
    for changed in (["--max_new_tokens", "8"], ["--max_train_samples", "10"], ["--learning_rate", "0.1"]):
        other = benchmark.make_parser().parse_args_and_config(["--output_dir", "/tmp/a", *changed])
        assert benchmark.options_key(benchmark.result_options(options(other))) != key, changed


def _rows(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    words = ["improved", "unchanged"]
    labels = [i % 2 for i in range(n)]
    texts = [f"{words[1 - label]} {' '.join(rng.choice(['dose', 'arm', 'week'], 4))}" for label in labels]
    return Dataset.from_dict({"prompt": [[{"role": "user", "content": t}] for t in texts], "label": labels})


def test_a_finished_method_is_skipped_and_a_changed_option_recomputes(benchmark, tmp_path):
    """`run_methods` with the real TF-IDF runner: saved at once, read back on a rerun under the same options key,
    recomputed under another; the file is replaced whole (no temporary file left)."""
    bench = benchmark.Bench(
        training_args=benchmark.CLSGenConfig(str(tmp_path), seed=0, report_to="none"), model_args=None,
        output_dir=tmp_path, base=None, tokenizer=None, template=None, train=_rows(20, 0), validation=_rows(8, 1),
        test=_rows(10, 2), explained=[], disjoint=[], reference={}, device=None, predict_batch_size=1,
        max_new_tokens=0)
    store = benchmark.ResultStore(tmp_path / "results", "key-1")
    saved, seconds = benchmark.run_methods(bench, None, store, ["tfidf"], [0, 1])
    assert set(saved["tfidf"]) == {0, 1} and seconds > 0
    path = store.path("tfidf", 0)
    first = json.loads(path.read_text())
    assert first["options_key"] == "key-1" and len(first["result"]["test"]) == 10
    assert first["result"]["explanations"] is None
    os.utime(path, (0, 0))  # a recomputation would rewrite it

    again, seconds = benchmark.run_methods(bench, None, store, ["tfidf"], [0, 1])
    assert seconds == 0 and path.stat().st_mtime == 0 and again == saved

    changed = benchmark.ResultStore(tmp_path / "results", "key-2")
    assert changed.load("tfidf", 0) is None
    _, seconds = benchmark.run_methods(bench, None, changed, ["tfidf"], [0])
    assert seconds > 0 and path.stat().st_mtime > 0 and json.loads(path.read_text())["options_key"] == "key-2"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["tfidf-seed0.json", "tfidf-seed1.json"]


# ------------------------------------------------------------------------------------------------ scoring, report
def _result(positive_test, explanations=None, perplexity=2.0):
    validation = [0.2, 0.7, 0.4, 0.9, 0.3, 0.6]
    return {"validation": [[1 - p, p] for p in validation], "test": [[1 - p, p] for p in positive_test],
            "explanations": explanations, "train_seconds": 1.0, "predict_seconds": 0.5, "lm_perplexity": perplexity,
            "wall_seconds": 2.0}


VALIDATION_LABELS = [0, 1, 0, 1, 0, 1]
TEST_LABELS = [0, 1, 0, 1, 1, 0]
ROWS = {"explained": [0, 1, 2, 3], "disjoint": [2, 3, 4, 5]}


def test_score_run_full_disjoint_and_explained_rows(scoring):
    scores = [0.1, 0.8, 0.3, 0.75, 0.2, 0.6]  # perfect on rows 0-3, wrong on rows 4-5
    texts = ["x\nAnswer: No", "x\nAnswer: Yes", "x\nAnswer: Yes", "no verdict"]
    row = scoring.score_run(_result(scores, texts), VALIDATION_LABELS, TEST_LABELS, ROWS, VerdictFormat(), 1.0)
    assert row["auroc"] == pytest.approx(roc_auc_score(TEST_LABELS, scores))
    disjoint = [TEST_LABELS[i] for i in ROWS["disjoint"]], [scores[i] for i in ROWS["disjoint"]]
    assert row["disjoint"]["auroc"] == pytest.approx(roc_auc_score(*disjoint)) and row["disjoint"]["n"] == 4
    assert {"ece", "ece_before", "brier_before", "log_loss"} <= set(row) and row["calibration"]["method"]
    assert row["n_explained"] == 4 and row["readability"] == 0.75
    head = [p >= row["threshold"] for p in row["calibrated_test"][:3]]
    stated = [False, True, True]
    assert row["agreement"] == pytest.approx(sum(h == s for h, s in zip(head, stated)) / 4)
    assert row["loop_rate"] == 0.0 and row["ends_at_verdict"] == 0.75
    assert row["language_retention"] == 0.5 and row["not_applicable"] == []
    without = scoring.score_run(_result(scores, None, None), VALIDATION_LABELS, TEST_LABELS, ROWS, VerdictFormat(),
                                1.0)
    assert set(without["not_applicable"]) == {*scoring.EXPLANATION_KEYS, "lm_perplexity", "language_retention"}
    one_class = {"explained": ROWS["explained"], "disjoint": [0, 2]}  # AUROC undefined there: NaN, with the reason
    odd = scoring.score_run(_result(scores), VALIDATION_LABELS, TEST_LABELS, one_class, VerdictFormat(), 1.0)
    assert odd["disjoint"]["auroc"] is None and "AUROC is undefined" in odd["undefined"]["disjoint.auroc"]


def _pooled(scoring):
    scores = {0: [0.1, 0.8, 0.3, 0.75, 0.2, 0.6], 1: [0.2, 0.7, 0.1, 0.9, 0.6, 0.4]}
    texts = ["x\nAnswer: No"] * 4
    per_method = {
        "clsgen": {seed: scoring.score_run(_result(s, texts), VALIDATION_LABELS, TEST_LABELS, ROWS, VerdictFormat(),
                                           1.0) for seed, s in scores.items()},
        "discriminative": {seed: scoring.score_run(_result(s[::-1]), VALIDATION_LABELS, TEST_LABELS, ROWS,
                                                   VerdictFormat(), 1.0) for seed, s in scores.items()},
    }
    pooled = {method: scoring.pool_seeds(runs, TEST_LABELS, ROWS, 50) for method, runs in per_method.items()}
    return per_method, pooled, scoring.compare(per_method, TEST_LABELS, ROWS, 50)


def test_pooling_seeds_and_the_paired_comparison(scoring):
    per_method, pooled, comparison = _pooled(scoring)
    clsgen = pooled["clsgen"]
    assert clsgen["auroc"] == pytest.approx(np.mean([run["auroc"] for run in per_method["clsgen"].values()]))
    assert clsgen["auroc_sd"] > 0 and clsgen["seeds"] == [0, 1] and clsgen["auroc_ci"]["samples"] == 50
    assert clsgen["auroc_ci"]["auroc"] == pytest.approx(clsgen["auroc"])
    assert comparison["all"]["difference"] == pytest.approx(clsgen["auroc"] - pooled["discriminative"]["auroc"])
    assert comparison["seeds"] == [0, 1] and "disjoint" in comparison
    assert scoring.compare({"clsgen": per_method["clsgen"]}, TEST_LABELS, ROWS, 50) is None


def test_report_file_and_readme(report, scoring, tmp_path):
    _, pooled, comparison = _pooled(scoring)
    config = {
        "model": "tiny", "lora_r": 16, "device": "cpu (2 threads)", "date": "2026-12-04", "total_seconds": 150.0,
        "seeds": [0, 1], "command": "python examples/benchmark_clinifact.py",
        "rows": {"train_asked": 16, "train": 12, "validation": 6, "test": 6, "explained": 4, "disjoint": 4},
        "budget": {"max_steps": 2, "num_train_epochs": 1.0, "per_device_train_batch_size": 4,
                   "gradient_accumulation_steps": 1, "learning_rate": 5e-4, "bf16": False},
        "explanations": {"teacher": "self", "seconds": 1.0},
    }
    text = report.write_report(tmp_path, pooled, config, comparison)
    assert (tmp_path / "benchmark_results.md").read_text() == text
    assert "6 test rows, of which 4 have an abstract that no training row used (disjoint) and 4 are explained" in text
    assert "seeds 0, 1 (numbers are means over the seeds)" in text and "do not rank the methods" in text
    probabilities = _table(text, "AUROC [95% CI]")
    cell = probabilities["CLSGen"]["AUROC [95% CI]"]
    ci = pooled["clsgen"]["auroc_ci"]
    assert cell == f"{pooled['clsgen']['auroc']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"
    assert f"CLSGen - SeqCls AUROC (paired bootstrap, 50 resamples of the test rows): " \
           f"{comparison['all']['difference']:+.3f}" in text
    explanations = _table(text, "Agreement")
    assert explanations["Discriminative FT (LoRA + score)"]["Agreement"] == "n/a"
    assert explanations["CLSGen"]["Readability"] == "1.000"

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{report.README_START}\nold table\n{report.README_END}\n\nMore.\n")
    report.paste_into_readme(readme, text)
    assert readme.read_text() == f"# Title\n\n{report.README_START}\n{text.strip()}\n{report.README_END}\n\nMore.\n"


def test_readme_table_is_the_committed_run_unedited(report):
    """The README's benchmark block is the committed run's `benchmark_results.md`, unedited."""
    committed = (REPO / "examples" / "benchmark_results" / "benchmark_results.md").read_text()
    readme = (REPO / "README.md").read_text()
    block = readme.split(report.README_START, 1)[1].split(report.README_END, 1)[0]
    assert block.strip() == committed.strip()


def test_default_cls_loss_weight_is_the_sweeps_choice():
    """`CLSGenConfig`'s `cls_loss_weight` is the one the committed sweep (`benchmark_cls_loss_weight*.json`, same rows
    and seed) chooses by its rule, from validation rows only: the highest validation AUROC of the head among weights
    whose language retention is at least weight 1's, the smallest weight within 0.02 of it, and 1 unless that beats
    weight 1 by 0.10. The README's main table is trained at it."""
    runs, validation_ids = {}, set()
    for path in (REPO / "examples" / "benchmark_results").glob("benchmark_cls_loss_weight*.json"):
        saved = json.loads(path.read_text())
        validation_ids.add(tuple(saved["config"]["row_ids"]["validation"]))
        probabilities = [row[1] for row in saved["predictions"]["clsgen"]["42"]["validation"]]
        runs[saved["config"]["training_arguments"]["cls_loss_weight"]] = (
            roc_auc_score(saved["config"]["labels"]["validation"], probabilities),
            saved["results"]["clsgen"]["language_retention"],
        )
    assert len(validation_ids) == 1 and len(runs) >= 3
    first_auroc, first_retention = runs[1.0]
    eligible = {weight: auroc for weight, (auroc, retention) in runs.items() if retention >= first_retention}
    chosen = min(weight for weight, auroc in eligible.items() if auroc >= max(eligible.values()) - 0.02)
    expected = chosen if eligible[chosen] >= first_auroc + 0.10 else 1.0
    assert CLSGenConfig.__dataclass_fields__["cls_loss_weight"].default == expected
    main_run = json.loads((REPO / "examples" / "benchmark_results" / "benchmark_results.json").read_text())
    assert main_run["config"]["training_arguments"]["cls_loss_weight"] == expected  # the README's table: the default


def test_stratified_positions_keep_both_classes(benchmark):
    labels = [0] * 30 + [1] * 6
    positions = benchmark.stratified_positions(labels, 8, seed=0)
    assert len(positions) == 8 and {labels[i] for i in positions} == {0, 1}
    assert benchmark.stratified_positions(labels, 0, seed=0) == list(range(36))  # 0 = every row


# ------------------------------------------------------------------------------------------------ GPU carry plan
@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("benchmark_gpu", REPO / "examples" / "gpu" / "benchmark_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_splits_the_model_under_the_call_limit_and_join_restores_it(gpu, tmp_path, monkeypatch):
    """The two halves of the model travel in two calls; joined, they are the file again, and a wrong part is refused.
    The data travels compressed."""
    model = tmp_path / "model.gguf"
    model.write_bytes(os.urandom(3000))
    data = tmp_path / "clinifact"
    data.mkdir()
    for name in ("train.csv", "validation.csv", "test.csv"):
        (data / name).write_text(f"index,label\n1,{name}\n")
    carry = tmp_path / "carry"
    monkeypatch.setattr(gpu, "FIRST_PART_BYTES", 1000)
    monkeypatch.setattr(gpu, "CALL_LIMIT_BYTES", 1500)
    monkeypatch.setattr(gpu, "TREE_MARGIN_BYTES", 0)
    with pytest.raises(SystemExit, match="over what one device call carries"):  # part 2 is 2000 bytes
        gpu.pack(carry, model, data, download=False)
    monkeypatch.setattr(gpu, "CALL_LIMIT_BYTES", 64 * 2**20)
    manifest = gpu.pack(carry, model, data, download=False)
    parts = [carry / "call1" / f"{gpu.GGUF_NAME}.part1", carry / "call2" / f"{gpu.GGUF_NAME}.part2"]
    assert [part.stat().st_size for part in parts] == [1000, 2000]
    assert json.loads((carry / "manifest.json").read_text()) == manifest and manifest["bytes"] == 3000
    assert manifest["call_bytes"]["call2"] == 2000
    joined = gpu.join_parts(parts, tmp_path / "joined" / "model.gguf", manifest["sha256"])
    assert joined.read_bytes() == model.read_bytes()
    with pytest.raises(SystemExit, match="do not match"):
        gpu.join_parts(parts[::-1], tmp_path / "wrong" / "model.gguf", manifest["sha256"])
    assert not (tmp_path / "wrong" / "model.gguf").exists()
    with tarfile.open(carry / "call1" / "clinifact.tar.xz") as archive:
        assert sorted(archive.getnames()) == ["clinifact/test.csv", "clinifact/train.csv", "clinifact/validation.csv"]


# ------------------------------------------------------------------------------------------------ dry runs
TINY = ["--max_train_samples", "16", "--max_validation_samples", "8", "--max_eval_samples", "12",
        "--max_explained_samples", "4", "--max_steps", "2", "--per_device_train_batch_size", "1",
        "--gradient_accumulation_steps", "1", "--max_new_tokens", "16", "--retention_max_new_tokens", "16",
        "--bootstrap_samples", "100"]


@pytest.mark.slow
@needs_clinifact
def test_tiny_benchmark_fills_the_tables(benchmark, report, tmp_path):
    """Every method end to end at tiny size: both tables filled, a number wherever the metric is defined."""
    output_dir = tmp_path / "out"
    payload = benchmark.main(["--output_dir", str(output_dir), "--data_dir", str(CLINIFACT), *TINY])
    results = payload["results"]
    assert list(results) == list(benchmark.METHODS)
    text = (output_dir / "benchmark_results.md").read_text()
    saved = json.loads((output_dir / "benchmark_results.json").read_text())
    for first, columns in (("AUROC [95% CI]", report.PROBABILITY_COLUMNS), ("Agreement", report.EXPLANATION_COLUMNS)):
        table = _table(text, first)
        assert list(table) == list(benchmark.METHODS.values())
        for method, name in benchmark.METHODS.items():
            row = saved["results"][method]
            for key, header, _ in columns:
                cell = table[name][header]
                if key in row["not_applicable"]:
                    assert method == "tfidf" and cell == "n/a"
                elif cell == "NaN":
                    assert key in row["undefined"] or f"disjoint.{key}" in row["undefined"]
                else:
                    assert math.isfinite(float(cell.split()[0]))
    assert saved["results"]["prompting"]["language_retention"] == pytest.approx(1.0)
    rows = saved["config"]["rows"]
    assert (rows["train"], rows["validation"], rows["test"], rows["explained"]) == (16, 8, 12, 4)
    assert len(saved["config"]["row_ids"]["test"]) == 12 and saved["comparison"]["all"]["samples"] == 100
    clsgen = saved["predictions"]["clsgen"]["42"]
    assert len(clsgen["test"]) == 12 and len(clsgen["explanations"]) == 4
    assert {"roc_curves.png", "reliability_diagrams.png"} <= {p.name for p in output_dir.iterdir()}


@pytest.mark.slow
@needs_clinifact
def test_gpu_script_dry_run(tmp_path):
    """`examples/gpu/benchmark_gpu.py --dry_run`: every step of the GPU run at tiny size on this CPU (pack, split and
    join the model, run, collect), its results and tables written to a temporary folder, never the committed ones."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "examples/gpu/benchmark_gpu.py", "--dry_run", "--data_dir", str(CLINIFACT),
         "--work_dir", str(tmp_path / "work"), "--results_dir", str(tmp_path / "results")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads((tmp_path / "results" / "benchmark_gpu.json").read_text())
    assert saved["config"]["seeds"] == [0, 1, 2] and saved["config"]["device"].startswith("cpu")
    assert set(saved["per_seed"]) == {"prompting", "discriminative", "sft", "tfidf", "clsgen", "clsgen_decision"}
    assert all(set(runs) == {"0", "1", "2"} for runs in saved["per_seed"].values())
    readme = (tmp_path / "work" / "README.md").read_text()  # without --readme: a copy of the README, pasted into
    assert "tiny-size dry run of `examples/gpu/benchmark_gpu.py`" in readme and "| Method | AUROC [95% CI]" in readme
