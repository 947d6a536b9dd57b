# /// script
# requires-python = ">=3.11"
# dependencies = ["clsgen_hf", "matplotlib"]
# ///
"""Benchmark on CliniFact: CLSGen against the approaches the CLSGen paper (arXiv 2604.11801) compares it with.

Every method sees the same train/validation/test rows, the same base model and, where it trains, the same budget
(steps, batch, learning rate, LoRA settings, precision: one `CLSGenConfig` + `ModelConfig` read by all of them):

1. Prompting: the base instruct model writes an explanation and a verdict; its probability is the normalised
   next-token probability of each verbalizer after the reasoning and "Answer:" (`predict(probability_from="verdict")`).
2. Discriminative fine-tuning: `LlamaForSequenceClassification` + LoRA (+ `score`) with the transformers `Trainer`;
   its explanations come from the tuned backbone under the ORIGINAL `lm_head` (where linguistic collapse shows).
3. Explanation SFT: TRL's `SFTTrainer` on the explanations only; probability from the verdict, as in 1.
4. TF-IDF + logistic regression (scikit-learn) on the same prompt text; no explanation, no language model.
5. CLSGen: this library's recipe (`clsgen_hf.commands.train`): joint LoRA training of both heads.

Explanations are synthesized once (one teacher pass, cached in the output folder) and shared by SFT and CLSGen; every
method trains on the rows the teacher explained. The validation rows only tune the F1 threshold. As in the recipe,
with no `--teacher` named the explanations are CliniFact's registry rationales (two sentences from each row's
registry fields and gold label, `clsgen_hf.data.registry_rationale`): the embedded SmolLM2-135M explains almost no
CliniFact row in the teacher's format. Full-size runs should name a capable `--teacher`.

Reported per method (test rows): AUROC, AUPRC, F1 at 0.5 and at the validation-tuned threshold, Brier, ECE; for
methods that write explanations the alignment metrics (AUROC-Alignment, R-LKappa, RLI, readability; `n/a` for
TF-IDF); language retention = perplexity of the base model / perplexity of the method's language model on answers the
base model wrote to general instructions before any training (1.0 = unchanged, lower = drift; `n/a` for TF-IDF);
training and prediction wall time. `NaN` marks a metric undefined on these rows (e.g. R-LKappa when every readable
verdict and head label is one class); the reason is in the JSON file.

Outputs in --output_dir: `benchmark_results.md` (the table, ready to include in a README), `benchmark_results.json`
(every number, the ROC and reliability data, the exact configuration), `roc_curves.png`, `reliability_diagrams.png`
(with matplotlib installed), `predictions_<method>.jsonl`, and the caches (`base_model/`, `teacher_cache.jsonl`,
`language_reference.json`) that make a rerun skip the GGUF conversion, the teacher and the reference answers.

Usage:

    # CPU smoke size (the defaults: 16 train / 8 validation / 8 test rows, 2 steps of 1 row; minutes on 2 cores)
    python examples/benchmark_clinifact.py

    # Full size, on a GPU (0 = all rows), explanations from a capable teacher
    python examples/benchmark_clinifact.py --output_dir outputs/benchmark-clinifact-full \\
        --teacher transformers:Qwen/Qwen2.5-7B-Instruct \\
        --max_train_samples 0 --max_validation_samples 0 --max_eval_samples 0 \\
        --max_steps -1 --num_train_epochs 2 --per_device_train_batch_size 16 --gradient_accumulation_steps 1 \\
        --max_prompt_tokens 1024 --max_length 1400 --max_new_tokens 256 --teacher_max_new_tokens 256 \\
        --teacher_retries 2 --retention_max_new_tokens 128 --teacher_batch_size 64 --predict_batch_size 64 --bf16 true

    # Another base model, some methods only
    python examples/benchmark_clinifact.py --model_name_or_path meta-llama/Llama-3.2-1B-Instruct \\
        --methods prompting clsgen
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from peft import get_peft_model
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_curve
from sklearn.model_selection import train_test_split
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

import clsgen_hf
from clsgen_hf import CLSGenConfig, load_model, load_model_and_tokenizer, load_tokenizer, predict
from clsgen_hf.commands.train import (
    CPU_DEFAULTS,
    ScriptArguments,
    _explanations,
    clinifact_dir,
    explanation_column,
    train_clsgen,
)
from clsgen_hf.data import (
    CLINIFACT_BINARY_TEMPLATE,
    CLINIFACT_RATIONALE_COLUMN,
    SynthesisReport,
    TransformersTeacher,
    fit_prompts,
    load_clinifact,
)
from clsgen_hf.encoding import encode_examples, encode_prompts
from clsgen_hf.loading import resolve_model_source
from clsgen_hf.metrics import alignment_report, classification_report
from clsgen_hf.model_card import json_safe
from clsgen_hf.plots import pyplot, reliability_diagrams


logger = logging.getLogger("clsgen_hf.benchmark")

METHODS = {
    "prompting": "Prompting (no training)",
    "discriminative": "Discriminative FT (LoRA + score)",
    "sft": "Explanation SFT",
    "tfidf": "TF-IDF + logistic regression",
    "clsgen": "CLSGen",
}

# (key in the JSON results, table header, format)
COLUMNS = [
    ("auroc", "AUROC", ".3f"),
    ("auprc", "AUPRC", ".3f"),
    ("f1", "F1@0.5", ".3f"),
    ("f1_tuned", "F1@val-thr", ".3f"),
    ("brier", "Brier", ".3f"),
    ("ece", "ECE", ".3f"),
    ("auroc_alignment", "AUROC-Align", ".3f"),
    ("r_lkappa", "R-LKappa", ".3f"),
    ("rli", "RLI", ".3f"),
    ("readability", "Readability", ".3f"),
    ("language_retention", "LM retention", ".3f"),
    ("train_seconds", "Train s", ".1f"),
    ("predict_seconds", "Predict s", ".1f"),
]
ALIGNMENT_KEYS = ("auroc_alignment", "r_lkappa", "rli", "readability")
README_START, README_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
# Names the metrics use in their "<name> is undefined (...)" warnings.
WARNING_NAMES = {"AUROC-Alignment": "auroc_alignment", "R-LKappa": "r_lkappa", "RLI": "rli", "AUROC": "auroc",
                 "AUPRC": "auprc"}

GENERAL_INSTRUCTIONS = [
    "Explain in two sentences why the sky is blue.",
    "Give three tips for staying focused while studying.",
    "Write a short, friendly email inviting a colleague to lunch on Friday.",
    "What is the difference between a virus and a bacterium?",
    "Summarize the plot of Romeo and Juliet in three sentences.",
    "How do I make a simple tomato sauce for pasta?",
    "Explain what a list comprehension is in Python, with an example.",
    "Describe the water cycle to a ten-year-old.",
]
"""General requests whose answers by the base model (written before any training) measure language retention."""

# The smoke size: every value can be overridden on the command line (or in a --config YAML file).
SMOKE_DEFAULTS = dict(
    CPU_DEFAULTS,
    output_dir="outputs/benchmark-clinifact",
    max_steps=2,
    per_device_train_batch_size=1,
    gradient_accumulation_steps=1,
    warmup_steps=0,
    max_length=352,
    logging_steps=1,
    max_train_samples=16,
    max_validation_samples=8,
    max_eval_samples=8,
    max_prompt_tokens=256,
    max_new_tokens=32,
    teacher_max_new_tokens=48,
    teacher_retries=0,
    retention_max_new_tokens=32,
)

# The training budget every trained method shares, read from the one `CLSGenConfig` of the run.
BUDGET_FIELDS = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "optim", "seed", "bf16", "fp16", "use_cpu",
    "activation_checkpointing", "logging_steps", "report_to", "save_strategy",
)


@dataclass
class BenchmarkArguments(ScriptArguments):
    """The recipe's data and explanation arguments (see `clsgen-hf train --help`), plus the benchmark's own.

    `max_eval_samples` is the number of test rows; 0 means all rows for the three `max_*_samples`.
    """

    max_validation_samples: int | None = field(
        default=8, metadata={"help": "Validation rows (threshold tuning only); 0 = all."}
    )
    methods: list[str] = field(
        default_factory=lambda: list(METHODS),
        metadata={"help": f"Methods to run, among {list(METHODS)}."},
    )
    retention_max_new_tokens: int = field(
        default=48, metadata={"help": "Length of the base model's reference answers for language retention."}
    )
    plots: bool = field(default=True, metadata={"help": "Draw ROC curves and reliability diagrams (matplotlib)."})
    readme: str | None = field(
        default=None,
        metadata={"help": f"Also paste benchmark_results.md into this Markdown file, between the lines "
                          f"{README_START!r} and {README_END!r} (how the project README gets its table)."},
    )
    def __post_init__(self):
        if self.train_file or self.test_file:
            raise ValueError("The benchmark runs on CliniFact (--data_dir); --train_file/--test_file are for `clsgen-hf train`.")
        super().__post_init__()
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"Unknown methods {unknown}; choose among {list(METHODS)}.")


@dataclass
class MethodResult:
    """What one method produced on the validation and test rows (positive-class probabilities)."""

    validation_probabilities: list[float]
    test_probabilities: list[float]
    explanations: list[str] | None
    train_seconds: float
    predict_seconds: float
    lm_perplexity: float | None


@dataclass
class Bench:
    """Everything the methods share: the rows, the base model, the budget."""

    args: BenchmarkArguments
    training_args: CLSGenConfig
    model_args: ModelConfig
    output_dir: Path
    base: str
    tokenizer: object
    template: object
    train: Dataset
    validation: Dataset
    test: Dataset
    reference: dict
    device: torch.device

    @property
    def budget(self) -> dict:
        return {name: getattr(self.training_args, name) for name in BUDGET_FIELDS}

    def load(self, model_class, **kwargs):
        return model_class.from_pretrained(self.base, **kwargs).to(self.device).eval()

    def predict(self, model, rows: Dataset, **kwargs) -> list[dict]:
        kwargs = {"batch_size": self.args.predict_batch_size, "max_new_tokens": self.args.max_new_tokens, **kwargs}
        return predict(model, self.tokenizer, rows["prompt"], prompt_template=self.template, show_progress=False, **kwargs)

    def verdict_predictions(self, model) -> tuple[list[float], list[dict], float]:
        """Validation probabilities, test records and test prediction time of an LM asked for reasoning + verdict."""
        model.eval()
        validation = self.predict(model, self.validation, probability_from="verdict")
        started = time.time()
        test = self.predict(model, self.test, probability_from="verdict")
        return _positive(validation), test, time.time() - started


# --------------------------------------------------------------------------------------------------- methods


def run_prompting(bench: Bench, base_lm) -> MethodResult:
    validation, test, seconds = bench.verdict_predictions(base_lm)
    return MethodResult(validation, _positive(test), _explanations_of(test), 0.0, seconds,
                        perplexity(base_lm, bench.tokenizer, bench.reference))


def run_discriminative(bench: Bench, base_lm) -> MethodResult:
    model = bench.load(AutoModelForSequenceClassification, num_labels=2)
    model.config.pad_token_id = bench.tokenizer.pad_token_id
    peft_config = get_peft_config(bench.model_args)
    if peft_config is not None:
        peft_config.task_type = "SEQ_CLS"  # PEFT then trains and saves `score` fully, next to the adapters
        model = get_peft_model(model, peft_config)
    ids, _ = encode_prompts(bench.tokenizer, bench.train["prompt"])
    trainer = Trainer(
        model=model,
        args=TrainingArguments(str(bench.output_dir / "discriminative"), **bench.budget),
        train_dataset=Dataset.from_dict({"input_ids": ids, "labels": bench.train["label"]}),
        data_collator=DataCollatorWithPadding(bench.tokenizer),
    )
    started = time.time()
    trainer.train()
    train_seconds = time.time() - started
    classifier = _merged(trainer.model)
    validation = bench.predict(classifier, bench.validation, max_new_tokens=0)
    started = time.time()
    test = bench.predict(classifier, bench.test, max_new_tokens=0)
    # The tuned backbone under the base model's own lm_head, asked for an explanation and verdict.
    lm = copy.deepcopy(base_lm)
    lm.model.load_state_dict(classifier.model.state_dict())
    explained = bench.predict(lm, bench.test, probability_from="verdict")
    predict_seconds = time.time() - started
    return MethodResult(_positive(validation), _positive(test), _explanations_of(explained), train_seconds,
                        predict_seconds, perplexity(lm, bench.tokenizer, bench.reference))


def run_sft(bench: Bench, base_lm) -> MethodResult:
    trainer = SFTTrainer(
        bench.load(AutoModelForCausalLM),
        args=SFTConfig(str(bench.output_dir / "sft"), max_length=bench.training_args.max_length, **bench.budget),
        train_dataset=bench.train.select_columns(["prompt", "completion"]),
        processing_class=bench.tokenizer,
        peft_config=get_peft_config(bench.model_args),
    )
    started = time.time()
    trainer.train()
    train_seconds = time.time() - started
    lm = _merged(trainer.model)
    validation, test, seconds = bench.verdict_predictions(lm)
    return MethodResult(validation, _positive(test), _explanations_of(test), train_seconds, seconds,
                        perplexity(lm, bench.tokenizer, bench.reference))


def run_tfidf(bench: Bench, base_lm) -> MethodResult:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def texts(rows: Dataset) -> list[str]:  # the user message: the same (middle-cut) text the LLMs read
        return [prompt[-1]["content"] for prompt in rows["prompt"]]

    classifier = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=1000)
    )
    started = time.time()
    classifier.fit(texts(bench.train), bench.train["label"])
    train_seconds = time.time() - started
    validation = classifier.predict_proba(texts(bench.validation))[:, 1]
    started = time.time()
    test = classifier.predict_proba(texts(bench.test))[:, 1]
    return MethodResult(validation.tolist(), test.tolist(), None, train_seconds, time.time() - started, None)


def run_clsgen(bench: Bench, base_lm) -> MethodResult:
    """The library's recipe (`clsgen_hf.commands.train.train_clsgen`), then the saved model as users load it."""
    training_args = copy.copy(bench.training_args)
    training_args.output_dir = str(bench.output_dir / "clsgen")
    model = load_model(bench.base)
    # Calibration and threshold come from the head alone on the validation rows and are saved with the model.
    _, train_seconds, _ = train_clsgen(model, bench.tokenizer, bench.train, bench.template, training_args, bench.model_args,
                                    validation=bench.validation, batch_size=bench.args.predict_batch_size)
    del model
    model, tokenizer = load_model_and_tokenizer(training_args.output_dir)
    model.to(bench.device).eval()
    validation = bench.predict(model, bench.validation, max_new_tokens=0)
    started = time.time()
    test = bench.predict(model, bench.test)
    predict_seconds = time.time() - started
    return MethodResult(_positive(validation), _positive(test), _explanations_of(test), train_seconds, predict_seconds,
                        perplexity(model, tokenizer, bench.reference))


