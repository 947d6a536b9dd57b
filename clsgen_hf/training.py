"""Training a CLSGen model end to end: both heads, then the decision rule, then one saved folder that holds everything
prediction needs (weights, rule in the config, prompt template)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from datasets import Dataset
from peft import PeftConfig
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_utils import sort_checkpoints

from .clsgen_config import CLSGenConfig
from .clsgen_trainer import CLSGenTrainer
from .errors import UsageError
from .evaluation import fit_decision_rule
from .loading import resolve_model_source
from .prompt_template import PromptTemplate


logger = logging.getLogger(__name__)


def train_clsgen(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset,
    prompt_template: PromptTemplate,
    args: CLSGenConfig,
    peft_config: PeftConfig | None = None,
    validation: Dataset | None = None,
    batch_size: int = 8,
) -> tuple[CLSGenTrainer, float, dict | None]:
    """LoRA-train both heads, fit the decision rule on `validation` rows (if given), and save the model (the rule in
    its config) and its prompt template to `args.output_dir`. Returns the trainer, the training seconds and the
    rule."""
    set_label_names(model, prompt_template)
    started = time.time()
    trainer = CLSGenTrainer(model, args, train_dataset=train_dataset, processing_class=tokenizer,
                            peft_config=peft_config)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    train_seconds = time.time() - started
    rule = None
    if validation is not None and trainer.is_world_process_zero():
        trainer.model.eval()
        rule = fit_decision_rule(trainer.model, tokenizer, validation["prompt"], validation["label"],
                                 batch_size=batch_size)
        calibration = rule["calibration"]
        trainer.model_card_data.decision_rule = rule["note"]
        logger.info("Decision rule from %d validation rows: %s calibration (temperature %.3f, bias %s), threshold %s.",
                    len(validation), calibration.method, calibration.temperature, calibration.bias, rule["threshold"])
    trainer.model_card_data.prompt_template = prompt_template
    trainer.save_model()
    if trainer.is_world_process_zero():
        prompt_template.save_pretrained(args.output_dir)
    return trainer, train_seconds, rule


def set_label_names(model: PreTrainedModel, prompt_template: PromptTemplate) -> None:
    """Name the head's classes after the template's verbalizers (`id2label`/`label2id` travel with the config)."""
    verbalizers = prompt_template.verdict_format.verbalizers
    if model.config.num_labels != len(verbalizers):
        raise UsageError(f"The model has {model.config.num_labels} labels but the data has {len(verbalizers)} "
                         f"({verbalizers}); load the base model with a matching `num_labels`.")
    model.config.id2label = {i: verbalizers[i] for i in sorted(verbalizers)}
    model.config.label2id = {v: i for i, v in model.config.id2label.items()}


def resume_checkpoint(args: CLSGenConfig) -> str | None:
    """The checkpoint `resume_from_checkpoint` names (`true`: the last complete one in `output_dir`), or `None`;
    without the option, an `output_dir` that holds checkpoints is refused (step 0 would overwrite them)."""
    output_dir, wanted = Path(args.output_dir), args.resume_from_checkpoint
    checkpoints = sort_checkpoints(str(output_dir))
    if wanted is None or str(wanted).lower() in ("", "false", "none"):
        if checkpoints:
            raise UsageError(f"{output_dir} holds checkpoints of an earlier run (up to {Path(checkpoints[-1]).name}): "
                             "pass {resume_from_checkpoint} to continue it, or a new {output_dir} to start over.",
                             resume_from_checkpoint="true", output_dir=...)
        return None
    if str(wanted).lower() != "true":
        if not (Path(wanted) / "trainer_state.json").is_file():
            raise UsageError("{resume_from_checkpoint}: not a complete checkpoint folder (no trainer_state.json).",
                             resume_from_checkpoint=str(wanted))
        return str(wanted)
    complete = [path for path in checkpoints if (Path(path) / "trainer_state.json").is_file()]
    if not complete:
        raise UsageError(f"{{resume_from_checkpoint}}: {output_dir} holds no complete checkpoint-N folder; run "
                         "without it to start from step 0.", resume_from_checkpoint="true")
    if complete[-1] != checkpoints[-1]:
        logger.warning("%s is incomplete (the run was killed while saving it); resuming from %s.", checkpoints[-1],
                       Path(complete[-1]).name)
    logger.info("Resuming from %s.", Path(complete[-1]).name)
    return complete[-1]


def check_model_config(model_name_or_path: str | None, max_prompt_tokens: int | None):
    """The model's config, read without its weights; a prompt budget above its context length is refused."""
    source, kwargs = resolve_model_source(model_name_or_path)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise UsageError(f"{{model_name_or_path}}: {str(error).splitlines()[0]}",
                         model_name_or_path=model_name_or_path) from None
    context = getattr(config, "max_position_embeddings", None)
    if context and max_prompt_tokens and max_prompt_tokens > context:
        raise UsageError(f"{{max_prompt_tokens}} is above the context length of {source} ({context} tokens, "
                         f"max_position_embeddings): use at most {context}.", max_prompt_tokens=max_prompt_tokens)
    return config


__all__ = ["check_model_config", "resume_checkpoint", "set_label_names", "train_clsgen"]
