"""`CLSGenConfig`: the training arguments of `CLSGenTrainer`, as `SFTConfig` plus the joint-loss settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import SFTConfig


@dataclass
class CLSGenConfig(SFTConfig):
    r"""
    Configuration class for the [`CLSGenTrainer`]: every [`~trl.SFTConfig`] field, plus the ones below. Unlike in
    `SFTConfig`, `bf16` defaults to on only where a GPU supports it (a CPU runs float32 faster), and activation
    checkpointing is on through its current name, `activation_checkpointing`.

    Parameters:
        > Parameters that control the joint loss

        lm_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the LM loss (next-token cross-entropy on the explanation tokens).
        verdict_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of each explanation's verdict word in the LM loss, relative to its other tokens: the verdict is one
            token of dozens, yet it is the decision the explanation has to agree on. The verdict word is the last
            completion token that starts a verbalizer (the model's `id2label` words, which `train_clsgen` sets from
            the prompt template).
        cls_loss_weight (`float`, *optional*, defaults to `2.0`):
            Weight of the classification loss (cross-entropy of the `score` head at the last prompt token). Above the
            LM loss's weight because the LM loss dominates the shared LoRA update at equal weights; the benchmark's
            validation sweep chose 2 (README, Benchmark).
        class_weights (`list[float]`, *optional*):
            Per-class weights of the classification loss, for imbalanced data (one per label).
        pos_weight (`float`, *optional*):
            Binary shortcut for `class_weights=[1.0, pos_weight]`.
        head_learning_rate (`float`, *optional*):
            Learning rate of `score` (its own optimizer group, as in SetFit); defaults to `learning_rate`.
        init_head_bias_from_prior (`bool`, *optional*, defaults to `True`):
            Start a fresh head's bias (exactly zero) at the training set's class log-prior, so that it predicts the
            base rate before it has learned anything.

        > Parameters that control saving and the data

        save_merged (`bool`, *optional*, defaults to `True`):
            With LoRA, `save_model` writes the merged model (loadable without PEFT); `False` writes the adapter with
            the `score` head. Checkpoints always hold the adapter, for resuming.
        label_column (`str`, *optional*, defaults to `"label"`):
            Dataset column holding the class id of each row.
    """

    lm_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the LM (explanation) loss."})
    verdict_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the verdict word in the LM loss."})
    cls_loss_weight: float = field(default=2.0, metadata={"help": "Weight of the classification-head loss."})
    class_weights: list[float] | None = field(default=None, metadata={"help": "Per-class weights of the class loss."})
    pos_weight: float | None = field(default=None, metadata={"help": "Shortcut for class_weights=[1, pos_weight]."})
    head_learning_rate: float | None = field(default=None, metadata={"help": "Learning rate of the `score` head."})
    init_head_bias_from_prior: bool = field(default=True, metadata={"help": "Start a fresh head at the class prior."})
    activation_checkpointing: bool | None = field(default=True, metadata={"help": "Trade compute for memory."})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Alias of activation_checkpointing."})
    label_column: str = field(default="label", metadata={"help": "Dataset column holding the class id of each row."})
    save_merged: bool = field(default=True, metadata={"help": "With LoRA, save the merged model, not the adapter."})

    def __post_init__(self):
        if self.bf16 is None and not self.fp16:  # TRL turns bf16 on everywhere
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # nothing to pin memory for (and torch warns about it)
        super().__post_init__()
        if self.lm_loss_weight < 0 or self.cls_loss_weight < 0 or self.lm_loss_weight + self.cls_loss_weight == 0:
            raise ValueError(
                f"Loss weights must be >= 0 and not both 0, got lm_loss_weight={self.lm_loss_weight}, "
                f"cls_loss_weight={self.cls_loss_weight}."
            )
        if self.verdict_loss_weight < 0:
            raise ValueError(f"`verdict_loss_weight` must be >= 0, got {self.verdict_loss_weight}.")
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
