"""`LlamaForCLSGen`: one Llama backbone, two heads (`lm_head` writes the explanation, `score` reads the last prompt
token), so that the prefill of a prompt gives the class probability and generation continues from its KV cache.

Copied next to saved models (`trust_remote_code=True`): imports only torch, transformers and the sibling config, and
names no field that transformers may rename (the KV cache, `cache` from 5.24, passes through `**kwargs`).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, LlamaModel, LlamaPreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput, logging

from .configuration_clsgen import LlamaCLSGenConfig


logger = logging.get_logger(__name__)

CACHE_FIELD = next(
    name for name in CausalLMOutputWithPast.__dataclass_fields__ if name in ("cache", "past_key_values")
)
"""What the installed transformers calls the KV cache, in model outputs and in forward arguments alike."""


@dataclass
class CLSGenOutput(CausalLMOutputWithPast):
    r"""
    Output of [`LlamaForCLSGen.forward`]: the fields of [`~modeling_outputs.CausalLMOutputWithPast`], plus the two
    losses and the classification head's scores. `loss` sums the losses whose labels were given; `logits` is `None`
    when `labels` is given (the LM loss projects the labelled positions only).

    Args:
        lm_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Next-token cross-entropy over the positions with `labels != -100` (given `labels`).
        cls_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Cross-entropy of the classification head (given `cls_labels`).
        cls_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Classification-head scores, in float32, for the token at `cls_positions` (raw: before calibration).
        cls_probabilities (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Calibrated class probabilities: `softmax(cls_logits * config.cls_logit_scale + config.cls_logit_bias)`.
    """

    lm_loss: torch.FloatTensor | None = None
    cls_loss: torch.FloatTensor | None = None
    cls_logits: torch.FloatTensor | None = None
    cls_probabilities: torch.FloatTensor | None = None


@dataclass
class CLSGenGenerateOutput(ModelOutput):
    r"""
    Output of [`LlamaForCLSGen.classify_and_generate`].

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, prompt_length + new_tokens)`):
            The prompts followed by the generated explanations, as `generate` returns them.
        cls_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Classification-head scores read from the prefill of the prompts (raw: before calibration).
        probabilities (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            The calibrated class probabilities (see [`LlamaForCLSGen.calibrated_probabilities`]).
    """

    sequences: torch.LongTensor | None = None
    cls_logits: torch.FloatTensor | None = None
    probabilities: torch.FloatTensor | None = None


def last_token_positions(attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device) -> torch.Tensor:
    """Index of the last attended token of each row: right for left AND right padding, and during cached decoding."""
    if attention_mask is None or attention_mask.dim() != 2:
        return torch.full((batch_size,), seq_len - 1, device=device, dtype=torch.long)
    mask = attention_mask[:, -seq_len:].to(device=device, dtype=torch.long)  # (B, T): the part covering this pass
    token_indices = torch.arange(seq_len, device=device, dtype=torch.long)
    return (token_indices * mask).argmax(-1)


class LlamaForCLSGen(LlamaPreTrainedModel, GenerationMixin):
    r"""
    Llama with a language-model head (`lm_head`) and a classification head (`score`) on one backbone. `score` reads
    the final hidden state at `cls_positions` (default: each row's last non-padding token) in float32, so that its
    probabilities stay calibrated under bf16/fp16 backbones. Generation works as for [`LlamaForCausalLM`].
    """

    config: LlamaCLSGenConfig
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _keep_in_fp32_modules_strict = ["score"]

    def __init__(self, config: LlamaCLSGenConfig):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.vocab_size = config.vocab_size
        self.num_labels = config.num_labels
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.cls_dropout = nn.Dropout(config.cls_dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=True, dtype=torch.float32)

        # Initialize weights and apply final processing
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        cls_labels: torch.LongTensor | None = None,
        cls_positions: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CLSGenOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token labels for the LM loss, `-100` where no loss is wanted (the prompt, padding). Not shifted.
        cls_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class ids in `[0, num_labels)` for the classification loss.
        cls_positions (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Index of the token whose hidden state feeds `score` (the last prompt token). Defaults to the last
            non-padding token of each row, for left and right padding alike.
        logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
            Without `labels`, the positions that go through `lm_head`: the last `logits_to_keep` (0: all) or indices.
        kwargs:
            Passed to the backbone ([`LlamaModel`]): the KV cache, `output_hidden_states`, attention options.
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # (B, T, H)
        batch_size, seq_len = hidden_states.shape[:2]

        if cls_positions is None:
            cls_positions = last_token_positions(attention_mask, batch_size, seq_len, hidden_states.device)
        else:
            self._check_cls_positions(cls_positions, batch_size, seq_len)
        pooled = hidden_states[torch.arange(batch_size, device=hidden_states.device), cls_positions]  # (B, H)
        with torch.autocast(pooled.device.type, enabled=False):  # the head stays float32 under bf16/fp16 autocast
            cls_logits = self.score(self.cls_dropout(pooled.float()))  # (B, num_labels)

        logits = lm_loss = cls_loss = None
        if labels is None:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, keep])
        else:
            lm_loss = self._lm_loss(hidden_states, labels, num_items_in_batch)
        if cls_labels is not None:
            self._check_cls_labels(cls_labels, batch_size)
            cls_loss = nn.functional.cross_entropy(cls_logits, cls_labels.to(cls_logits.device))

        losses = [part for part in (lm_loss, cls_loss) if part is not None]
        backbone = {name: value for name, value in outputs.items() if name != "last_hidden_state"}  # cache, states
        return CLSGenOutput(
            loss=sum(losses) if losses else None,
            logits=logits,
            lm_loss=lm_loss,
            cls_loss=cls_loss,
            cls_logits=cls_logits,
            cls_probabilities=self.calibrated_probabilities(cls_logits.detach()),
            **backbone,
        )

    def calibrated_probabilities(self, cls_logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities after the calibration map stored in the config (identity until one is fitted)."""
        logits = cls_logits.float() * self.config.cls_logit_scale
        if self.config.cls_logit_bias is not None:
            logits = logits + torch.tensor(self.config.cls_logit_bias, dtype=logits.dtype, device=logits.device)
        return logits.softmax(-1)

    def _apply(self, fn, *args, **kwargs):
        """`.to(dtype)`, `.half()`, `.bfloat16()` cast the backbone; the classification head stays float32."""
        super()._apply(fn, *args, **kwargs)
        if self.score.weight.dtype != torch.float32:
            self.score.float()
        return self

    def _lm_loss(self, hidden_states: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        """Next-token loss computed on the labelled positions only: no full-vocabulary logits for the prompt."""
        if labels.shape != hidden_states.shape[:2]:
            raise ValueError(f"`labels` has shape {tuple(labels.shape)} but the inputs have shape "
                             f"{tuple(hidden_states.shape[:2])}.")
        shift_labels = labels[:, 1:].to(hidden_states.device)  # (B, T-1): token t predicts label t+1
        keep = shift_labels != -100
        predicted = self.lm_head(hidden_states[:, :-1][keep])  # (N, V), N = labelled tokens
        if num_items_in_batch is None:
            num_items_in_batch = keep.sum().clamp(min=1)
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(predicted.device)
        return nn.functional.cross_entropy(predicted.float(), shift_labels[keep], reduction="sum") / num_items_in_batch

    def _check_cls_positions(self, cls_positions: torch.Tensor, batch_size: int, seq_len: int) -> None:
        if cls_positions.shape != (batch_size,):
            raise ValueError(f"`cls_positions` must have shape ({batch_size},), one index per row, got "
                             f"{tuple(cls_positions.shape)}.")
        bad = (cls_positions < 0) | (cls_positions >= seq_len)
        if bad.any():
            raise ValueError(
                f"`cls_positions` must index the sequence [0, {seq_len}); got {cls_positions[bad].tolist()} "
                f"at rows {bad.nonzero().flatten().tolist()}."
            )

    def _check_cls_labels(self, cls_labels: torch.Tensor, batch_size: int) -> None:
        if cls_labels.shape != (batch_size,):
            raise ValueError(f"`cls_labels` must have shape ({batch_size},), one class id per row, got "
                             f"{tuple(cls_labels.shape)}.")
        bad = (cls_labels < 0) | (cls_labels >= self.num_labels)
        if bad.any():
            bad_ids = sorted(set(cls_labels[bad].tolist()))
            raise ValueError(f"`cls_labels` must be class ids in [0, {self.num_labels}); got {bad_ids}.")

    @torch.no_grad()
    def classify_and_generate(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **generate_kwargs
    ) -> CLSGenGenerateOutput:
        r"""
        Class probabilities and an explanation from one prefill: [`~GenerationMixin.generate`] runs once and the head
        is read from its first forward call, which sees the whole (left-padded) prompt.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, prompt_length)`): the tokenized prompts.
            attention_mask (`torch.Tensor`, *optional*): their attention mask.
            generate_kwargs: passed to `generate` (`max_new_tokens`, `do_sample`, ...).
        """
        prefill = []

        def keep_first_cls_logits(module, args, kwargs, output):
            if not prefill:
                prefill.append(output.cls_logits)

        handle = self.register_forward_hook(keep_first_cls_logits, with_kwargs=True)
        try:
            generated = self.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
        finally:
            handle.remove()
        cls_logits = prefill[0]
        sequences = generated if isinstance(generated, torch.Tensor) else generated.sequences
        return CLSGenGenerateOutput(
            sequences=sequences, cls_logits=cls_logits, probabilities=self.calibrated_probabilities(cls_logits)
        )


__all__ = ["CACHE_FIELD", "LlamaForCLSGen", "CLSGenOutput", "CLSGenGenerateOutput"]