RUNNERS = {
    "prompting": run_prompting,
    "discriminative": run_discriminative,
    "sft": run_sft,
    "tfidf": run_tfidf,
    "clsgen": run_clsgen,
}


# --------------------------------------------------------------------------------------------------- shared parts


def prepare_base_model(model_name_or_path: str | None, output_dir: Path) -> str:
    """A `from_pretrained` source for every method: GGUF files (the embedded default) are converted once to
    `<output_dir>/base_model`, so that each method loads plain weights in a second instead of de-quantizing."""
    source, kwargs = resolve_model_source(model_name_or_path)
    if "gguf_file" not in kwargs:
        return source
    folder = output_dir / "base_model"
    if not (folder / "config.json").is_file():
        logger.info("Converting %s/%s to %s (once)", source, kwargs["gguf_file"], folder)
        model = load_model(model_name_or_path, model_class=AutoModelForCausalLM)
        model.save_pretrained(folder)
        load_tokenizer(model_name_or_path, eos_token_id=model.config.eos_token_id).save_pretrained(folder)
    return str(folder)


def stratified_subset(dataset: Dataset, n: int | None, seed: int) -> Dataset:
    """`n` rows keeping the label proportions (both classes present), or all rows for `n` None/0/too large."""
    if not n or n >= len(dataset):
        return dataset
    indices, _ = train_test_split(
        np.arange(len(dataset)), train_size=n, stratify=dataset["label"], random_state=seed
    )
    return dataset.select(sorted(indices.tolist()))


