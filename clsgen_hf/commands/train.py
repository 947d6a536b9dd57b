"""`clsgen-hf train` / `examples/train_clsgen.py`: the whole CLSGen recipe in one run.

Loads a classification dataset (CliniFact by default, or your CSV/JSON Lines/Parquet file with --text_fields), gets
an explanation per training row (a rationale column, or a teacher LLM told the gold label), LoRA-trains both heads,
calibrates the head and tunes its threshold on validation rows, then predicts held-out rows in both explanation modes
(natural, and decision: the head decides, the explanation follows) and saves the numbers, every prediction
(predictions.jsonl), a reliability diagram, the model and its prompt template. Defaults are sized for 2 CPU cores
and the embedded SmolLM2-135M-Instruct. Every check of the data and options runs before the weights load; a run
killed after a checkpoint (`--save_strategy steps`) continues with `--resume_from_checkpoint true`; teacher answers
are cached in the output folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig

from ..clsgen_config import CLSGenConfig
from ..data import CLINIFACT_RATIONALE_COLUMN, DEFAULT_DECISION_SHARE
from ..errors import TeacherError, UsageError, run_command
from .help_cache import save_help
from .options import CommandParser, PromptArguments, TeacherArguments, parse_options


logger = logging.getLogger("clsgen_hf.train")

SHARED_CLINIFACT = Path("../shared/data/clinifact")
RELIABILITY_FILE = "reliability_diagram.png"
# The CPU-sized recipe: what `make demo` runs. Every value can be overridden on the command line or in `--config`.
# `cls_loss_weight` stays 1 here: the library's default (2, chosen on the benchmark's 32 optimizer steps) makes the
# explanations of this recipe's six steps loop (README, "Do the explanations agree with the head?").
CPU_DEFAULTS = dict(
    cls_loss_weight=1.0,
    output_dir="outputs/clsgen-smollm2-clinifact", num_train_epochs=1.0, per_device_train_batch_size=4,
    gradient_accumulation_steps=2, learning_rate=1e-3, lr_scheduler_type="constant", max_length=384,
    activation_checkpointing=False, logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none",
    use_peft=True, lora_r=16, lora_alpha=32, lora_dropout=0.0, max_prompt_tokens=256, teacher_max_new_tokens=96,
    lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
)


@dataclass
class ScriptArguments:
    """Which rows the recipe trains, calibrates and evaluates on, and how it predicts."""

    data_dir: str | None = field(default=None, metadata={"help": "CliniFact folder (train/validation/test CSV). "
                                                         "Default: ../shared/data/clinifact."})
    clinifact_view: str = field(default="binary", metadata={"help": "CliniFact view: 'binary' or 'multiclass'."})
    train_file: str | None = field(default=None, metadata={"help": "Your own training data (CSV, JSON Lines or "
                                                           "Parquet) instead of CliniFact; name its --text_fields."})
    test_file: str | None = field(default=None, metadata={"help": "Your own held-out data, same columns."})
    validation_file: str | None = field(default=None, metadata={"help": "Your own validation data (calibration and "
                                                                "threshold). Default: a slice of train_file."})
    validation_fraction: float = field(default=0.2, metadata={"help": "Without a validation split: the share of "
                                                              "training rows held out for it (stratified)."})
    explanation_column: str | None = field(default=None, metadata={"help": "A column of rationales to train on "
        f"instead of asking a teacher. Default on CliniFact: `{CLINIFACT_RATIONALE_COLUMN}`, unless --teacher is "
        "named; on your data the teacher 'self'."})
    max_train_samples: int | None = field(default=48, metadata={"help": "Training rows used (None: all)."})
    max_validation_samples: int | None = field(default=48, metadata={"help": "Validation rows (None: all)."})
    max_eval_samples: int | None = field(default=16, metadata={"help": "Held-out rows predicted (None: all)."})
    max_new_tokens: int = field(default=96, metadata={"help": "Explanation budget at prediction time."})
    decision_share: float = field(default=DEFAULT_DECISION_SHARE, metadata={"help": "Share of training rows whose "
                                  "explanation follows their decision's cue (teaches `--explain decision`; 0: "
                                  "natural rows only)."})
    predict_batch_size: int = field(default=8, metadata={"help": "Prompts per prediction batch."})
    allow_single_class: bool = field(default=False, metadata={"help": "Train even when every training row has one "
                                                              "label (warned about)."})


def make_parser() -> CommandParser:
    parser = CommandParser((ScriptArguments, PromptArguments, TeacherArguments, CLSGenConfig, ModelConfig),
                           prog="clsgen-hf train", description=__doc__)
    parser.set_defaults_with_config(**CPU_DEFAULTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    save_help("train", parser)  # built anyway: keeps the cache of `clsgen-hf train --help` fresh
    # TeacherError: the teacher failed, or kept no explanation for a class (exit status 1).
    return run_command("train", lambda: run(*parse_options(parser, argv)), failures=(TeacherError,))


def run(script: ScriptArguments, prompt: PromptArguments, teacher: TeacherArguments, training_args: CLSGenConfig,
        model_args: ModelConfig) -> dict:
    """Run the recipe; returns the evaluation numbers (also saved to `<output_dir>/clsgen_results.json`)."""
    from accelerate import PartialState
    from transformers import set_seed
    from trl import get_peft_config

    from ..data import training_explanations, with_decision_cues
    from ..evaluation import evaluate_model
    from ..json_files import write_json, write_jsonl
    from ..loading import load_model, load_tokenizer
    from ..model_card import MODE_KEYS, RESULTS_FILE
    from ..output_folders import claim_output_folder
    from ..plots import reliability_diagrams
    from ..reports import PREDICTIONS_FILE, prediction_rows, recipe_report, results_record
    from ..training import check_model_config, resume_checkpoint, train_clsgen

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if script.explanation_column and teacher.teacher:
        raise UsageError("Choose --explanation_column (rationales you have) or --teacher (rationales it writes).")
    output_dir = claim_output_folder("--output_dir", training_args.output_dir, {
        "the base model folder": model_args.model_name_or_path}, lock=PartialState().is_main_process)
    training_args.resume_from_checkpoint = resume_checkpoint(training_args)
    data, template = load_data(script, prompt)  # checked before the model loads
    config = check_model_config(model_args.model_name_or_path, template.max_prompt_tokens)
    tokenizer = load_tokenizer(model_args.model_name_or_path, eos_token_id=config.eos_token_id)
    train, validation, test = fit_splits(script, data, template, tokenizer)
    column = explanation_column(script, teacher, train)
    set_seed(training_args.seed)  # before the model: `score` is initialised at load time
    # a new head gets the data's label count; `train_clsgen` names the labels after the template's verbalizers
    model = load_model(model_args.model_name_or_path, num_labels=len(template.labels))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with PartialState().main_process_first():  # one process asks the teacher; the others read its cache
        explained = training_explanations(
            train, template, rationale_column=column, output_dir=output_dir,
            teacher=None if column else teacher.make_teacher(model, tokenizer), **teacher.synthesis_kwargs(),
        )
    explained = with_decision_cues(explained, template.verdict_format, script.decision_share, seed=training_args.seed)
    trainer, train_seconds, rule = train_clsgen(model, tokenizer, explained, template, training_args,
                                                get_peft_config(model_args), validation, script.predict_batch_size)
    if not trainer.is_world_process_zero():
        return {}
    kwargs = dict(batch_size=script.predict_batch_size, max_new_tokens=script.max_new_tokens)
    results, predictions = evaluate_model(trainer.model, tokenizer, test, template, calibration=rule["calibration"],
                                          **kwargs)
    decision, decided = evaluate_model(trainer.model, tokenizer, test, template, explain="decision", **kwargs)
    results["decision"] = {key: decision[key] for key in (*MODE_KEYS, "disagreements") if key in decision}
    predictions = prediction_rows(predictions, test) + prediction_rows(decided, test)
    write_jsonl(predictions, output_dir / PREDICTIONS_FILE)
    reliability_diagrams({"raw head": results["before_calibration"], "calibrated head": results},
                         output_dir / RELIABILITY_FILE)
    results = results_record(results, rule, explained, validation, test, train_seconds)
    write_json(output_dir / RESULTS_FILE, results)  # undefined numbers (one test class: AUROC) as null
    trainer.model_card_data.results = results
    trainer.create_model_card()  # now with the evaluation table
    print(recipe_report(results, predictions, test, output_dir, RELIABILITY_FILE))
    return results


def load_data(script: ScriptArguments, prompt: PromptArguments):
    """(the dataset's splits, the prompt template): your files with the template the options describe, or CliniFact
    with its own."""
    from ..data import (
        CLINIFACT_BINARY_TEMPLATE,
        CLINIFACT_MULTICLASS_TEMPLATE,
        load_classification_dataset,
        load_clinifact,
    )

    if script.train_file:
        if not script.test_file:
            raise UsageError("--train_file needs --test_file (held-out rows) and --text_fields (the text columns).")
        template = prompt.build_template()
        files = {"train": script.train_file, "test": script.test_file,
                 **({"validation": script.validation_file} if script.validation_file else {})}
        data = load_classification_dataset(files, text_fields=list(template.fields), label_field=prompt.label_field,
                                           prompt_template=template, label2id=prompt.label_ids,
                                           allow_empty_text=prompt.allow_empty_text)
    else:
        data_dir = Path(script.data_dir) if script.data_dir else SHARED_CLINIFACT
        if not (data_dir / "train.csv").is_file():
            raise UsageError(f"No CliniFact data at {data_dir.resolve()}: put train.csv, validation.csv and test.csv "
                             "there, or pass --data_dir, or use your own data with --train_file/--test_file.")
        binary = script.clinifact_view == "binary"
        template = prompt.build_template(CLINIFACT_BINARY_TEMPLATE if binary else CLINIFACT_MULTICLASS_TEMPLATE)
        data = load_clinifact(data_dir, view=script.clinifact_view, prompt_template=template,
                              allow_empty_text=prompt.allow_empty_text)
    return data, template


def fit_splits(script: ScriptArguments, data, template, tokenizer) -> list:
    """The [train, validation, test] rows, subsets first, then their prompts fitted to the template's budget."""
    from ..data import describe_dataset, fit_prompts
    from ..data.splits import check_classes, stratified_split, subset

    train, source = data["train"], "the dataset's validation split"
    if "validation" in data:
        validation = data["validation"]
    else:
        train, validation = stratified_split(train, script.validation_fraction, seed=0)
        source = f"a stratified {script.validation_fraction:.0%} of the training rows (held out from training)"
    splits = [fit_prompts(subset(rows, n), template, tokenizer, template.max_prompt_tokens) for rows, n in (
        (train, script.max_train_samples), (validation, script.max_validation_samples),
        (data["test"], script.max_eval_samples))]
    logger.info("Validation rows (calibration and threshold): %d, from %s.", len(splits[1]), source)
    logger.info("Training rows:\n%s", describe_dataset(splits[0], tokenizer))
    check_classes(splits[0]["label"], template.verdict_format, script.allow_single_class, "training rows")
    check_classes(splits[1]["label"], template.verdict_format, script.allow_single_class, "validation rows")
    return splits


def explanation_column(script: ScriptArguments, teacher: TeacherArguments, rows) -> str | None:
    """The column of rationales the recipe trains on (checked to exist), or None when a teacher writes them."""
    column = script.explanation_column
    if not column and not teacher.teacher and CLINIFACT_RATIONALE_COLUMN in rows.column_names:
        column = CLINIFACT_RATIONALE_COLUMN
    if column and column not in rows.column_names:
        raise UsageError(f"--explanation_column {column!r}: no such column; the columns are: {rows.column_names}.")
    return column
