"""Turning a (prompt, explanation) pair into token ids, the same way for training and for inference.

The classification head reads the last prompt token, so the prompt must be tokenized identically when training and
when predicting: both go through `encode_prompts`. The prompt and the completion are tokenized separately (once each)
and concatenated, so the prompt tokens seen in training are exactly those seen at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase


Messages = list[dict[str, str]]


def as_messages(prompt: str | Messages, role: str = "user") -> Messages:
    """A chat prompt from plain text (one `role` message) or from messages as they are."""
    return [{"role": role, "content": prompt}] if isinstance(prompt, str) else list(prompt)


def cut_middle(ids: list[int], max_tokens: int) -> list[int]:
    """Keep the first and last `max_tokens // 2`-ish tokens of `ids`: the instructions and the question survive, the
    middle (where long input documents sit) goes."""
    if len(ids) <= max_tokens:
        return ids
    head = max_tokens // 2
    return ids[:head] + ids[len(ids) - (max_tokens - head) :]


def render_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str | Messages]) -> list[str]:
    """The chat-template text of each prompt, ending with the assistant turn's opening."""
    return [
        tokenizer.apply_chat_template(as_messages(p), tokenize=False, add_generation_prompt=True) for p in prompts
    ]


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str | Messages], max_prompt_tokens: int | None = None
) -> tuple[list[list[int]], int]:
    """Token ids of each chat-templated prompt, middle-cut to `max_prompt_tokens`; also how many were cut."""
    ids = tokenizer(render_prompts(tokenizer, prompts), add_special_tokens=False)["input_ids"]
    if max_prompt_tokens is None:
        return ids, 0
    n_cut = sum(len(x) > max_prompt_tokens for x in ids)
    return [cut_middle(x, max_prompt_tokens) for x in ids], n_cut


@dataclass
class EncodedExamples:
    """Training features of a batch of rows; `truncated` marks rows whose prompt lost its middle to `max_length`."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    cls_positions: list[int]
    truncated: list[bool]


def encode_examples(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str | Messages],
    completions: list[str | Messages],
    max_length: int | None = None,
    min_prompt_tokens: int = 16,
) -> EncodedExamples:
    """Ids of prompt + completion, LM labels on the completion only, and the index of the last prompt token.

    Rows longer than `max_length` lose the middle of their prompt; the completion (the explanation and its verdict)
    is never cut. A completion that leaves fewer than `min_prompt_tokens` for the prompt is an error.
    """
    prompt_texts = render_prompts(tokenizer, prompts)
    completion_texts = []
    for prompt, prompt_text, completion in zip(prompts, prompt_texts, completions, strict=True):
        full_text = tokenizer.apply_chat_template(
            as_messages(prompt) + as_messages(completion, role="assistant"), tokenize=False
        )
        if not full_text.startswith(prompt_text):
            raise ValueError(
                "The chat template renders the prompt differently when a completion follows it, so training would "
                f"not see the prompt that inference sees. Prompt: {prompt_text[-200:]!r}"
            )
        completion_texts.append(full_text[len(prompt_text) :])
    prompt_ids = tokenizer(prompt_texts, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion_texts, add_special_tokens=False)["input_ids"]

    input_ids, labels, positions, truncated = [], [], [], []
    for row, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        if max_length is not None and len(p) + len(c) > max_length:
            budget = max_length - len(c)
            if budget < min_prompt_tokens:
                raise ValueError(
                    f"Row {row}: the explanation alone has {len(c)} tokens, leaving {budget} of max_length="
                    f"{max_length} for the prompt. Raise `max_length` or shorten the explanation."
                )
        truncated.append(max_length is not None and len(p) + len(c) > max_length)
        if truncated[-1]:
            p = cut_middle(p, budget)
        input_ids.append(p + c)
        labels.append([-100] * len(p) + c)
        positions.append(len(p) - 1)
    return EncodedExamples(input_ids, labels, positions, truncated)