def load_splits(args: BenchmarkArguments, tokenizer, seed: int) -> dict[str, Dataset]:
    """The train/validation/test rows: stratified subsets first, then prompts fitted to `max_prompt_tokens`."""
    template = CLINIFACT_BINARY_TEMPLATE
    if args.clinifact_view != "binary":
        raise ValueError("The benchmark uses CliniFact's binary view (as the CLSGen paper does).")
    data = load_clinifact(clinifact_dir(args), view="binary")
    sizes = {"train": args.max_train_samples, "validation": args.max_validation_samples, "test": args.max_eval_samples}
    return {
        split: fit_prompts(stratified_subset(data[split], n, seed), template, tokenizer, args.max_prompt_tokens)
        for split, n in sizes.items()
    }


def language_reference(base_lm, tokenizer, output_dir: Path, max_new_tokens: int, source: str) -> dict:
    """The base model's answers to `GENERAL_INSTRUCTIONS`, written before any training and cached."""
    path = output_dir / "language_reference.json"
    settings = {"model": source, "max_new_tokens": max_new_tokens, "instructions": GENERAL_INSTRUCTIONS}
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if {key: cached.get(key) for key in settings} == settings:
            return cached
    teacher = TransformersTeacher(model=base_lm, tokenizer=tokenizer, name="base")
    answers = teacher.generate([[{"role": "user", "content": q}] for q in GENERAL_INSTRUCTIONS],
                               max_new_tokens=max_new_tokens)
    reference = {**settings, "answers": answers}
    path.write_text(json.dumps(reference, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return reference


@torch.no_grad()
def perplexity(model, tokenizer, reference: dict) -> float:
    """Perplexity of `model`'s language-model head on the reference answers (answer tokens only)."""
    encoded = encode_examples(tokenizer, reference["instructions"], reference["answers"])
    width = max(map(len, encoded.input_ids))
    device = model.device
    input_ids = torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in encoded.input_ids], device=device)
    labels = torch.tensor([x + [-100] * (width - len(x)) for x in encoded.labels], device=device)
    attention_mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in encoded.input_ids], device=device)
    model.eval()
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    loss = out.lm_loss if getattr(out, "lm_loss", None) is not None else out.loss
    return float(torch.exp(loss.float()))


