"""`CLSGenConfig`: the training arguments of `CLSGenTrainer`, as `SFTConfig` plus the joint-loss settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import SFTConfig


@dataclass
class CLSGenConfig(SFTConfig):
    r"""
    Configuration class for the [`CLSGenTrainer`].

    Every [`~trl.SFTConfig`] (and so [`~transformers.TrainingArguments`]) field applies; the fields below are
    specific to CLSGen's joint training of the LM head (explanations) and the classification head (probability).
    Unlike `SFTConfig`, `bf16` defaults to on only where a GPU supports it (float32 on CPU), and TRL's default of
    activation checkpointing on is set through its current name, `activation_checkpointing` (transformers warns
    about the old `gradient_checkpointing`).

    Parameters:
        > Parameters that control the joint loss

        lm_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the LM loss (next-token cross-entropy on the explanation tokens) in the total loss.
        cls_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the classification loss (cross-entropy of the `score` head at the last prompt token).
        class_weights (`list[float]`, *optional*):
            Per-class weights of the classification loss, for imbalanced data (one per label).
        pos_weight (`float`, *optional*):
            Binary shortcut for `class_weights=[1.0, pos_weight]`.
        head_learning_rate (`float`, *optional*):
            Learning rate of the classification head `score` (its own optimizer group, as SetFit's
            `head_learning_rate`); defaults to `learning_rate`. A fresh head learns faster with a larger one.
        init_head_bias_from_prior (`bool`, *optional*, defaults to `True`):
            Set a fresh head's bias (exactly zero, as initialised) to the training set's class log-prior, so that the
            head predicts the base rate before it has learned anything.

        > Parameters that control saving

        save_merged (`bool`, *optional*, defaults to `True`):
            With LoRA, `save_model` writes the merged model (one `model.safetensors`, loadable without PEFT); `False`
            writes the adapter with the `score` head. Checkpoints always hold the adapter, for resuming.

        > Parameters that control the data

        label_column (`str`, *optional*, defaults to `"label"`):
            Dataset column holding the class id of each row.
        max_length (`int`, *optional*, defaults to `1024`):
            Maximum tokens of prompt + explanation. Longer rows lose the middle of the prompt (where the input document
            sits); the start of the prompt, its end (the question) and the whole explanation with its verdict are kept.
    """

    lm_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the LM (explanation) loss in the total loss."})
    cls_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of the classification-head loss in the total loss."}
    )
    class_weights: list[float] | None = field(
        default=None, metadata={"help": "Per-class weights of the classification loss (one per label), for imbalance."}
    )
    pos_weight: float | None = field(
        default=None, metadata={"help": "Binary shortcut for class_weights=[1.0, pos_weight]."}
    )
    head_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the classification head `score` (default: learning_rate)."}
    )
    init_head_bias_from_prior: bool = field(
        default=True,
        metadata={"help": "Start a fresh head's bias at the training set's class log-prior (it predicts the base rate)."},
    )
    activation_checkpointing: bool | None = field(
        default=True,
        metadata={
            "help": "Recompute activations in the backward pass: less memory, about 20%% slower training (off in the "
            "CPU recipe)."
        },
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Deprecated alias of `activation_checkpointing`."},
    )
    label_column: str = field(default="label", metadata={"help": "Dataset column holding the class id of each row."})
    save_merged: bool = field(
        default=True,
        metadata={
            "help": "With LoRA, `save_model` writes the merged model (one `model.safetensors`, loadable without "
            "PEFT); False writes the adapter with the `score` head. Checkpoints always hold the adapter."
        },
    )

    def __post_init__(self):
        if self.bf16 is None and not self.fp16:  # TRL turns bf16 on everywhere; a CPU runs float32 faster
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # nothing to pin memory for (and torch warns about it)
        super().__post_init__()
        if self.lm_loss_weight < 0 or self.cls_loss_weight < 0 or self.lm_loss_weight + self.cls_loss_weight == 0:
            raise ValueError(
                f"Loss weights must be >= 0 and not both 0, got lm_loss_weight={self.lm_loss_weight}, "
                f"cls_loss_weight={self.cls_loss_weight}."
            )
        if self.head_learning_rate is not None and self.head_learning_rate <= 0:
            raise ValueError(f"`head_learning_rate` must be > 0, got {self.head_learning_rate}.")
        if self.pos_weight is not None:
            if self.class_weights is not None:
                raise ValueError("Set `class_weights` or `pos_weight`, not both.")
            self.class_weights = [1.0, float(self.pos_weight)]
        if self.packing or self.padding_free:
            raise ValueError(
                "CLSGen reads one prompt per row for its classification head: `packing` and `padding_free` are not "
                "supported."
            )
        if self.completion_only_loss is False:
            raise ValueError("CLSGen trains the LM head on the explanation only: `completion_only_loss` must stay on.")
