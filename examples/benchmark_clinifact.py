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
5. CLSGen: this library's recipe (`clsgen_hf.training.train_clsgen`): joint LoRA training of both heads.

Explanations are synthesized once (one teacher pass, cached in the output folder) and shared by SFT and CLSGen; every
method trains on the rows the teacher explained. The validation rows tune the F1 threshold (and calibrate CLSGen's
head, as the recipe does). As in the recipe,
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

import gc
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_curve
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, set_seed
from trl import ModelConfig, TrlParser

from clsgen_hf import CLSGenConfig, load_model, load_tokenizer
from clsgen_hf.arguments import PromptArguments, TeacherArguments
from clsgen_hf.commands.train import CPU_DEFAULTS, SHARED_CLINIFACT, ScriptArguments, explanation_column
from clsgen_hf.data import CLINIFACT_BINARY_TEMPLATE, fit_prompts, load_clinifact, training_explanations
from clsgen_hf.data.splits import stratified_split
from clsgen_hf.errors import UsageError
from clsgen_hf.evaluation import evaluate_predictions
from clsgen_hf.loading import resolve_model_source
from clsgen_hf.metrics import classification_report, positive_scores, tune_threshold
from clsgen_hf.model_card import json_safe
from clsgen_hf.prompt_template import PromptTemplate
from clsgen_hf.verdicts import VerdictFormat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark.methods import RUNNERS, Bench, MethodResult, language_reference, perplexity  # noqa: E402
from benchmark.report import (  # noqa: E402
    ALIGNMENT_KEYS,
    METHODS,
    README_END,
    README_START,
    draw_plots,
    explanation_source,
    paste_into_readme,
    run_configuration,
    write_report,
)


logger = logging.getLogger("clsgen_hf.benchmark")

# Names the metrics use in their "<name> is undefined (...)" warnings.
WARNING_NAMES = {"AUROC-Alignment": "auroc_alignment", "R-LKappa": "r_lkappa", "RLI": "rli", "AUROC": "auroc",
                 "AUPRC": "auprc"}

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


