"""What the CliniFact benchmark writes: the Markdown table (and the README block it is pasted into), the plots, and
the record of how the run was made (`run_configuration`, saved in `benchmark_results.json`)."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import clsgen_hf
from clsgen_hf.data import CLINIFACT_RATIONALE_COLUMN, SynthesisReport
from clsgen_hf.plots import pyplot, reliability_diagrams


if TYPE_CHECKING:
    from datasets import Dataset

    from .methods import Bench


METHODS = {
    "prompting": "Prompting (no training)",
    "discriminative": "Discriminative FT (LoRA + score)",
    "sft": "Explanation SFT",
    "tfidf": "TF-IDF + logistic regression",
    "clsgen": "CLSGen",
    "clsgen_decision": "CLSGen, decision mode",
}

PROBABILITY_COLUMNS = [  # (key in a pooled result, header, format)
    ("auroc", "AUROC [95% CI]", "ci"), ("disjoint.auroc", "AUROC disjoint [95% CI]", "ci"), ("auprc", "AUPRC", ".3f"),
    ("f1", "F1@thr", ".3f"), ("brier", "Brier", ".3f"), ("ece_before", "ECE raw", ".3f"), ("ece", "ECE cal", ".3f"),
    ("log_loss", "Log-loss", ".3f"), ("train_seconds", "Train s", ".0f"), ("predict_seconds", "Predict s", ".0f"),
]
EXPLANATION_COLUMNS = [
    ("agreement", "Agreement", ".3f"), ("auroc_alignment", "AUROC-Align", ".3f"), ("r_lkappa", "R-LKappa", ".3f"),
    ("rli", "RLI", ".3f"), ("readability", "Readability", ".3f"), ("loop_rate", "Loops", ".3f"),
    ("ends_at_verdict", "Ends at verdict", ".3f"), ("language_retention", "LM retention", ".3f"),
]
README_START, README_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def _cell(row: dict, key: str, fmt: str) -> str:
    """`n/a` where the method cannot have the metric, `NaN` where it is undefined on these rows."""
    if key in row["not_applicable"]:
        return "n/a"
    value = row
    for part in key.split("."):
        value = value[part]
    if value is None:
        return "NaN"
    if fmt == "ci":
        interval = row["disjoint"]["auroc_ci"] if key.startswith("disjoint.") else row["auroc_ci"]
        return f"{value:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"
    return format(value, fmt)


def markdown_table(results: dict[str, dict], columns: list[tuple[str, str, str]]) -> str:
    """One row per method (its pooled result), one column per metric."""
    lines = ["| Method | " + " | ".join(header for _, header, _ in columns) + " |", "|---|" + "---:|" * len(columns)]
    for method, row in results.items():
        lines.append(f"| {METHODS[method]} | " + " | ".join(_cell(row, key, fmt) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def comparison_line(comparison: dict | None) -> str:
    """The paired CLSGen - SeqCls AUROC difference, on all test rows and on the disjoint subset."""
    if comparison is None:
        return "CLSGen - SeqCls: not measured (both methods must run)."
    every, disjoint = comparison["all"], comparison["disjoint"]
    return (f"CLSGen - SeqCls AUROC (paired bootstrap, {every['samples']} resamples of the test rows): "
            f"{every['difference']:+.3f} [{every['low']:+.3f}, {every['high']:+.3f}] on every test row, "
            f"{disjoint['difference']:+.3f} [{disjoint['low']:+.3f}, {disjoint['high']:+.3f}] on the disjoint rows.")


def write_report(output_dir: Path, results: dict[str, dict], config: dict, comparison: dict | None) -> str:
    """`benchmark_results.md` (setup, both tables, the CLSGen - SeqCls difference; for a README to include
    verbatim); returns the Markdown."""
    rows, budget = config["rows"], config["budget"]
    steps = (f"{budget['max_steps']} steps" if budget["max_steps"] > 0
             else f"{budget['num_train_epochs']:g} epoch{'s' * (budget['num_train_epochs'] != 1)}")
    batch = budget["per_device_train_batch_size"] * budget["gradient_accumulation_steps"]
    explanations = config["explanations"]
    if explanations.get("column") == CLINIFACT_RATIONALE_COLUMN:
        source = "explanations written from their registry fields and gold labels: the recipe's default on CliniFact"
    elif "column" in explanations:
        source = f"explanations from the `{explanations['column']}` column"
    else:
        source = f"explained by the teacher `{explanations['teacher']}`"
    seeds = config["seeds"]
    caveat = (" With so few rows the numbers check that every method runs end to end; they do not rank the methods."
              if rows["test"] < 100 else "")
    text = "\n".join([
        "<!-- Written by examples/benchmark_clinifact.py; do not edit by hand. -->",
        f"CliniFact (binary), base model `{config['model']}`: {rows['train']} of {rows['train_asked']} training "
        f"rows kept ({source}), {rows['validation']} validation rows (calibration, then threshold), {rows['test']} "
        f"test rows, of which {rows['disjoint']} have an abstract that no training row used (disjoint) and "
        f"{rows['explained']} are explained. Training budget shared by every trained method: {steps} of {batch} "
        f"row{'s' * (batch != 1)}, learning rate {budget['learning_rate']:g}, LoRA r={config['lora_r']}, "
        f"{'bf16' if budget['bf16'] else 'float32'}; seed{'s' * (len(seeds) != 1)} {', '.join(map(str, seeds))}"
        f"{' (numbers are means over the seeds)' if len(seeds) > 1 else ''}. Run on {config['date']}, "
        f"{config['device']}, in {config['total_seconds'] / 60:.0f} minutes.{caveat}",
        "",
        markdown_table(results, PROBABILITY_COLUMNS),
        "",
        comparison_line(comparison),
        "",
        markdown_table(results, EXPLANATION_COLUMNS),
        "",
        "Every method's probabilities are calibrated by the same procedure on the same validation rows "
        "(`clsgen_hf.calibration.fit_calibration` on the log of its raw probabilities, then the F1 threshold tuned "
        "on the calibrated ones: what `fit_decision_rule` does for a CLSGen head); ECE raw/cal is before/after. "
        "Prompting and explanation SFT score each verdict word right after the prompt and the verdict prefix; their "
        "explanations are generated separately. Agreement: share of explained rows whose explanation states the "
        "head's label at the tuned threshold (an unreadable verdict disagrees). Loops: share of explanations that "
        "repeat a 4-word run 3 times or more; ends at verdict: share whose last line is a readable verdict. "
        "Language retention = base-model perplexity / method perplexity on the base model's own answers to general "
        "instructions (1 = unchanged). `n/a`: the method has no explanation or language model; `NaN`: undefined "
        "on these rows (reason in the JSON). Times are wall-clock seconds (train: fitting; predict: the test "
        "rows, explanations included).",
        "",
        f"Command: `{config['command']}`",
        "",
    ])
    (output_dir / "benchmark_results.md").write_text(text, encoding="utf-8")
    return text


def paste_into_readme(readme: Path, report: str, start: str = README_START, end: str = README_END) -> None:
    """Replace what lies between the lines `start` and `end` in `readme` by `report`."""
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} block to paste the table into.")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(f"{head}{start}\n{report.strip()}\n{end}{tail}", encoding="utf-8")


def draw_plots(output_dir: Path, runs: dict[str, dict]) -> list[str]:
    """ROC curves and reliability diagrams (after calibration) of one seed's run of every method, as PNG; skipped,
    with a message, without matplotlib."""
    plt = pyplot()
    if plt is None:
        return []
    figure, axis = plt.subplots(figsize=(5.5, 5))
    for method, row in runs.items():
        auroc = "NaN" if row["auroc"] is None else f"{row['auroc']:.3f}"
        axis.plot(row["roc"]["fpr"], row["roc"]["tpr"], label=f"{METHODS[method]} ({auroc})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curves (test rows)")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(output_dir / "roc_curves.png", dpi=120)
    plt.close(figure)
    reliability_diagrams({METHODS[method]: row for method, row in runs.items()},
                         output_dir / "reliability_diagrams.png")
    return ["roc_curves.png", "reliability_diagrams.png"]


def run_configuration(bench: Bench, options: dict, splits: dict[str, Dataset], explanations: dict,
                      base_perplexity: float, command: str) -> dict:
    """What `write_report` and a reader of the JSON file need to know about the run: rows (CliniFact `index` of each
    row asked for, positions in the test rows of the explained and disjoint ones), budget, explanation source, every
    option (`options`: e.g. "arguments" -> the script's options as a dict), device and library versions."""
    import peft
    import sklearn
    import transformers
    import trl

    train, validation, test = bench.train, bench.validation, bench.test
    return {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "model": bench.model_args.model_name_or_path or "SmolLM2-135M-Instruct (embedded GGUF)",
        "base_model_source": bench.base,
        "device": _device_name(bench.device),
        "rows": {"train_asked": len(splits["train"]), "train": len(train), "validation": len(validation),
                 "test": len(test), "explained": len(bench.explained), "disjoint": len(bench.disjoint),
                 "positives": {split: int(sum(rows["label"])) for split, rows in
                               (("train", train), ("validation", validation), ("test", test))}},
        "row_ids": {"train": list(splits["train"]["index"]), "validation": list(validation["index"]),
                    "test": list(test["index"]), "explained_positions": bench.explained,
                    "disjoint_positions": bench.disjoint},
        "labels": {"validation": list(validation["label"]), "test": list(test["label"])},
        "budget": bench.budget,
        "lora_r": bench.model_args.lora_r,
        "explanations": explanations,
        "base_perplexity": base_perplexity,
        **options,
        "versions": {"python": platform.python_version(), "clsgen_hf": clsgen_hf.__version__,
                     "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__, "peft": peft.__version__,
                     "scikit-learn": sklearn.__version__},
    }


def explanation_source(column: str | None, teacher: str | None, explained: Dataset,
                       seconds: float) -> dict:
    """Where the training explanations came from: a rationale column, or a teacher (with its synthesis report)."""
    if column:
        return {"column": column, "seconds": round(seconds, 1)}
    return {"teacher": teacher or "self", "seconds": round(seconds, 1),
            "report": SynthesisReport.from_dataset(explained).to_dict()}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu: {_cpu_model()} ({threads} thread{'' if threads == 1 else 's'})"


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
