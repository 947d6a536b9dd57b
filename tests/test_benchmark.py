"""examples/benchmark_clinifact.py: the table's bookkeeping (fast) and the smoke-size run end to end (slow)."""

import importlib
import json
import math
from pathlib import Path

import pytest
from datasets import Dataset

from .helpers import example_module


REPO = Path(__file__).resolve().parents[1]
CLINIFACT = REPO.parent / "shared" / "data" / "clinifact"


@pytest.fixture(scope="module")
def benchmark():
    with example_module("benchmark_clinifact") as module:
        yield module


@pytest.fixture(scope="module")
def report(benchmark):
    """`examples/benchmark/report.py`, the table and README half of the benchmark (on the path once it is loaded)."""
    return importlib.import_module("benchmark.report")


def _table(markdown: str) -> dict[str, dict[str, str]]:
    """Method -> column header -> cell, from the Markdown table."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], cells[1:]))
    return rows


def _fake_result(benchmark, explanations, perplexity=2.0):
    def records(positives, texts):
        return [{"probability": [1 - p, p], **({} if texts is None else {"explanation": text})}
                for p, text in zip(positives, texts or positives)]

    return benchmark.MethodResult(
        validation=records([0.2, 0.7, 0.4, 0.9], None), test=records([0.1, 0.8, 0.3, 0.75], explanations),
        train_seconds=1.0, predict_seconds=0.5, lm_perplexity=perplexity,
    )


def test_evaluate_separates_not_applicable_from_undefined(benchmark, report):
    labels = [0, 1, 0, 1]
    # Every readable verdict says "Yes": AUROC-Alignment is undefined; the head still disagrees with some.
    with_text = benchmark.evaluate(_fake_result(benchmark, ["Answer: Yes"] * 4), labels, labels, None, 1.0)
    assert set(with_text["undefined"]) == {"auroc_alignment"} and with_text["auroc_alignment"] is None
    assert with_text["readability"] == 1.0 and with_text["rli"] == 0.5 and with_text["language_retention"] == 0.5
    assert with_text["not_applicable"] == []
    without = benchmark.evaluate(_fake_result(benchmark, None, None), labels, labels, None, 1.0)
    assert set(without["not_applicable"]) == {*benchmark.ALIGNMENT_KEYS, "lm_perplexity", "language_retention"}
    assert without["undefined"] == {} and without["auroc"] == 1.0 and without["f1_tuned"] == 1.0

    table = _table(report.markdown_table({"sft": with_text, "tfidf": without}))
    headers = [header for _, header, _ in report.COLUMNS]
    assert list(table) == [benchmark.METHODS["sft"], benchmark.METHODS["tfidf"]]
    assert all(list(row) == headers for row in table.values())
    assert table[benchmark.METHODS["sft"]]["AUROC-Align"] == "NaN"
    assert table[benchmark.METHODS["tfidf"]]["R-LKappa"] == "n/a"
    assert table[benchmark.METHODS["tfidf"]]["AUROC"] == "1.000"


def test_report_file(benchmark, tmp_path):
    labels = [0, 1, 0, 1]
    results = {"clsgen": benchmark.evaluate(_fake_result(benchmark, ["x\nAnswer: No"] * 4), labels, labels, None, 1.0)}
    config = {
        "model": "tiny", "lora_r": 16, "device": "cpu (2 threads)", "command": "python examples/benchmark_clinifact.py",
        "date": "2026-11-22", "total_seconds": 150.0,
        "rows": {"train_asked": 16, "train": 12, "validation": 4, "test": 4},
        "budget": {"max_steps": 2, "num_train_epochs": 1.0, "per_device_train_batch_size": 4,
                   "gradient_accumulation_steps": 1, "learning_rate": 5e-4, "bf16": False},
        "explanations": {"teacher": "self", "seconds": 1.0}, "versions": {"clsgen_hf": "0.2.0"},
    }
    text = benchmark.write_report(tmp_path, results, config)
    assert "computed at each method's validation-tuned threshold" in text and "near-perfect by construction" in text
    (tmp_path / "old").mkdir()
    old = benchmark.write_report(tmp_path / "old", results, {**config, "versions": {}})  # 0.1.0 recorded no version
    assert "made by clsgen_hf 0.1.0: its alignment metrics are at threshold 0.5" in old
    assert (tmp_path / "benchmark_results.md").read_text() == text
    assert "12 of 16 training rows kept (explained by the teacher `self`)" in text and "2 steps of 4 rows" in text
    assert "Run on 2026-11-22, cpu (2 threads), in 2 minutes." in text
    assert list(_table(text)) == [benchmark.METHODS["clsgen"]]

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{benchmark.README_START}\nold table\n{benchmark.README_END}\n\nMore.\n")
    benchmark.paste_into_readme(readme, text)
    assert readme.read_text() == f"# Title\n\n{benchmark.README_START}\n{text.strip()}\n{benchmark.README_END}\n\nMore.\n"
    with pytest.raises(ValueError, match="no <!-- benchmark:start -->"):
        benchmark.paste_into_readme(tmp_path / "benchmark_results.md", text)


def test_readme_table_is_the_committed_run_unedited(benchmark, tmp_path):
    """The README's table is the committed run's `benchmark_results.md`, which its JSON file reproduces."""
    committed = REPO / "examples" / "benchmark_results"
    saved = json.loads((committed / "benchmark_results.json").read_text())
    text = benchmark.write_report(tmp_path, saved["results"], saved["config"])
    assert text == (committed / "benchmark_results.md").read_text()
    readme = (REPO / "README.md").read_text()
    block = readme.split(benchmark.README_START, 1)[1].split(benchmark.README_END, 1)[0]
    assert block.strip() == text.strip()


def test_stratified_subset_keeps_both_classes(benchmark):
    rows = Dataset.from_dict({"label": [0] * 30 + [1] * 6})
    subset = benchmark.stratified_subset(rows, 8, seed=0)
    assert len(subset) == 8 and set(subset["label"]) == {0, 1}
    assert len(benchmark.stratified_subset(rows, 0, seed=0)) == 36  # 0 = every row


@pytest.mark.slow
@pytest.mark.skipif(not (CLINIFACT / "train.csv").is_file(), reason="needs the CliniFact CSV files")
def test_smoke_benchmark_fills_the_table(benchmark, report, tmp_path):
    """The CPU smoke size end to end: every method, every column, a number wherever the metric is defined."""
    output_dir = tmp_path / "out"
    payload = benchmark.main(["--output_dir", str(output_dir), "--data_dir", str(CLINIFACT)])
    results = payload["results"]
    assert list(results) == list(benchmark.METHODS)

    table = _table((output_dir / "benchmark_results.md").read_text())
    assert list(table) == list(benchmark.METHODS.values())
    headers = [header for _, header, _ in report.COLUMNS]
    saved = json.loads((output_dir / "benchmark_results.json").read_text())["results"]
    for method, name in benchmark.METHODS.items():
        assert list(table[name]) == headers
        row = saved[method]
        expected_na = set()
        if method == "tfidf":
            expected_na = {*benchmark.ALIGNMENT_KEYS, "lm_perplexity", "language_retention"}
        assert set(row["not_applicable"]) == expected_na
        for key, header, _ in report.COLUMNS:
            cell = table[name][header]
            if key in expected_na:
                assert cell == "n/a" and row[key] is None
            elif key in row["undefined"]:  # only where the metric itself reports being undefined on these rows
                assert cell == "NaN" and row[key] is None and "is undefined" in row["undefined"][key]
                assert key in ("auroc_alignment", "r_lkappa", "rli")
            else:
                assert math.isfinite(row[key]) and cell == format(row[key], _fmt(report, key))
    assert saved["prompting"]["language_retention"] == pytest.approx(1.0)
    assert payload["config"]["rows"] | {"positives": None} == {
        "train_asked": 16, "train": 16, "validation": 8, "test": 8, "positives": None}
    assert (output_dir / "clsgen" / "clsgen_prompt.json").is_file()
    assert {"roc_curves.png", "reliability_diagrams.png"} <= {p.name for p in output_dir.iterdir()}


def _fmt(report, key):
    return next(fmt for k, _, fmt in report.COLUMNS if k == key)
