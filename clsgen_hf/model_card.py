"""Model cards of CLSGen models, as SetFit writes its own: `CLSGenCardData` (a `ModelCardData`), filled by a trainer
callback and rendered with `model_cards/clsgen_model_card.md`. The run's facts live in the card's `clsgen` metadata,
so export rebuilds the card from the run's `README.md`; the numbers come from `clsgen_results.json`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
from pathlib import Path
from typing import Any

from accelerate.utils import is_peft_model
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import eval_results_to_model_index
from transformers import TrainerCallback

from .calibration import DecisionRule
from .configuration_clsgen import MODELING_VERSION
from .loading import DEFAULT_MODEL_PACKAGE
from .prompt_template import PromptTemplate, default_prompt_template
from .resources import resource_dir
from .verdicts import VerdictFormat


MODEL_CARD_TEMPLATE = resource_dir("model_cards") / "clsgen_model_card.md"
RESULTS_FILE = "clsgen_results.json"  # the run's evaluation numbers (written by `clsgen-hf train`, copied by export)
# The embedded default model (`clsgen_hf.loading.default_model_path`) is a GGUF export of this Hub model.
EMBEDDED_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# (results key, name in the card, model-index metric type); the template says what each measures
EVAL_METRICS = (
    ("auroc", "AUROC", "roc_auc"), ("f1", "F1", "f1"), ("auroc_alignment", "AUROC-Alignment", "auroc_alignment"),
    ("r_lkappa", "R-LKappa", "r_lkappa"), ("rli", "RLI", "rli"), ("readability", "Readability", "readability"),
)
# What each explanation mode is scored on (the head's numbers are the same in both).
MODE_KEYS = ("agreement", "auroc_alignment", "r_lkappa", "rli", "readability", "loop_rate", "ends_at_verdict")
# (CLSGenConfig field, name in the card)
TRAINING_FIELDS = (
    ("lm_loss_weight", "LM loss weight"), ("verdict_loss_weight", "verdict word weight in the LM loss"),
    ("cls_loss_weight", "classification loss weight"),
    ("class_weights", "class weights"), ("num_train_epochs", "epochs"), ("max_steps", "max steps"),
    ("global_step", "optimizer steps done"), ("learning_rate", "learning rate"), ("lr_scheduler_type", "LR schedule"),
    ("warmup_steps", "warmup steps"), ("per_device_train_batch_size", "batch size per device"),
    ("gradient_accumulation_steps", "gradient accumulation steps"),
    ("max_length", "max tokens (prompt + explanation)"), ("bf16", "bf16"), ("seed", "seed"),
)
LORA_FIELDS = (("r", "r"), ("lora_alpha", "alpha"), ("lora_dropout", "dropout"), ("target_modules", "target modules"),
               ("modules_to_save", "fully trained modules"))
# kept in the card's `clsgen` metadata
CARD_FACTS = ("dataset_name", "train_rows", "training", "lora", "synthesis", "decision_rule")


def hub_base_model(name_or_path: str | os.PathLike | None) -> str | None:
    """The Hub id of a base model: a Hub id as given, the embedded GGUF as the model it was exported from, `None` for
    any other local path (meaningless on the Hub)."""
    if not name_or_path:
        return None
    text = str(name_or_path)
    if DEFAULT_MODEL_PACKAGE in Path(text).parts:
        return EMBEDDED_BASE_MODEL
    local = os.path.exists(text) or text.startswith((".", "/", "~")) or text.count("/") > 1 or text.endswith(".gguf")
    return None if local else text


def _summary(values: Any, fields: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The card's `fields` of a config or a dict of its fields; sets (LoRA's modules) as sorted lists for YAML."""
    values = values.to_dict() if hasattr(values, "to_dict") else dict(values or {})
    return {key: sorted(values[key]) if isinstance(values[key], set) else values[key]
            for key, _ in fields if values.get(key) is not None}


def training_summary(args: Any) -> dict[str, Any]:
    """The card's training fields of a `CLSGenConfig` (or of a dict of its fields)."""
    summary = _summary(args, TRAINING_FIELDS)
    summary.pop("num_train_epochs" if summary.get("max_steps", 0) > 0 else "max_steps", None)  # which sized the run
    return summary


