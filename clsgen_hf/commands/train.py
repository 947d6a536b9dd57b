"""`clsgen-hf train` / `examples/train_clsgen.py`: the whole CLSGen recipe in one run.

1. load a classification dataset (CliniFact by default, or any CSV/JSON Lines/Parquet file by naming its fields);
2. get an explanation for every training row: a dataset column of rationales (on CliniFact by default, its registry
   rationales), or a teacher LLM told the gold label (kept only when its verdict matches);
3. LoRA-train the LM head on the explanations and the `score` head on the labels, jointly;
4. calibrate the head and tune its decision threshold on validation rows (stored in the saved config);
5. predict on held-out rows (probability from the prefill, explanation from the same cache), print AUROC, F1, the
   calibration before and after and the alignment metrics at the stored threshold, three example predictions, and
   save the model, its prompt template, the numbers and a reliability diagram.

Defaults are sized for 2 CPU cores and the embedded SmolLM2-135M-Instruct (about 10 minutes); scale up with
`--max_train_samples`, `--max_eval_samples`, `--num_train_epochs`, `--model_name_or_path`.

Every check of the data and options runs before the model's weights load, and a failed one is one line
(`clsgen-hf train: error: ...`, exit status 2). A run killed after a checkpoint (`--save_strategy steps`) continues
with `--resume_from_checkpoint true` (the last checkpoint in `--output_dir`) or a checkpoint folder; an output folder
holding checkpoints is not trained over from step 0 without it. The teacher's answers are cached in the output folder,
so a rerun asks only for the missing ones.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter

import numpy as np
from dataclasses import dataclass, field, replace
from pathlib import Path

from accelerate import PartialState
from datasets import Dataset
from transformers import AutoConfig, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, TrlParser, get_peft_config

from ..clsgen_config import CLSGenConfig
from ..clsgen_trainer import CLSGenTrainer
from ..data import (
    CLINIFACT_BINARY_TEMPLATE,
    CLINIFACT_MULTICLASS_TEMPLATE,
    CLINIFACT_RATIONALE_COLUMN,
    PromptTemplate,
    TransformersTeacher,
    default_prompt_template,
    describe_dataset,
    fit_prompts,
    load_classification_dataset,
    load_clinifact,
    make_teacher,
    parse_label2id,
    synthesize_explanations,
)
from ..data.teachers import TeacherError
from ..errors import UsageError, report_usage_error
from ..evaluation import evaluate_predictions, fit_decision_rule
from ..inference import PROMPT_TEMPLATE_FILE, predict
from ..loading import load_model, load_tokenizer, resolve_model_source
from ..model_card import write_json
from ..plots import reliability_diagrams
from ..verdicts import NO_VERDICT, VerdictFormat


logger = logging.getLogger("clsgen_hf.train")

SHARED_CLINIFACT = Path("../shared/data/clinifact")
RESULTS_FILE = "clsgen_results.json"
TEACHER_KINDS = ("self", "transformers", "openai", "vllm")
RELIABILITY_FILE = "reliability_diagram.png"

# The CPU-sized recipe: what `make demo` runs. Every value can be overridden on the command line or in `--config`.
CPU_DEFAULTS = dict(
    output_dir="outputs/clsgen-smollm2-clinifact",
    num_train_epochs=1.0,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    learning_rate=1e-3,  # 6 steps: LoRA learns the explanation format at 1e-3, not yet at 5e-4 (measured)
    lr_scheduler_type="constant",
    max_length=384,
    activation_checkpointing=False,  # memory is plenty on a CPU; recomputing costs a third of the step time
    logging_steps=1,
    save_strategy="no",
    eval_strategy="no",
    report_to="none",
    use_peft=True,
    lora_r=16,
    lora_alpha=32,
    lora_dropout=0.0,
    lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
)


@dataclass
class ScriptArguments:
    """Data, explanations and evaluation of the CLSGen recipe."""

    data_dir: str | None = field(
        default=None,
        metadata={"help": "CliniFact folder (train/validation/test CSV). Default: ../shared/data/clinifact if present."},
    )
    clinifact_view: str = field(
        default="binary", metadata={"help": "CliniFact view: 'binary' (evidence vs rest) or 'multiclass'."}
    )
    train_file: str | None = field(
        default=None, metadata={"help": "Your own training data (CSV, JSON Lines or Parquet) instead of CliniFact."}
    )
    test_file: str | None = field(default=None, metadata={"help": "Your own held-out data, same columns as train_file."})
    validation_file: str | None = field(
        default=None,
        metadata={"help": "Your own validation data (calibration and threshold). Default: a stratified slice of "
                  "train_file (--validation_fraction)."},
    )
    validation_fraction: float = field(
        default=0.2, metadata={"help": "Without a validation split: the share of training rows held out for it."}
    )
    text_fields: list[str] | None = field(
        default=None, metadata={"help": "With --train_file: the column(s) holding the text to classify."}
    )
    label_field: str = field(default="label", metadata={"help": "With --train_file: the column holding the label."})
    label2id: str | None = field(
        default=None,
        metadata={"help": "With --train_file: raw label -> id, as JSON ('{\"neg\": 0, \"pos\": 1}'), a JSON list of "
                  "the raw labels in id order, or neg=0,pos=1. Without it labels must be ids 0..N-1."},
    )
    verbalizers: list[str] | None = field(
        default=None,
        metadata={"help": "With --train_file: the verdict word of each label id, in id order (e.g. --verbalizers No "
                  "Yes). Default: the --label2id names, else No Yes."},
    )
    question: str | None = field(
        default=None, metadata={"help": "With --train_file: the task question asked after the text."}
    )
    verdict_prefix: str = field(
        default="Answer:", metadata={"help": "With --train_file: what introduces the verdict line of an explanation."}
    )
    explanation_column: str | None = field(
        default=None,
        metadata={
            "help": "A column of rationales (human-written, say) to train on instead of asking a teacher; a verdict "
            f"line is added where one is missing. Default on CliniFact: its `{CLINIFACT_RATIONALE_COLUMN}` (two "
            "sentences from the row's registry fields and gold label) unless --teacher is named."
        },
    )
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Who writes the explanations when no rationale column is used: 'self' (the base model itself, "
            "the default on your own data), 'transformers[:<model>]', 'openai:<url>' or 'vllm:<model>'. Naming a "
            "teacher on CliniFact replaces its registry rationales (the embedded 135M model is no usable teacher: "
            "it stated the gold verdict for 0 of 48 rows at the first try)."
        },
    )
    teacher_max_new_tokens: int = field(default=96, metadata={"help": "Token budget of each teacher answer."})
    teacher_retries: int = field(
        default=2, metadata={"help": "Sampled re-asks for rows whose explanation did not state the gold verdict."}
    )
    teacher_batch_size: int = field(default=8, metadata={"help": "Rows per teacher generation batch."})
    max_train_samples: int | None = field(default=48, metadata={"help": "Training rows used (None: all)."})
    max_eval_samples: int | None = field(default=16, metadata={"help": "Held-out rows predicted (None: all)."})
    max_validation_samples: int | None = field(
        default=48, metadata={"help": "Validation rows for calibration and the threshold (None: all; head only)."}
    )
    max_prompt_tokens: int = field(
        default=256, metadata={"help": "Longer prompts lose the middle of their longest text field."}
    )
    max_new_tokens: int = field(default=96, metadata={"help": "Explanation budget at prediction time."})
    predict_batch_size: int = field(default=8, metadata={"help": "Prompts per prediction batch."})


    allow_empty_text: bool = field(
        default=False,
        metadata={"help": "Skip rows whose text is empty instead of failing.", "aliases": ["--allow-empty-text"]},
    )
    allow_single_class: bool = field(
        default=False,
        metadata={"help": "Train even when every training row has the same label (warned about; the head then learns "
                  "nothing about the other classes).", "aliases": ["--allow-single-class"]},
    )
    retry_rejected: bool = field(
        default=False,
        metadata={"help": "Ask the teacher again for the rows whose cached answers were not kept (e.g. once the "
                  "teacher is fixed).", "aliases": ["--retry-rejected"]},
    )

    def __post_init__(self):
        if self.explanation_column and self.teacher:
            raise UsageError("Choose --explanation_column (rationales you have) or --teacher (rationales it writes).")
        if self.train_file and (not self.text_fields or not self.test_file):
            raise UsageError("--train_file needs --test_file (held-out rows) and --text_fields (the text columns).")
        if self.teacher and self.teacher.partition(":")[0] not in TEACHER_KINDS:
            raise UsageError(f"--teacher {self.teacher!r}: use 'self', 'transformers[:<model>]', 'openai:<url>' or "
                             "'vllm:<model>'.")


def make_parser() -> TrlParser:
    parser = TrlParser((ScriptArguments, CLSGenConfig, ModelConfig), prog="clsgen-hf train", description=__doc__)
    parser.set_defaults_with_config(**CPU_DEFAULTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        run(script_args, training_args, model_args)
    except UsageError as error:
        return report_usage_error("train", error)
    except TeacherError as error:  # the teacher failed, or kept no explanation for a class
        print(f"clsgen-hf train: error: {error}", file=sys.stderr)
        return 1
    return 0


def run(script_args: ScriptArguments, training_args: CLSGenConfig, model_args: ModelConfig) -> dict:
    """Run the recipe; returns the evaluation numbers (also saved to `<output_dir>/clsgen_results.json`)."""
    output_dir = Path(training_args.output_dir)
    if not script_args.train_file:
        clinifact_dir(script_args)  # a missing folder is reported before the model is loaded
    training_args.resume_from_checkpoint = resume_checkpoint(training_args)
    config = model_config(model_args.model_name_or_path, script_args.max_prompt_tokens)
    tokenizer = load_tokenizer(model_args.model_name_or_path, eos_token_id=config.eos_token_id)
    train_rows, validation_rows, test_rows, template = _load_data(script_args, tokenizer)  # checked before the model
    set_seed(training_args.seed)  # before the model: `score` is initialised at load time
    id2label = dict(sorted(template.verdict_format.verbalizers.items()))  # a new head gets the data's label set
    model = load_model(model_args.model_name_or_path, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with PartialState().main_process_first():  # one process asks the teacher; the others read its cache
        train_dataset = _explanations(script_args, train_rows, template, model, tokenizer, output_dir)
    if len(train_dataset) == 0:
        raise ValueError(
            f"No explanation of the {len(train_rows)} training rows stated its gold verdict, so nothing is left to "
            "train on. Use more rows (--max_train_samples), more re-asks (--teacher_retries), a stronger teacher "
            "(--teacher), or your own rationales (--explanation_column)."
        )

    trainer, train_seconds, rule = train_clsgen(
        model, tokenizer, train_dataset, template, training_args, model_args, validation=validation_rows,
        batch_size=script_args.predict_batch_size,
    )
    if not trainer.is_world_process_zero():
        return {}

    trainer.model.eval()
    started = time.time()
    predictions = predict(
        trainer.model, tokenizer, test_rows["prompt"], prompt_template=template,
        batch_size=script_args.predict_batch_size, max_new_tokens=script_args.max_new_tokens,
        max_prompt_tokens=script_args.max_prompt_tokens,
    )
    calibration = rule["calibration"]
    results = evaluate_predictions(
        predictions, test_rows["label"], verdict_format=template.verdict_format,
        threshold=trainer.model.config.cls_threshold, calibration=calibration,
    )
    before = results["before_calibration"]
    reliability_diagrams({"raw head": before, "calibrated head": results}, output_dir / RELIABILITY_FILE)
    results = {key: value for key, value in results.items() if key not in ("reliability", "before_calibration")}
    results.update(
        before_calibration={key: before[key] for key in ("brier", "ece", "log_loss")}, calibration=calibration.to_dict(),
        validation_rows=len(validation_rows), train_rows=len(train_dataset), test_rows=len(test_rows),
        train_seconds=round(train_seconds, 1), predict_seconds=round(time.time() - started, 1),
        class_shares=(np.bincount(train_dataset["label"], minlength=len(predictions[0]["probability"]))
                      / len(train_dataset)).round(4).tolist(),
        mean_probability=np.mean([p["probability"] for p in predictions], axis=0).round(4).tolist(),
    )
    write_json(output_dir / RESULTS_FILE, results)  # undefined numbers (one test class: AUROC) as null
    trainer.create_model_card()  # now with the evaluation table
    print(_report(results, predictions, test_rows, output_dir))
    return results


def train_clsgen(
    model, tokenizer, train_dataset: Dataset, template: PromptTemplate, training_args: CLSGenConfig,
    model_args: ModelConfig, validation: Dataset | None = None, batch_size: int = 8,
) -> tuple[CLSGenTrainer, float, dict | None]:
    """Steps 3-4: LoRA-train both heads; given `validation` rows, fit the decision rule (`fit_decision_rule`); then
    save the model (merged by default, with the rule in its config) and its prompt template to
    `training_args.output_dir`. Returns the trainer, the training time in seconds and the rule (`None` without
    validation rows)."""
    _set_labels(model, template)
    started = time.time()
    trainer = CLSGenTrainer(
        model, training_args, train_dataset=train_dataset, processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_seconds = time.time() - started
    rule = None
    if validation is not None and trainer.is_world_process_zero():
        trainer.model.eval()
        rule = fit_decision_rule(
            trainer.model, tokenizer, validation["prompt"], validation["label"], batch_size=batch_size,
            max_prompt_tokens=template.max_prompt_tokens,
        )
        logger.info("Decision rule from %d validation rows: %s calibration (temperature %.3f, bias %s), threshold %s.",
                    len(validation), rule["calibration"].method, rule["calibration"].temperature,
                    rule["calibration"].bias, rule["threshold"])
    trainer.save_model()
    if trainer.is_world_process_zero():
        template.to_json_file(Path(training_args.output_dir) / PROMPT_TEMPLATE_FILE)
    return trainer, train_seconds, rule


def _load_data(args: ScriptArguments, tokenizer) -> tuple[Dataset, Dataset, Dataset, PromptTemplate]:
    """The training, validation and held-out rows, subsets first, then their prompts fitted to `max_prompt_tokens`."""
    if args.train_file:
        template = user_prompt_template(args)
        files = {"train": args.train_file, "test": args.test_file}
        if args.validation_file:
            files["validation"] = args.validation_file
        data = load_classification_dataset(
            files, text_fields=args.text_fields, label_field=args.label_field, prompt_template=template,
            label2id=parse_label2id(args.label2id) if args.label2id else None, allow_empty_text=args.allow_empty_text,
        )
    else:
        binary = args.clinifact_view == "binary"
        template = CLINIFACT_BINARY_TEMPLATE if binary else CLINIFACT_MULTICLASS_TEMPLATE
        data = load_clinifact(clinifact_dir(args), view=args.clinifact_view, splits=("train", "validation", "test"),
                              allow_empty_text=args.allow_empty_text)
    template = replace(template, max_prompt_tokens=args.max_prompt_tokens)
    train = data["train"]
    if "validation" in data:
        validation, source = data["validation"], "the dataset's validation split"
    else:
        train, validation = stratified_split(train, args.validation_fraction, seed=0)
        source = f"a stratified {args.validation_fraction:.0%} of the training rows (held out from training)"
    train, validation, test = (
        fit_prompts(_subset(rows, n), template, tokenizer, args.max_prompt_tokens)
        for rows, n in ((train, args.max_train_samples), (validation, args.max_validation_samples),
                        (data["test"], args.max_eval_samples))
    )
    logger.info("Validation rows (calibration and threshold): %d, from %s.", len(validation), source)
    logger.info("Training rows:\n%s", describe_dataset(train, tokenizer))
    check_classes(train["label"], template, args.allow_single_class, "training rows")
    column = explanation_column(args, train)
    if column and column not in train.column_names:
        raise UsageError(f"--explanation_column {column!r}: no such column; the columns are: {train.column_names}.")
    return train, validation, test, template


def check_classes(labels: list[int], template: PromptTemplate, allow_single_class: bool, what: str) -> None:
    """Refuse (or, with `allow_single_class`, warn about) rows that all have one label."""
    counts = Counter(labels)
    if len(counts) > 1:
        return
    only = next(iter(counts))
    message = (f"All {len(labels)} {what} have the label {only} ({template.verdict_format.verbalizers.get(only)}): "
               "the classification head cannot learn to tell classes apart from one class.")
    if not allow_single_class:
        raise UsageError(f"{message} Add rows of the other class(es) (--max_train_samples takes a random subset of "
                         "the file), or pass --allow_single_class to train anyway.")
    logger.warning("%s Training anyway (--allow_single_class).", message)


def resume_checkpoint(training_args: CLSGenConfig) -> str | None:
    """The checkpoint `--resume_from_checkpoint` names (`true`: the last complete one in `output_dir`), or `None`.

    Without the option, an `output_dir` that holds checkpoints is refused: training from step 0 there would
    overwrite them.
    """
    output_dir = Path(training_args.output_dir)
    wanted = training_args.resume_from_checkpoint
    last = get_last_checkpoint(output_dir) if output_dir.is_dir() else None
    if wanted is None or str(wanted).lower() in ("", "false", "none"):
        if last is not None:
            raise UsageError(
                f"{output_dir} holds checkpoints of an earlier run (up to {Path(last).name}): pass "
                "--resume_from_checkpoint true to continue it, or a new --output_dir to start over (this transformers "
                "has no --overwrite_output_dir)."
            )
        return None
    if str(wanted).lower() == "true":
        complete = sorted((p for p in output_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                          key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
        if not complete:
            raise UsageError(f"--resume_from_checkpoint true: {output_dir} holds no complete checkpoint-N folder; "
                             "run without the option to start from step 0.")
        if last is not None and Path(last) != complete[-1]:
            logger.warning("%s is incomplete (the run was killed while saving it); resuming from %s.", last,
                           complete[-1].name)
        checkpoint = complete[-1]
    else:
        checkpoint = Path(wanted)
        if not (checkpoint / "trainer_state.json").is_file():
            raise UsageError(f"--resume_from_checkpoint {wanted}: not a complete checkpoint folder (no "
                             "trainer_state.json).")
    logger.info("Resuming from %s.", checkpoint.name)
    return str(checkpoint)


def model_config(model_name_or_path: str | None, max_prompt_tokens: int):
    """The model's config, read without its weights; a prompt budget above its context length is refused."""
    source, kwargs = resolve_model_source(model_name_or_path)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise UsageError(f"--model_name_or_path {model_name_or_path}: {str(error).splitlines()[0]}") from None
    context = getattr(config, "max_position_embeddings", None)
    if context and max_prompt_tokens > context:
        raise UsageError(f"--max_prompt_tokens {max_prompt_tokens} is above the context length of {source} "
                         f"({context} tokens, max_position_embeddings): use at most {context}.")
    return config


