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

COLUMNS = [  # (key in the JSON results, table header, format)
    ("auroc", "AUROC", ".3f"), ("auprc", "AUPRC", ".3f"), ("f1", "F1@0.5", ".3f"), ("f1_tuned", "F1@val-thr", ".3f"),
    ("brier", "Brier", ".3f"), ("ece", "ECE", ".3f"), ("auroc_alignment", "AUROC-Align", ".3f"),
    ("r_lkappa", "R-LKappa", ".3f"), ("rli", "RLI", ".3f"), ("readability", "Readability", ".3f"),
    ("language_retention", "LM retention", ".3f"), ("train_seconds", "Train s", ".1f"),
    ("predict_seconds", "Predict s", ".1f"),
]
ALIGNMENT_KEYS = ("auroc_alignment", "r_lkappa", "rli", "readability", "agreement", "loop_rate", "ends_at_verdict")
README_START, README_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def markdown_table(results: dict[str, dict]) -> str:
    """One row per method; `n/a` where the method cannot have the metric, `NaN` where it is undefined on these rows."""
    lines = ["| Method | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for method, row in results.items():
        cells = []
        for key, _, fmt in COLUMNS:
            if key in row["not_applicable"]:
                cells.append("n/a")
            elif row[key] is None:
                cells.append("NaN")
            else:
                cells.append(format(row[key], fmt))
        lines.append(f"| {METHODS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(output_dir: Path, results: dict[str, dict], config: dict) -> str:
    """`benchmark_results.md` (table + setup, for a README to include verbatim); returns the Markdown."""
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
    caveat = (" With so few rows and steps the numbers check that every method runs end to end; they do not rank "
              "the methods." if rows["test"] < 100 else "")
    text = "\n".join([
        "<!-- Written by examples/benchmark_clinifact.py; do not edit by hand. -->",
        f"CliniFact (binary), base model `{config['model']}`: {rows['train']} of {rows['train_asked']} training "
        f"rows kept ({source}), {rows['validation']} validation rows (threshold tuning), {rows['test']} test rows. "
        f"Training budget shared by every trained method: {steps} of {batch} row{'s' * (batch != 1)}, "
        f"learning rate {budget['learning_rate']:g}, LoRA r={config['lora_r']}, "
        f"{'bf16' if budget['bf16'] else 'float32'}. Run on {config['date']}, {config['device']}, in "
        f"{config['total_seconds'] / 60:.0f} minutes.{caveat}",
        "",
        markdown_table(results),
        "",
        "`n/a`: the method writes no explanation (alignment metrics) or has no language model (retention). "
        "`NaN`: undefined on these rows (reason in `benchmark_results.json`). Language retention = base-model "
        "perplexity / method perplexity on the base model's own answers to general instructions (1 = unchanged). "
        "Times are wall-clock seconds (train: fitting; predict: the test rows). " + _decision_note(config),
        "",
        f"Command: `{config['command']}`",
        "",
    ])
    (output_dir / "benchmark_results.md").write_text(text, encoding="utf-8")
    return text


def _decision_note(config: dict) -> str:
    """How the run decided, from the release that made it (runs of clsgen_hf 0.1.0 recorded no version)."""
    if "clsgen_hf" not in config["versions"]:
        return ("This run was made by clsgen_hf 0.1.0: its alignment metrics are at threshold 0.5 (not the tuned "
                "threshold), CLSGen's head is uncalibrated, and verdicts were read by the 0.1.0 reader.")
    return ("Alignment metrics are computed at each method's validation-tuned threshold; CLSGen's probabilities are "
            "calibrated on the validation rows first (`clsgen_hf.calibration`). Prompting and explanation SFT read "
            "their probability right after their own explanation's verdict prefix, so under greedy decoding it "
            "restates that verdict: their alignment is near-perfect by construction and says nothing about "
            "faithfulness.")


def paste_into_readme(readme: Path, report: str) -> None:
    """Replace what lies between `README_START` and `README_END` in `readme` by `report`."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block to paste the table into.")
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(f"{head}{README_START}\n{report.strip()}\n{README_END}{tail}", encoding="utf-8")


def draw_plots(output_dir: Path, results: dict[str, dict]) -> list[str]:
    """ROC curves and reliability diagrams as PNG; skipped, with a message, without matplotlib."""
    plt = pyplot()
    if plt is None:
        return []
    figure, axis = plt.subplots(figsize=(5.5, 5))
    for method, row in results.items():
        auroc = row["auroc"]
        axis.plot(row["roc"]["fpr"], row["roc"]["tpr"], label=f"{METHODS[method]} ({'NaN' if auroc is None else f'{auroc:.3f}'})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curves (test rows)")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(output_dir / "roc_curves.png", dpi=120)
    plt.close(figure)
    reliability_diagrams({METHODS[method]: row for method, row in results.items()}, output_dir / "reliability_diagrams.png")
    return ["roc_curves.png", "reliability_diagrams.png"]


def run_configuration(bench: Bench, options: dict, splits: dict[str, Dataset], explanations: dict,
                      base_perplexity: float, command: str) -> dict:
    """What `write_report` and a reader of the JSON file need to know about the run: rows, budget, explanation
    source, every option (`options`: e.g. "arguments" -> the script's options as a dict), device and library
    versions."""
    import peft
    import sklearn
    import transformers
    import trl

    explained = bench.train
    return {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "model": bench.model_args.model_name_or_path or "SmolLM2-135M-Instruct (embedded GGUF)",
        "base_model_source": bench.base,
        "device": _device_name(bench.device),
        "rows": {"train_asked": len(splits["train"]), "train": len(explained), "validation": len(bench.validation),
                 "test": len(bench.test),
                 "positives": {split: int(sum(rows["label"])) for split, rows in
                               (("train", explained), ("validation", bench.validation), ("test", bench.test))}},
        "budget": bench.budget,
        "lora_r": bench.model_args.lora_r,
        "explanations": explanations,
        "base_perplexity": base_perplexity,
        **options,
        "versions": {"python": platform.python_version(), "clsgen_hf": clsgen_hf.__version__, "torch": torch.__version__,
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