def synthesis_summary(synthesis: dict[str, Any] | None) -> dict[str, Any] | None:
    """Teacher, instruction and per-class kept/dropped counts of `synthesize_explanations` metadata."""
    if not synthesis or not synthesis.get("teacher"):
        return None
    report = synthesis.get("report") or {}
    names = {int(k): v for k, v in (report.get("verbalizers") or {}).items()}
    columns = ("rows", "first_try", "after_retries", "dropped")
    counts = {column: {int(k): v for k, v in (report.get(column) or {}).items()} for column in columns}
    rows = [{"name": f"{label} ({names[label]})" if label in names else str(label),
             **{column: counts[column].get(label, 0) for column in columns}} for label in sorted(counts["rows"])]
    total = {column: sum(counts[column].values()) for column in columns}
    return {"teacher": synthesis["teacher"], "instruction": synthesis.get("teacher_instruction"),
            "max_retries": synthesis.get("max_retries", 0), "rows": rows, "total": total,
            "kept": total["first_try"] + total["after_retries"]}


def mode_table(results: dict) -> str:
    """A markdown table of each explanation mode's agreement figures (`results` and its `decision` entry)."""
    modes = [("natural", results), *([("decision", results["decision"])] if "decision" in results else [])]
    lines = ["| mode | " + " | ".join(MODE_KEYS) + " |", "|---" * (len(MODE_KEYS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_show_number(numbers.get(key)) for key in MODE_KEYS) + " |"
              for name, numbers in modes]
    return "\n".join(lines)


def evaluation_table(results: dict[str, Any] | None) -> str:
    """The card's evaluation table (markdown) of a results dict; empty when it holds none of the card's metrics."""
    rows = [(name, _show_number(results[key])) for key, name, _ in EVAL_METRICS if key in (results or {})]
    return "\n".join(["| " + " | ".join(name for name, _ in rows) + " |", "|" + "---|" * len(rows),
                      "| " + " | ".join(value for _, value in rows) + " |"]) if rows else ""


@dataclasses.dataclass
class CLSGenCardData(ModelCardData):
    """Everything a CLSGen model card says: `to_dict` is its YAML header, `template_variables` what the template shows.

    Args:
        base_model: the metadata gets its Hub id (`hub_base_model`); a local name is shown as text.
        datasets, dataset_name: the training data as Hub ids, and in words (e.g. "CliniFact").
        train_rows, training, lora, synthesis: the run's facts (`ModelCardCallback` fills them).
        decision_rule: why the stored rule is the default one (no validation rows of every class), else `None`.
        config, results: the model config (labels, `cls_threshold`) and its numbers (NaN: undefined).
        form: `"merged"` (one `model.safetensors`) or `"adapter"`; `repo_id`: what the usage snippet loads.
    """

    model_name: str = "clsgen-model"
    base_model: str | None = None
    datasets: list[str] | None = None
    tags: list[str] | None = None
    dataset_name: str | None = None
    train_rows: int | None = None
    training: dict | None = None
    lora: dict | None = None
    synthesis: dict | None = None
    decision_rule: str | None = None
    config: Any = None
    results: dict | None = None
    prompt_template: PromptTemplate | None = None
    form: str = "merged"
    repo_id: str | None = None
    eval_split: str | None = "test"

    @classmethod
    def from_card(cls, card: ModelCard, **overrides) -> CLSGenCardData:
        """The card data of a saved CLSGen card (`ModelCard.load`), with `overrides`."""
        facts = card.data.get("clsgen", {})
        hub = {key: card.data.get(key) for key in ("base_model", "datasets", "tags")}
        return cls(**{**hub, **{key: facts.get(key) for key in CARD_FACTS}, **overrides})

    def to_dict(self) -> dict[str, Any]:
        results = self.results or {}
        eval_results = [
            EvalResult(task_type="text-classification", task_name="Classification with explanation",
                       dataset_type=self.datasets[0] if self.datasets else
                       (self.dataset_name or "held-out").lower().replace(" ", "-"),
                       dataset_name=self.dataset_name or "held-out test set", dataset_split=self.eval_split,
                       metric_type=metric_type, metric_name=name, metric_value=float(results[key]))
            for key, name, metric_type in EVAL_METRICS if _finite(results.get(key))
        ]
        tags = ["clsgen", "trl", "text-classification", "custom_code", *(["lora"] if self.lora else []),
                *(["peft"] if self.form == "adapter" else []), *(self.tags or [])]
        data = {
            "base_model": hub_base_model(self.base_model), "datasets": self.datasets or None,
            "library_name": "peft" if self.form == "adapter" else "transformers", "pipeline_tag": "text-generation",
            "tags": list(dict.fromkeys(tags)),
            "model-index": eval_results_to_model_index(self.model_name, eval_results) if eval_results else None,
            "clsgen_versions": {**_versions(), "clsgen_modeling_version": MODELING_VERSION},
            "clsgen": {key: getattr(self, key) for key in CARD_FACTS if getattr(self, key) is not None},
        }
        return {key: value for key, value in data.items() if value is not None}

    def template_variables(self) -> dict[str, Any]:
        rule = DecisionRule.from_config(self.config or {})
        labels = rule.id2label or {0: "LABEL_0", 1: "LABEL_1"}
        template = self.prompt_template or default_prompt_template("text", verdict_format=VerdictFormat(labels))
        system, user = (m["content"] for m in template.to_messages({name: f"<{name}>" for name in template.fields}))
        verbalizers = template.verdict_format.verbalizers
        results, training, lora = self.results or {}, self.training or {}, self.lora or {}
        adapter_base = str(self.base_model or "<base model>")
        return dict(
            model_name=self.model_name, base_model=hub_base_model(self.base_model),
            base_model_display=None if hub_base_model(self.base_model) else self.base_model, form=self.form,
            adapter_base=adapter_base, adapter_base_py=json.dumps(adapter_base),
            repo_id_py=json.dumps(self.repo_id or self.model_name), labels=sorted(labels.items()),
            binary=len(labels) == 2, positive_label=labels.get(1, "1"), threshold=rule.cls_threshold,
            verdict_example=f"{template.verdict_format.prefix} {verbalizers.get(1, next(iter(verbalizers.values())))}",
            system_py=json.dumps(system, ensure_ascii=False), user_py=json.dumps(user, ensure_ascii=False),
            prompt_template_json=json.dumps(self.prompt_template.to_dict(), indent=2, ensure_ascii=False)
            if self.prompt_template else None,
            dataset_name=self.dataset_name, train_rows=results.get("train_rows") or self.train_rows,
            decision_rule=self.decision_rule,
            test_rows=results.get("test_rows") or results.get("n"), synthesis=self.synthesis,
            lora_rows=[(name, _show(lora[key])) for key, name in LORA_FIELDS if key in lora],
            training_rows=[(name, _show(training[key])) for key, name in TRAINING_FIELDS if key in training],
            eval_names=[name for key, name, _ in EVAL_METRICS if key in results],
            eval_table=evaluation_table(results), eval_split=self.eval_split, versions=list(_versions().items()),
            mode_table=mode_table(results) if "agreement" in results else None,
        )

    def to_model_card(self) -> ModelCard:
        return ModelCard.from_template(self, template_path=str(MODEL_CARD_TEMPLATE), **self.template_variables())


class ModelCardCallback(TrainerCallback):
    """Fills `trainer.model_card_data` when training begins, as SetFit's callback does: training arguments, LoRA
    config, rows and explanation synthesis."""

    def __init__(self, trainer) -> None:
        super().__init__()
        self.trainer = trainer

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        card, dataset = self.trainer.model_card_data, self.trainer.train_dataset
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        card.training = training_summary(args)
        card.lora = _summary(model.peft_config[model.active_adapter], LORA_FIELDS) if is_peft_model(model) else None
        card.base_model = card.base_model or model.config._name_or_path or None  # a PEFT model's: its base model's
        card.train_rows = len(dataset) if dataset is not None else None
        card.synthesis = synthesis_summary(_dataset_synthesis(dataset)) or card.synthesis


def build_model_card(config: Any, training_args: Any = None, peft_config: Any = None,
                     synthesis: dict[str, Any] | None = None, results: dict[str, Any] | None = None,
                     **kwargs) -> ModelCard:
    """The `ModelCard` of a CLSGen model from its config, `CLSGenConfig`, LoRA config, `synthesize_explanations`
    metadata and results (the other arguments: see `CLSGenCardData`)."""
    return CLSGenCardData(config=config, training=training_summary(training_args) if training_args else None,
                          lora=_summary(peft_config, LORA_FIELDS) if peft_config is not None else None,
                          synthesis=synthesis_summary(synthesis), results=results, **kwargs).to_model_card()


def _show_number(value: Any) -> str:
    return f"{value:.3f}" if _finite(value) else "n/a"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{v}`" if isinstance(v, str) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _dataset_synthesis(dataset) -> dict[str, Any] | None:
    """The synthesis metadata `synthesize_explanations` stores in its dataset's `info.description`, if any."""
    try:
        metadata = json.loads(dataset.info.description)
    except (AttributeError, TypeError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) and "report" in metadata else None


def _versions() -> dict[str, str]:
    packages = ("clsgen_hf", "transformers", "peft", "trl", "torch")
    return {name: str(importlib.import_module(name).__version__) for name in packages}


__all__ = [
    "RESULTS_FILE",
    "CLSGenCardData",
    "ModelCardCallback",
    "build_model_card",
    "evaluation_table",
    "hub_base_model",
    "synthesis_summary",
    "training_summary",
]