def user_prompt_template(args: ScriptArguments) -> PromptTemplate:
    """The template of `--train_file` data: its text fields, question, verdict prefix and one verbalizer per label."""
    words = args.verbalizers
    if not words and args.label2id:
        names = parse_label2id(args.label2id)
        words = [name for name, _ in sorted(names.items(), key=lambda item: item[1])]
    if words and len(set(words)) != len(words):
        raise UsageError(f"--verbalizers must name each label once, in id order; got {words}.")
    verdict_format = VerdictFormat(dict(enumerate(words or ["No", "Yes"])), prefix=args.verdict_prefix)
    kwargs = {"question": args.question} if args.question else {}
    return default_prompt_template(args.text_fields, verdict_format=verdict_format, **kwargs)


def stratified_split(rows: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(rest, held out): `fraction` of the rows of every label held out, at least one per label."""
    from sklearn.model_selection import train_test_split

    kept, held = train_test_split(
        list(range(len(rows))), test_size=max(fraction, len(set(rows["label"])) / len(rows)), random_state=seed,
        stratify=rows["label"],
    )
    return rows.select(sorted(kept)), rows.select(sorted(held))


def clinifact_dir(args: ScriptArguments) -> Path:
    """The CliniFact folder to read, or an error saying where to put the CSVs."""
    data_dir = Path(args.data_dir) if args.data_dir else SHARED_CLINIFACT
    if not (data_dir / "train.csv").is_file():
        raise UsageError(
            f"No CliniFact data at {data_dir.resolve()}: put train.csv, validation.csv and test.csv there, or "
            "pass --data_dir, or use your own data with --train_file/--test_file/--text_fields."
        )
    return data_dir


def _subset(dataset: Dataset, n: int | None) -> Dataset:
    return dataset if n is None or n >= len(dataset) else dataset.shuffle(seed=0).select(range(n))


def _set_labels(model, template: PromptTemplate) -> None:
    verbalizers = template.verdict_format.verbalizers
    if model.config.num_labels != len(verbalizers):
        raise ValueError(
            f"The model has {model.config.num_labels} labels but the data has {len(verbalizers)} ({verbalizers}); "
            "load the base model with a matching `num_labels`."
        )
    model.config.id2label = {i: verbalizers[i] for i in sorted(verbalizers)}
    model.config.label2id = {v: i for i, v in model.config.id2label.items()}


def explanation_column(args: ScriptArguments, rows: Dataset) -> str | None:
    """The column of rationales the recipe trains on, or None when a teacher writes them."""
    if args.explanation_column or args.teacher:
        return args.explanation_column
    return CLINIFACT_RATIONALE_COLUMN if CLINIFACT_RATIONALE_COLUMN in rows.column_names else None


def _explanations(args: ScriptArguments, rows: Dataset, template: PromptTemplate, model, tokenizer, output_dir):
    """Prompt-completion-label rows: from a rationale column, or synthesized by the teacher."""
    verdicts = template.verdict_format
    column = explanation_column(args, rows)
    if column:
        def from_rationale(row):
            text = (row[column] or "").strip()
            if verdicts.read(text) == NO_VERDICT:
                text = f"{text}\n{verdicts.line(row['label'])}"
            return {"completion": [{"role": "assistant", "content": text}]}

        kept = rows.map(from_rationale).filter(
            lambda row: verdicts.read(row["completion"][0]["content"]) == row["label"]
        )
        logger.info("Rationales from the %r column: %d of %d rows state their gold verdict and are kept.", column,
                    len(kept), len(rows))
        lost = sorted(set(rows["label"]) - set(kept["label"]))
        if lost:
            raise UsageError(f"No rationale in the {column!r} column states the gold verdict of class(es) {lost} "
                             f"({', '.join(verdicts.verbalizers[label] for label in lost)}), so nothing teaches "
                             "their explanations: fix the rationales, or let a teacher write them (--teacher).")
        return kept.select_columns(["prompt", "completion", "label"])
    if args.teacher in (None, "self"):
        teacher = TransformersTeacher(model=model, tokenizer=tokenizer, name=f"self:{model.config._name_or_path}")
    else:
        teacher = make_teacher(args.teacher)
    return synthesize_explanations(
        rows, teacher, prompt_template=template, cache_path=output_dir / "teacher_cache.jsonl",
        max_retries=args.teacher_retries, batch_size=args.teacher_batch_size,
        max_new_tokens=args.teacher_max_new_tokens, retry_rejected=args.retry_rejected,
        save_to=output_dir / "explanations.jsonl",
    )


def _report(results: dict, predictions: list[dict], rows: Dataset, output_dir: Path) -> str:
    names = ["auroc", "f1", "auroc_alignment", "r_lkappa", "rli", "readability"]
    header = "| " + " | ".join(names) + " |"
    values = "| " + " | ".join(f"{results.get(n, float('nan')):.3f}" for n in names) + " |"
    calibration, before = results["calibration"], results["before_calibration"]
    threshold = "argmax" if results["threshold"] is None else f"{results['threshold']:.3f}"
    lines = [
        "", f"CLSGen on {results['test_rows']} held-out rows (trained on {results['train_rows']}, calibrated and "
        f"thresholded on {results['validation_rows']} validation rows):", "",
        f"Decision rule stored in config.json: threshold {threshold}, {calibration['method']} calibration "
        f"(temperature {calibration['temperature']:.3f}, bias {calibration['bias']}).",
        "Calibration on the test rows, raw head -> calibrated: " + ", ".join(
            f"{key} {before[key]:.3f} -> {results[key]:.3f}" for key in ("ece", "brier", "log_loss")),
        f"Mean probability per class on the test rows: {results['mean_probability']} (class shares of the training "
        f"rows: {results['class_shares']}).",
        "", "Alignment at the stored threshold:", header, "|" + "---|" * len(names), values,
        f"{results['disagreements']} of {results['test_rows']} explanations do not state the head's label "
        "(`agrees` is false): review them.", "", "Example predictions:",
    ]
    for prediction, row in list(zip(predictions, rows))[:3]:
        lines += [
            f"- gold {row['label']} | P = {[round(p, 3) for p in prediction['probability']]} | head label "
            f"{prediction['label']} | verdict {prediction['verdict']}",
            "  " + prediction["explanation"].replace("\n", "\n  "),
        ]
    lines += ["", f"Saved the model, its prompt template, {RESULTS_FILE} and {RELIABILITY_FILE} to {output_dir}"]
    return "\n".join(lines)