def _merged(model):
    return (model.merge_and_unload() if is_peft_model(model) else model).eval()


def _positive(records: list[dict]) -> list[float]:
    return [record["probability"][1] for record in records]


def _explanations_of(records: list[dict]) -> list[str]:
    return [record["explanation"] for record in records]


# --------------------------------------------------------------------------------------------------- evaluation


def evaluate(result: MethodResult, validation_labels, test_labels, verdict_format, base_perplexity: float) -> dict:
    """The table's numbers for one method; `undefined` names (with the reason) the metrics that are NaN on these
    rows, `not_applicable` those the method cannot have (no explanation, no language model)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        report = classification_report(
            result.test_probabilities, test_labels,
            validation_probabilities=result.validation_probabilities, validation_labels=validation_labels,
        )
        alignment = {}
        if result.explanations is not None:
            alignment = alignment_report(result.test_probabilities, result.explanations, verdict_format=verdict_format,
                                         threshold=report["threshold"])  # the rule the method decides with
    undefined = {}
    for warning in caught:
        message = str(warning.message)
        for name, key in WARNING_NAMES.items():
            if message.startswith(f"{name} is undefined"):
                undefined[key] = message
    row = {key: report[key] for key in ("auroc", "auprc", "f1", "brier", "ece", "log_loss", "threshold")}
    row["f1_tuned"] = report["f1_at_threshold"]
    row.update({key: alignment.get(key) for key in ALIGNMENT_KEYS})
    row["lm_perplexity"] = result.lm_perplexity
    row["language_retention"] = None if result.lm_perplexity is None else base_perplexity / result.lm_perplexity
    row["train_seconds"], row["predict_seconds"] = result.train_seconds, result.predict_seconds
    row["not_applicable"] = ([*ALIGNMENT_KEYS] if result.explanations is None else []) + (
        ["lm_perplexity", "language_retention"] if result.lm_perplexity is None else []
    )
    for key, value in row.items():
        if isinstance(value, float) and math.isnan(value):
            row[key] = None
            undefined.setdefault(key, "NaN")
    row["undefined"] = undefined
    row["reliability"] = report["reliability"]
    fpr, tpr, _ = roc_curve(test_labels, result.test_probabilities)
    row["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return row


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


# --------------------------------------------------------------------------------------------------- main


def make_parser() -> TrlParser:
    parser = TrlParser((BenchmarkArguments, CLSGenConfig, ModelConfig), prog="benchmark_clinifact.py",
                       description=__doc__.split("\n\n")[0])
    parser.set_defaults_with_config(**SMOKE_DEFAULTS)
    return parser


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, training_args, model_args = make_parser().parse_args_and_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return run(args, training_args, model_args, command=" ".join(["python examples/benchmark_clinifact.py", *argv]))


def run(args: BenchmarkArguments, training_args: CLSGenConfig, model_args: ModelConfig, command: str = "") -> dict:
    """Run the benchmark; returns the results (also written to `<output_dir>/benchmark_results.json`)."""
    started = time.time()
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not training_args.use_cpu else "cpu")
    base = prepare_base_model(model_args.model_name_or_path, output_dir)
    tokenizer = load_tokenizer(base)
    splits = load_splits(args, tokenizer, training_args.seed)
    base_lm = AutoModelForCausalLM.from_pretrained(base).to(device).eval()
    base_lm.generation_config.pad_token_id = tokenizer.pad_token_id
    reference = language_reference(base_lm, tokenizer, output_dir, args.retention_max_new_tokens, base)
    base_perplexity = perplexity(base_lm, tokenizer, reference)

    synthesis_started = time.time()
    explained = _explanations(args, splits["train"], CLINIFACT_BINARY_TEMPLATE, base_lm, tokenizer, output_dir)
    synthesis_seconds = time.time() - synthesis_started
    if len(set(explained["label"])) < 2:
        raise ValueError(f"The teacher explained {len(explained)} training rows, not both classes; use more rows "
                         "(--max_train_samples), retries (--teacher_retries) or a stronger --teacher.")
    bench = Bench(args, training_args, model_args, output_dir, base, tokenizer, CLINIFACT_BINARY_TEMPLATE,
                  explained, splits["validation"], splits["test"], reference, device)

    verdict_format = CLINIFACT_BINARY_TEMPLATE.verdict_format
    results = {}
    for method in [m for m in METHODS if m in args.methods]:
        logger.info("=== %s ===", METHODS[method])
        set_seed(training_args.seed)
        result = RUNNERS[method](bench, base_lm)
        results[method] = evaluate(result, bench.validation["label"], bench.test["label"], verdict_format,
                                   base_perplexity)
        _save_predictions(output_dir / f"predictions_{method}.jsonl", bench.test, result)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    config = _configuration(bench, splits, explained, synthesis_seconds, base_perplexity, command)
    config["plots"] = draw_plots(output_dir, results) if args.plots else []
    config["total_seconds"] = round(time.time() - started, 1)
    table = write_report(output_dir, results, config)
    if args.readme:
        paste_into_readme(Path(args.readme), table)
    payload = {"config": config, "results": results}
    (output_dir / "benchmark_results.json").write_text(json.dumps(json_safe(payload), indent=2, default=str) + "\n")
    print("\n" + table)
    logger.info("Wrote %s in %.0f s", output_dir / "benchmark_results.md", time.time() - started)
    return payload


def _configuration(bench: Bench, splits, explained: Dataset, synthesis_seconds: float, base_perplexity: float,
                   command: str) -> dict:
    import peft
    import sklearn
    import transformers
    import trl

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
        "explanations": _explanation_source(bench.args, splits["train"], explained, synthesis_seconds),
        "base_perplexity": base_perplexity,
        "arguments": asdict(bench.args),
        "training_arguments": bench.training_args.to_dict(),
        "model_arguments": asdict(bench.model_args),
        "versions": {"python": platform.python_version(), "clsgen_hf": clsgen_hf.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__, "peft": peft.__version__,
                     "scikit-learn": sklearn.__version__},
    }


def _explanation_source(args: BenchmarkArguments, asked: Dataset, explained: Dataset, seconds: float) -> dict:
    column = explanation_column(args, asked)
    if column:
        return {"column": column, "seconds": round(seconds, 1)}
    return {"teacher": args.teacher or "self", "seconds": round(seconds, 1),
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


def _save_predictions(path: Path, rows: Dataset, result: MethodResult) -> None:
    explanations = result.explanations or [None] * len(rows)
    with path.open("w", encoding="utf-8") as file:
        for label, probability, explanation in zip(rows["label"], result.test_probabilities, explanations):
            record = {"label": label, "probability": probability, "explanation": explanation}
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
