"""Prediction: the class probability from the prefill of each prompt, the explanation generated from the same cache.

`predict` is the one call users make; the `clsgen` pipeline and `clsgen-hf predict` wrap it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .encoding import Messages, encode_prompts
from .verdicts import DEFAULT_VERBALIZERS, read_verdict


def predict(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[str | Messages | Mapping[str, Any]],
    *,
    prompt_template=None,
    verbalizers: Mapping[int, str] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    max_prompt_tokens: int | None = None,
    threshold: float | None = None,
    show_progress: bool = True,
    **generate_kwargs,
) -> list[dict[str, Any]]:
    """Class probabilities and an explanation for each input, from one prefill per prompt.

    Args:
        model: a `LlamaForCLSGen` (or a PEFT model wrapping one).
        tokenizer: its tokenizer (see `prepare_tokenizer`).
        inputs: prompts as text or chat messages, or rows (mappings) turned into prompts by `prompt_template`.
        prompt_template: a `clsgen_hf.data.PromptTemplate`, needed for rows; its verbalizers read the verdicts.
        verbalizers: label id -> verdict word, when no template gives them (default `{0: "No", 1: "Yes"}`).
        batch_size: prompts per batch (left-padded).
        max_new_tokens: explanation budget.
        max_prompt_tokens: longer prompts lose their middle (as in training).
        threshold: binary decision threshold; default the model's `config.cls_threshold`.
        generate_kwargs: passed to `generate` (greedy unless `do_sample=True`).

    Returns:
        One record per input: `probability` (list, one per class), `label` (head decision), `explanation`,
        `verdict` (label read from the explanation, -1 if none).
    """
    prompts = [_as_prompt(item, prompt_template, position) for position, item in enumerate(inputs)]
    if not prompts:
        raise ValueError("Nothing to predict: `inputs` is empty.")
    if verbalizers is None:
        verbalizers = prompt_template.verdict_format.verbalizers if prompt_template is not None else DEFAULT_VERBALIZERS
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(base, "classify_and_generate"):
        raise TypeError(f"{type(base).__name__} has no classification head; load a CLSGen model (LlamaForCLSGen).")
    threshold = base.config.cls_threshold if threshold is None else threshold
    ids, _ = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    generate_kwargs.setdefault("do_sample", False)

    records = []
    for start in tqdm(range(0, len(ids), batch_size), desc="Predicting", disable=not show_progress, unit="batch"):
        batch = ids[start : start + batch_size]
        input_ids, attention_mask = _left_pad(batch, tokenizer.pad_token_id, base.device)
        out = base.classify_and_generate(
            input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **generate_kwargs,
        )
        explanations = tokenizer.batch_decode(out.sequences[:, input_ids.shape[1] :], skip_special_tokens=True)
        for probability, explanation in zip(out.probabilities.tolist(), explanations):
            records.append(
                {
                    "probability": probability,
                    "label": decide(probability, threshold),
                    "explanation": explanation.strip(),
                    "verdict": read_verdict(explanation, dict(verbalizers)),
                }
            )
    return records


def decide(probability: Sequence[float], threshold: float = 0.5) -> int:
    """The head's label: positive-class probability against `threshold` (binary), else the most probable class."""
    if len(probability) == 2:
        return int(probability[1] >= threshold)
    return int(max(range(len(probability)), key=probability.__getitem__))


def _as_prompt(item, prompt_template, position: int) -> str | Messages:
    if isinstance(item, Mapping):
        if "prompt" in item:
            return item["prompt"]
        if prompt_template is None:
            raise ValueError(
                f"Input {position} is a row without a `prompt`; pass `prompt_template` to build prompts from its "
                f"fields (present: {sorted(item)})."
            )
        missing = [name for name in prompt_template.fields if name not in item]
        if missing:
            raise ValueError(f"Input {position} lacks the field(s) {missing} the prompt template needs; present: {sorted(item)}.")
        return prompt_template.to_messages(item)
    if isinstance(item, str) and not item.strip():
        raise ValueError(f"Input {position} is empty text.")
    return item


def _left_pad(rows: list[list[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    input_ids = torch.tensor([[pad_token_id] * (width - len(r)) + r for r in rows], device=device)
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return input_ids, attention_mask


__all__ = ["predict", "decide"]
