"""Fitting a prompt into a token budget by cutting the middle of its longest text field.

The question and the verdict instruction come after the row's text and the end of a long text (a conclusion, a
result) is often what decides the label, so the cut falls in the middle of the longest field, never at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import PreTrainedTokenizerBase

from .templates import PromptTemplate


CUT_MARKER = " [...] "


def count_prompt_tokens(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> int:
    """Tokens of `messages` as the model sees them: chat template applied, generation prompt included."""
    return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])


def fit_prompt(
    template: PromptTemplate, row: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, max_tokens: int
) -> tuple[list[dict[str, str]], bool]:
    """The messages of `row`, with the middle of its longest text field cut until they fit `max_tokens`.

    Returns:
        The messages and whether a cut was needed.
    """
    messages = template.to_messages(row)
    excess = count_prompt_tokens(tokenizer, messages) - max_tokens
    if excess <= 0:
        return messages, False
    longest = max(template.fields, key=lambda name: len(str(row[name] or "")))
    ids = tokenizer(str(row[longest]), add_special_tokens=False)["input_ids"]
    margin = len(tokenizer(CUT_MARKER, add_special_tokens=False)["input_ids"])
    for _ in range(4):  # re-tokenising the joined halves can cost a token or two more than planned
        keep = len(ids) - excess - margin
        if keep <= 0:
            raise ValueError(
                f"The prompt cannot fit max_prompt_tokens={max_tokens}: even without `{longest}` it is too long."
            )
        head = tokenizer.decode(ids[: keep // 2]).rstrip()
        tail = tokenizer.decode(ids[len(ids) - (keep - keep // 2) :]).lstrip()
        messages = template.to_messages({**row, longest: head + CUT_MARKER + tail})
        over = count_prompt_tokens(tokenizer, messages) - max_tokens
        if over <= 0:
            return messages, True
        margin += over
    raise ValueError(f"Could not cut the prompt to max_prompt_tokens={max_tokens}.")


__all__ = ["count_prompt_tokens", "fit_prompt"]
