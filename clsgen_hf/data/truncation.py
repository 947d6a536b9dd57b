"""Fitting a prompt into a token budget by cutting the middle of its longest text fields.

The question and the verdict instruction come after the row's text and the end of a long text (a conclusion, a
result) is often what decides the label, so cuts fall in the middle of the longest field, never at the end. When
that field alone cannot absorb the excess (a long claim beside a long abstract), the next-longest is cut too.
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
    """The messages of `row`, with the middle of its longest text fields cut until they fit `max_tokens`.

    Returns:
        The messages and whether a cut was needed.
    """
    row = {name: row[name] for name in template.fields}
    # each cut field gains the marker, and re-tokenising the joined halves can cost a token or two more
    margin = len(tokenizer(CUT_MARKER, add_special_tokens=False)["input_ids"]) + 2
    for attempt in range(4):
        messages = template.to_messages(row)
        excess = count_prompt_tokens(tokenizer, messages) - max_tokens
        if excess <= 0:
            return messages, attempt > 0
        field_ids = {name: tokenizer(_text(row[name]), add_special_tokens=False)["input_ids"]
                     for name in template.fields}
        cap = _length_cap([len(ids) for ids in field_ids.values()], excess, margin)
        if cap is None:
            raise ValueError(
                f"The prompt cannot fit max_prompt_tokens={max_tokens}: with every text field cut to nothing it is "
                "still too long (the template's own text is too long)."
            )
        for name, ids in field_ids.items():
            if len(ids) > cap:
                head = tokenizer.decode(ids[: cap // 2]).rstrip()
                tail = tokenizer.decode(ids[len(ids) - (cap - cap // 2) :]).lstrip() if cap > 1 else ""
                row[name] = (head + CUT_MARKER + tail).strip()
    raise ValueError(f"Could not cut the prompt to max_prompt_tokens={max_tokens}.")


def _length_cap(lengths: list[int], excess: int, margin: int) -> int | None:
    """The largest length to cut every longer field down to that removes `excess` tokens (None if none does):
    the longest field is cut first, and once it is as short as the next one both are cut evenly."""
    for cap in range(max(lengths), -1, -1):
        if sum(length - cap - margin for length in lengths if length > cap) >= excess:
            return cap
    return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


__all__ = ["count_prompt_tokens", "fit_prompt"]