@dataclass
class BenchmarkArguments(ScriptArguments):
    """The recipe's data arguments (see `clsgen-hf train --help`), plus the benchmark's own.

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
        if self.train_file or self.test_file or self.validation_file:
            raise UsageError("The benchmark runs on CliniFact (--data_dir); --train_file/--test_file are for "
                             "`clsgen-hf train`.")
        if self.clinifact_view != "binary":
            raise UsageError("The benchmark uses CliniFact's binary view (as the CLSGen paper does).")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise UsageError(f"Unknown methods {unknown}; choose among {list(METHODS)}.")


def make_parser() -> TrlParser:
    parser = TrlParser((BenchmarkArguments, PromptArguments, TeacherArguments, CLSGenConfig, ModelConfig),
                       prog="benchmark_clinifact.py", description=__doc__.split("\n\n")[0])
    parser.set_defaults_with_config(**SMOKE_DEFAULTS)
    return parser


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    options = make_parser().parse_args_and_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return run(*options, command=" ".join(["python examples/benchmark_clinifact.py", *argv]))


def run(args: BenchmarkArguments, prompt: PromptArguments, teacher: TeacherArguments, training_args: CLSGenConfig,
        model_args: ModelConfig, command: str = "") -> dict:
    """Run the benchmark; returns the results (also written to `<output_dir>/benchmark_results.json`)."""
    started = time.time()
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not training_args.use_cpu else "cpu")
    base = prepare_base_model(model_args.model_name_or_path, output_dir)
    tokenizer = load_tokenizer(base)
    splits, template = load_splits(args, prompt, tokenizer, training_args.seed)
    base_lm = AutoModelForCausalLM.from_pretrained(base).to(device).eval()
    base_lm.generation_config.pad_token_id = tokenizer.pad_token_id
    reference = language_reference(base_lm, tokenizer, output_dir, args.retention_max_new_tokens, base)
    base_perplexity = perplexity(base_lm, tokenizer, reference)

    synthesis_started = time.time()
    column = explanation_column(args, teacher, splits["train"])
    explained = training_explanations(
        splits["train"], template, rationale_column=column, output_dir=output_dir,
        teacher=None if column else teacher.make_teacher(base_lm, tokenizer), **teacher.synthesis_kwargs(),
    )
    explanations = explanation_source(column, teacher.teacher, explained, time.time() - synthesis_started)
    bench = Bench(training_args, model_args, output_dir, base, tokenizer, template, explained, splits["validation"],
                  splits["test"], reference, device, args.predict_batch_size, args.max_new_tokens)

    results = {}
    for method in [m for m in METHODS if m in args.methods]:
        logger.info("=== %s ===", METHODS[method])
        set_seed(training_args.seed)
        result = RUNNERS[method](bench, base_lm)
        results[method] = evaluate(result, bench.validation["label"], bench.test["label"], template.verdict_format,
                                   base_perplexity)
        _save_predictions(output_dir / f"predictions_{method}.jsonl", bench.test, result)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    options = {"arguments": asdict(args), "prompt_arguments": asdict(prompt), "teacher_arguments": asdict(teacher),
               "training_arguments": training_args.to_dict(), "model_arguments": asdict(model_args)}
    config = run_configuration(bench, options, splits, explanations, base_perplexity, command)
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


def load_splits(args: BenchmarkArguments, prompt: PromptArguments, tokenizer: PreTrainedTokenizerBase,
                seed: int) -> tuple[dict[str, Dataset], PromptTemplate]:
    """The train/validation/test rows (stratified subsets first, then prompts fitted to the template's budget) and
    the template: CliniFact's binary one, with the prompt options given."""
    data_dir = Path(args.data_dir) if args.data_dir else SHARED_CLINIFACT
    if not (data_dir / "train.csv").is_file():
        raise UsageError(f"No CliniFact data at {data_dir.resolve()}: pass --data_dir.")
    template = prompt.build_template(CLINIFACT_BINARY_TEMPLATE)
    data = load_clinifact(data_dir, view="binary", prompt_template=template)
    sizes = {"train": args.max_train_samples, "validation": args.max_validation_samples, "test": args.max_eval_samples}
    return {split: fit_prompts(stratified_subset(data[split], n, seed), template, tokenizer, template.max_prompt_tokens)
            for split, n in sizes.items()}, template


def stratified_subset(rows: Dataset, n: int | None, seed: int) -> Dataset:
    """`n` rows in the label proportions, both classes kept (`stratified_split`); every row for `n` None/0/too large."""
    if not n or n >= len(rows):
        return rows
    return stratified_split(rows, (n - 0.5) / len(rows), seed)[1]  # a share that rounds up to exactly n rows


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


def evaluate(result: MethodResult, validation_labels: Sequence[int], test_labels: Sequence[int],
             verdict_format: VerdictFormat | None, base_perplexity: float) -> dict:
    """The table's numbers for one method: `evaluate_predictions` at the threshold tuned on its validation rows, plus
    F1 at 0.5, language retention and times. `undefined` names (with the reason) the metrics that are NaN on these
    rows, `not_applicable` those the method cannot have (no explanation, no language model)."""
    scores = _scores(result.test)
    threshold = tune_threshold(_scores(result.validation), validation_labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        numbers = evaluate_predictions(result.test, test_labels, verdict_format=verdict_format, threshold=threshold)
        f1_at_half = classification_report(scores, test_labels)["f1"]
    undefined = {}
    for warning in caught:
        message = str(warning.message)
        for name, key in WARNING_NAMES.items():
            if message.startswith(f"{name} is undefined"):
                undefined[key] = message
    row = {key: numbers[key] for key in ("auroc", "auprc", "brier", "ece", "log_loss", "threshold")}
    row["f1"], row["f1_tuned"] = f1_at_half, numbers["f1"]
    row.update({key: numbers.get(key) for key in ALIGNMENT_KEYS})
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
    row["reliability"] = numbers["reliability"]
    fpr, tpr, _ = roc_curve(test_labels, scores)
    row["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return row


def _scores(records: list[dict]) -> list[float]:
    """Positive-class probabilities of `predict`-style records."""
    return positive_scores([record["probability"] for record in records]).tolist()


def _save_predictions(path: Path, rows: Dataset, result: MethodResult) -> None:
    explanations = result.explanations or [None] * len(rows)
    with path.open("w", encoding="utf-8") as file:
        for label, probability, explanation in zip(rows["label"], _scores(result.test), explanations):
            record = {"label": label, "probability": probability, "explanation": explanation}
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
