# /// script
# requires-python = ">=3.11"
# dependencies = ["clsgen_hf", "matplotlib"]
# ///
"""Benchmark on CliniFact: CLSGen against the approaches the CLSGen paper (arXiv 2604.11801) compares it with.

Every method sees the same train/validation/test rows, the same base model and, where it trains, the same budget and
seed (steps, batch, learning rate, LoRA settings, precision: one `CLSGenConfig` + `ModelConfig` read by all of them):

1. Prompting: the base instruct model's probability of each verdict word right after the prompt and "Answer:"
   (`predict(probability_from="verdict", max_new_tokens=0)`); its explanations are generated separately.
2. Discriminative fine-tuning: `LlamaForSequenceClassification` + LoRA (+ `score`) with the transformers `Trainer`;
   its explanations come from the tuned backbone under the ORIGINAL `lm_head` (where linguistic collapse shows).
3. Explanation SFT: TRL's `SFTTrainer` on the explanations only; probability and explanations as in 1.
4. TF-IDF + logistic regression (scikit-learn) on the same prompt text; no explanation, no language model.
5. CLSGen: this library's recipe (`clsgen_hf.training.train_clsgen`): joint LoRA training of both heads.

Every method's raw probabilities are calibrated by one procedure on the same validation rows (`fit_calibration`, then
the F1 threshold tuned on the calibrated probabilities: `fit_decision_rule`'s rule), ECE reported before and after.
Probability metrics (AUROC with a bootstrap 95% interval, AUPRC, F1 at the tuned threshold, Brier, ECE, log-loss) are
on every test row and on the disjoint subset (test rows whose abstract is in none of the training rows used:
CliniFact pairs one abstract with several claims); a paired bootstrap gives CLSGen - SeqCls. Explanation metrics
(agreement with the head, AUROC-Alignment, R-LKappa, RLI, readability, loops, ending at the verdict) are on
`--max_explained_samples` stratified test rows; language retention on the base model's answers to general requests.

Explanations for training are CliniFact's registry rationales unless a `--teacher` is named (the embedded
SmolLM2-135M explains almost no row in the teacher's format); SFT and CLSGen train on the same ones.

Resumable: each method's result (per seed, with its raw per-row predictions) is written to `<output_dir>/results/`
as soon as it is finished; a rerun with the same options skips it (a changed option recomputes it). Two processes
with different `--methods` can share an output folder; a last run with every method then writes the report.

Outputs in --output_dir: `benchmark_results.json` (every number, the configuration, the row ids, the per-row
predictions of every method and seed), `benchmark_results.md` (the tables; `--readme` pastes it between the
benchmark markers), `roc_curves.png` and `reliability_diagrams.png`, and the caches (`base_model/`,
`teacher_cache.jsonl`, `language_reference.json`).

Usage:

    # The mid-size CPU run (the defaults: 256 train / 64 validation / all 394 test rows, 128 explained), in the
    # background; one thread per process
    OMP_NUM_THREADS=1 nohup python examples/benchmark_clinifact.py --output_dir outputs/benchmark-clinifact-mid \\
        --readme README.md > benchmark.log 2>&1 &

    # Tiny (a dry run of every step, minutes)
    python examples/benchmark_clinifact.py --output_dir /tmp/bench --max_train_samples 16 \\
        --max_validation_samples 8 --max_eval_samples 12 --max_explained_samples 4 --max_steps 2 \\
        --per_device_train_batch_size 1 --gradient_accumulation_steps 1 --max_new_tokens 16

    # Full size on a GPU: examples/gpu/benchmark_gpu.py
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, set_seed
from trl import ModelConfig, TrlParser

from clsgen_hf import CLSGenConfig, load_model, load_tokenizer
from clsgen_hf.atomic import write_text_atomic
from clsgen_hf.commands.options import PromptArguments, TeacherArguments
from clsgen_hf.commands.train import CPU_DEFAULTS, SHARED_CLINIFACT, ScriptArguments, explanation_column
from clsgen_hf.data import CLINIFACT_BINARY_TEMPLATE, fit_prompts, load_clinifact, training_explanations
from clsgen_hf.data.splits import stratified_split
from clsgen_hf.errors import UsageError
from clsgen_hf.json_files import json_safe
from clsgen_hf.loading import resolve_model_source
from clsgen_hf.prompt_template import PromptTemplate


sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark.methods import RUNNERS, Bench, language_reference, perplexity  # noqa: E402
from benchmark.report import (  # noqa: E402
    METHODS,
    README_END,
    README_START,
    draw_plots,
    explanation_source,
    paste_into_readme,
    run_configuration,
    write_report,
)
from benchmark.scoring import compare, pool_seeds, score_run  # noqa: E402
from benchmark.stats import disjoint_rows  # noqa: E402
from benchmark.store import ResultStore, options_key  # noqa: E402


logger = logging.getLogger("clsgen_hf.benchmark")

# The mid-size CPU run: every value can be overridden on the command line (or in a --config YAML file).
MID_SIZE_DEFAULTS = dict(
    CPU_DEFAULTS,
    output_dir="outputs/benchmark-clinifact",
    max_steps=-1,
    num_train_epochs=1.0,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    warmup_steps=0,
    max_length=352,
    logging_steps=4,
    max_train_samples=256,
    max_validation_samples=64,
    max_eval_samples=0,
    max_prompt_tokens=256,
    max_new_tokens=64,
    teacher_max_new_tokens=48,
    teacher_retries=0,
    retention_max_new_tokens=32,
)
UNTRAINED = {"prompting"}  # greedy decoding of the base model: the seed changes nothing
# Options that change what is reported, not what a method computes: left out of the results' key.
PRESENTATION = {"arguments": ("methods", "seeds", "plots", "readme", "bootstrap_samples"),
                "training_arguments": ("output_dir", "logging_dir", "run_name", "seed", "logging_steps",
                                       "disable_tqdm")}


@dataclass
class BenchmarkArguments(ScriptArguments):
    """The recipe's data arguments (see `clsgen-hf train --help`), plus the benchmark's own.

    `max_eval_samples` is the number of test rows; 0 means all rows for the `max_*_samples` options.
    """

    max_validation_samples: int | None = field(
        default=64, metadata={"help": "Validation rows (calibration and threshold); 0 = all."}
    )
    max_explained_samples: int = field(
        default=128, metadata={"help": "Test rows (stratified) whose explanations are generated and scored; 0 = all."}
    )
    methods: list[str] = field(
        default_factory=lambda: list(METHODS),
        metadata={"help": f"Methods to run, among {list(METHODS)}."},
    )
    seeds: list[int] | None = field(
        default=None, metadata={"help": "Training seeds, one run of each method per seed (default: --seed)."}
    )
    bootstrap_samples: int = field(default=1000, metadata={"help": "Bootstrap resamples of the test rows."})
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
    parser.set_defaults_with_config(**MID_SIZE_DEFAULTS)
    return parser


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    options = make_parser().parse_args_and_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return run(*options, command=" ".join(["python examples/benchmark_clinifact.py", *argv]))


def run(args: BenchmarkArguments, prompt: PromptArguments, teacher: TeacherArguments, training_args: CLSGenConfig,
        model_args: ModelConfig, command: str = "") -> dict:
    """Run every method not yet saved under these options, then score them all; returns the results (also written to
    `<output_dir>/benchmark_results.json`)."""
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
    test = splits["test"]
    bench = Bench(training_args, model_args, output_dir, base, tokenizer, template, explained, splits["validation"],
                  test, stratified_positions(test["label"], args.max_explained_samples, training_args.seed),
                  disjoint_rows(test["article_abstract"], splits["train"]["article_abstract"]), reference, device,
                  args.predict_batch_size, args.max_new_tokens)

    options = {"arguments": asdict(args), "prompt_arguments": asdict(prompt), "teacher_arguments": asdict(teacher),
               "training_arguments": training_args.to_dict(), "model_arguments": asdict(model_args)}
    store = ResultStore(output_dir / "results", options_key(result_options(options)))
    seeds = args.seeds or [training_args.seed]
    methods = [method for method in METHODS if method in args.methods]
    saved, seconds_here = run_methods(bench, base_lm, store, methods, seeds)

    verdict_format = template.verdict_format
    per_method = {method: {seed: score_run(result, bench.validation["label"], test["label"],
                                           {"explained": bench.explained, "disjoint": bench.disjoint},
                                           verdict_format, base_perplexity)
                           for seed, result in by_seed.items()} for method, by_seed in saved.items()}
    rows = {"disjoint": bench.disjoint}
    results = {method: pool_seeds(runs, test["label"], rows, args.bootstrap_samples)
               for method, runs in per_method.items()}
    comparison = compare(per_method, test["label"], rows, args.bootstrap_samples)
    config = run_configuration(bench, options, splits, explanations, base_perplexity, command)
    config["seeds"], config["results_key"] = seeds, store.key
    first_seed = {method: runs[seeds[0]] for method, runs in per_method.items()}
    config["plots"] = draw_plots(output_dir, first_seed) if args.plots else []
    # This invocation's own work (setup, scoring) plus every method's wall time, whichever invocation ran it.
    method_seconds = [result["wall_seconds"] for method, by_seed in saved.items() for seed, result in by_seed.items()
                      if method not in UNTRAINED or seed == seeds[0]]
    config["total_seconds"] = round(time.time() - started - seconds_here + sum(method_seconds), 1)
    table = write_report(output_dir, results, config, comparison)
    if args.readme:
        paste_into_readme(Path(args.readme), table)
    payload = {"config": config, "results": results, "comparison": comparison, "per_seed": per_method,
               "predictions": saved}
    write_text_atomic(output_dir / "benchmark_results.json", json.dumps(json_safe(payload), indent=1, default=str))
    print("\n" + table)
    logger.info("Wrote %s in %.0f s", output_dir / "benchmark_results.md", time.time() - started)
    return payload


def run_methods(bench: Bench, base_lm, store: ResultStore, methods: list[str],
                seeds: list[int]) -> tuple[dict[str, dict[int, dict]], float]:
    """Each method's result per seed: read from `store` when saved under these options, else computed and saved at
    once (a run killed later keeps it). Also returns the wall seconds of the results computed here."""
    saved = {method: {} for method in methods}
    pending = []
    for seed in seeds:
        for method in methods:
            # A method that trains nothing gives every seed the same result: computed once, saved for each seed.
            result = store.load(method, seeds[0] if method in UNTRAINED else seed)
            if result is None:
                pending.append((seed, method))
            else:
                saved[method][seed] = result
                logger.info("%s, seed %d: finished earlier (%s), skipped", METHODS[method], seed,
                            store.path(method, seed))
    for seed, method in tqdm(pending, desc="Methods", unit="method"):
        if method in UNTRAINED and seed != seeds[0]:
            saved[method][seed] = saved[method][seeds[0]]
            store.save(method, seed, saved[method][seed])
            continue
        logger.info("=== %s, seed %d ===", METHODS[method], seed)
        set_seed(seed)
        bench.training_args = copy.copy(bench.training_args)
        bench.training_args.seed = seed
        method_started, cpu_started = time.time(), time.process_time()
        result = asdict(RUNNERS[method](bench, base_lm))
        # CPU seconds too: on shared cores they measure the work, wall seconds the machine's load as well.
        result["wall_seconds"], result["cpu_seconds"] = time.time() - method_started, time.process_time() - cpu_started
        store.save(method, seed, result)
        saved[method][seed] = result
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    results = {method: dict(sorted(by_seed.items())) for method, by_seed in saved.items()}
    computed = {(method, seeds[0] if method in UNTRAINED else seed) for seed, method in pending}
    return results, sum(saved[method][seed]["wall_seconds"] for method, seed in computed)


def result_options(options: dict) -> dict:
    """The options a method's result depends on: every option but those in `PRESENTATION`."""
    return {group: {key: value for key, value in values.items() if key not in PRESENTATION.get(group, ())}
            for group, values in options.items()}


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
    budget = template.max_prompt_tokens
    return {split: fit_prompts(stratified_subset(data[split], n, seed), template, tokenizer, budget)
            for split, n in sizes.items()}, template


def stratified_subset(rows: Dataset, n: int | None, seed: int) -> Dataset:
    """`n` rows in the label proportions, both classes kept (`stratified_split`); all for `n` None/0/too large."""
    if not n or n >= len(rows):
        return rows
    return stratified_split(rows, (n - 0.5) / len(rows), seed)[1]  # a share that rounds up to exactly n rows


def stratified_positions(labels: list[int], n: int, seed: int) -> list[int]:
    """Positions of `n` rows (`stratified_subset` of `labels`); all of them for `n` 0 or too large."""
    rows = Dataset.from_dict({"label": labels, "position": list(range(len(labels)))})
    return list(stratified_subset(rows, n, seed)["position"])


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


if __name__ == "__main__":
    main()
