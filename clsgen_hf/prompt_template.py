"""The classifier's prompt: the one path from a dataset row (or a ready prompt) to the token ids the model reads.

The head reads the last prompt token, so training, synthesis, prediction and export must all end a prompt on the same
token: they all render rows with `PromptTemplate` and encode them with `encode_prompts` / `encode_example`.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import StrictUndefined, meta
from jinja2.sandbox import SandboxedEnvironment
from transformers import PreTrainedTokenizerBase

from .atomic import write_text_atomic
from .errors import UsageError
from .verdicts import DEFAULT_VERDICT_PREFIX, VerdictFormat


PROMPT_TEMPLATE_NAME = "clsgen_prompt.json"
"""The template's file in a model folder (`save_pretrained`); `predict`, the pipeline and export read it."""
DEFAULT_SYSTEM = "You are a careful expert. Read the text, reason briefly, then give your verdict."
DEFAULT_QUESTION = "Classify the text above."
CUT_MARKER = " [...] "

Messages = list[dict[str, str]]
_JINJA = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass(frozen=True)
class PromptTemplate:
    """How a row becomes the classifier's chat messages: a system message and one user message.

    The user message is the rendered `user_template`, then the task `question`, then the `verdict_format`
    instruction ("End with one line that is exactly ..."), so the question survives any cut of the row's text.

    Args:
        user_template: the row's text, as Jinja (`"Claim: {{ claim }}"`) or `str.format` (`"Claim: {claim}"`)
            over the dataset's column names.
        system: the system message.
        question: the task question asked after the text.
        verdict_format: how the answer ends (verbalizers per label and the verdict prefix).
        max_prompt_tokens: the token budget of a prompt (chat template and generation prompt included). A longer
            row loses the middle of its longest text fields (`fit`), in training and at prediction alike.
    """

    user_template: str
    system: str = DEFAULT_SYSTEM
    question: str = DEFAULT_QUESTION
    verdict_format: VerdictFormat = field(default_factory=VerdictFormat)
    max_prompt_tokens: int | None = None

    def __post_init__(self):
        if not self.fields:
            raise UsageError(f"The prompt template names no field of the row: {self.user_template!r}.")

    @cached_property
    def fields(self) -> tuple[str, ...]:
        """The row fields the template reads, in order of first use."""
        if _is_jinja(self.user_template):
            names = meta.find_undeclared_variables(_JINJA.parse(self.user_template))
            return tuple(sorted(names, key=self.user_template.find))
        parsed = (name for _, name, _, _ in string.Formatter().parse(self.user_template) if name)
        return tuple(dict.fromkeys(name.split(".")[0].split("[")[0] for name in parsed))

    @property
    def labels(self) -> list[int]:
        """The label ids this template can state."""
        return sorted(self.verdict_format.verbalizers)

    def to_messages(self, row: Mapping[str, Any]) -> Messages:
        """The chat messages (system + user) of `row`, uncut."""
        values = {name: "" if row[name] is None else row[name] for name in self.fields}
        if _is_jinja(self.user_template):
            text = _JINJA.from_string(self.user_template).render(**values)
        else:
            text = self.user_template.format(**values)
        tail = "\n".join(part for part in (self.question, self.verdict_format.instruction) if part)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": f"{text.strip()}\n\n{tail}"}]

    def fit(
        self, row: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: int | None = None
    ) -> tuple[Messages, bool]:
        """The messages of `row` within `max_prompt_tokens` (default the template's budget), and whether it was cut.

        The middle of the longest text field is cut first (a text's end often decides the label), then evenly with
        the next one once as short.
        """
        messages, _, cut = self._fit(row, tokenizer, max_prompt_tokens)
        return messages, cut

    def _fit(self, row, tokenizer, max_prompt_tokens: int | None) -> tuple[Messages, list[int] | None, bool]:
        """`fit`, also returning the fitted prompt's ids (counted on the way; `None` without a budget)."""
        budget = max_prompt_tokens or self.max_prompt_tokens
        row = {name: "" if row[name] is None else row[name] for name in self.fields}
        if budget is None:
            return self.to_messages(row), None, False
        for attempt in range(4):
            messages = self.to_messages(row)
            [ids] = _tokenize(tokenizer, [messages])
            excess = len(ids) - budget
            if excess <= 0:
                return messages, ids, attempt > 0
            # each cut field gains the marker, and re-tokenising the joined halves can cost a token or two more
            margin = len(tokenizer(CUT_MARKER, add_special_tokens=False)["input_ids"]) + 2
            field_ids = {name: tokenizer(str(row[name]), add_special_tokens=False)["input_ids"] for name in row}
            lengths = [len(ids) for ids in field_ids.values()]  # cut every longer field to the largest cap that works
            cap = next((cap for cap in range(max(lengths), -1, -1)
                        if sum(length - cap - margin for length in lengths if length > cap) >= excess), None)
            if cap is None:
                raise UsageError(f"max_prompt_tokens={budget} is too small: with every text field cut to nothing "
                                 "the prompt (system message, question, verdict instruction) is still longer.")
            for name, ids in field_ids.items():
                if len(ids) > cap:
                    head = tokenizer.decode(ids[: cap // 2]).rstrip()
                    tail = tokenizer.decode(ids[len(ids) - (cap - cap // 2) :]).lstrip() if cap > 1 else ""
                    row[name] = (head + CUT_MARKER + tail).strip()
        raise UsageError(f"Could not cut the prompt to max_prompt_tokens={budget}.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict_format"]["verbalizers"] = {str(k): v for k, v in self.verdict_format.verbalizers.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptTemplate:
        data = dict(data)
        verdict = data.pop("verdict_format", None) or {}
        return cls(**data, verdict_format=VerdictFormat(**verdict))

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write the template as `clsgen_prompt.json` in `save_directory` (created if needed); returns the file."""
        return write_text_atomic(Path(save_directory) / PROMPT_TEMPLATE_NAME,
                                 json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> PromptTemplate:
        """The template of a model folder (its `clsgen_prompt.json`), or of a template JSON file."""
        path = Path(path)
        file = path / PROMPT_TEMPLATE_NAME if path.is_dir() else path
        if not file.is_file():
            raise UsageError(f"{path} holds no prompt template ({PROMPT_TEMPLATE_NAME}).")
        try:
            return cls.from_dict(json.loads(file.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as error:
            raise UsageError(f"{file} is not a prompt template: {error}") from None

    @classmethod
    def in_folder(cls, folder: str | os.PathLike | None) -> PromptTemplate | None:
        """The template saved in a model folder, or `None` when it has none (a plain causal LM, a Hub id)."""
        if folder is None or not (Path(folder) / PROMPT_TEMPLATE_NAME).is_file():
            return None
        return cls.from_pretrained(folder)


def default_prompt_template(
    text_fields: str | Sequence[str],
    *,
    question: str | None = None,
    verdict_format: VerdictFormat | None = None,
    system: str | None = None,
    max_prompt_tokens: int | None = None,
) -> PromptTemplate:
    """A generic template: one `Field name: value` paragraph per text field, then the question."""
    fields = [text_fields] if isinstance(text_fields, str) else list(text_fields)
    body = "\n\n".join(f"{name.replace('_', ' ').capitalize()}: {{{{ {name} }}}}" for name in fields)
    return PromptTemplate(body, system=system or DEFAULT_SYSTEM, question=question or DEFAULT_QUESTION,
                          verdict_format=verdict_format or VerdictFormat(), max_prompt_tokens=max_prompt_tokens)


def build_prompt_template(
    template: PromptTemplate | str | os.PathLike | None = None,
    *,
    text_fields: Sequence[str] | None = None,
    label2id: Mapping[str, int] | None = None,
    verbalizers: Sequence[str] | None = None,
    verdict_prefix: str = DEFAULT_VERDICT_PREFIX,
    question: str | None = None,
    system: str | None = None,
    max_prompt_tokens: int | None = None,
) -> PromptTemplate:
    """The template a run describes: `template` (a template, or a JSON file or model folder holding one) with the
    settings given, else a generic template over `text_fields` whose verdict words are `verbalizers`, else the
    `label2id` names in id order, else No Yes."""
    if isinstance(template, (str, os.PathLike)):
        template = PromptTemplate.from_pretrained(template)
    if template is None:
        if not text_fields:
            raise UsageError("{text_fields} is required: name the column(s) holding the text to classify.",
                             text_fields=...)
        words = list(verbalizers or (sorted(label2id, key=label2id.get) if label2id else ["No", "Yes"]))
        if len(set(words)) != len(words):
            raise UsageError(f"{{verbalizers}} must name each label once, in id order; got {words}.", verbalizers=...)
        template = default_prompt_template(text_fields, verdict_format=VerdictFormat(dict(enumerate(words)),
                                                                                     prefix=verdict_prefix))
    elif verbalizers or verdict_prefix != DEFAULT_VERDICT_PREFIX:  # a ready template's verdict, changed
        words = list(verbalizers or [template.verdict_format.verbalizers[label] for label in template.labels])
        if len(words) != len(template.labels):
            raise UsageError(f"{{verbalizers}} names {len(words)} labels; the template has {len(template.labels)} "
                             f"({template.verdict_format.verbalizers}).", verbalizers=...)
        template = replace(template, verdict_format=VerdictFormat(dict(enumerate(words)), verdict_prefix))
    overrides = dict(question=question, system=system, max_prompt_tokens=max_prompt_tokens)
    return replace(template, **{name: value for name, value in overrides.items() if value is not None})


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[str | Messages | Mapping[str, Any]],
    prompt_template: PromptTemplate | None = None,
    max_prompt_tokens: int | None = None,
) -> list[list[int]]:
    """Token ids of each prompt, ending with the assistant turn's opening (the token the head reads).

    Inputs are text (one user message), chat messages, a mapping with a ready `prompt` (used as it is), or a row that
    `prompt_template` renders and fits to `max_prompt_tokens` (default: the template's budget).
    """
    prompts, ids = [], []
    for position, item in enumerate(inputs):
        known = None  # the ids of a row fitted to a budget, counted on the way
        if hasattr(item, "messages"):  # the pipeline's wrapper of one conversation
            item = item.messages
        elif isinstance(item, Mapping) and item.get("prompt") is not None:
            item = item["prompt"]
        elif isinstance(item, Mapping):
            if prompt_template is None:
                raise UsageError(f"Input {position} is a row without a `prompt`; pass a prompt template to build "
                                 f"prompts from its fields (present: {sorted(item)}).")
            missing = [name for name in prompt_template.fields if name not in item]
            if missing:
                raise UsageError(f"Input {position} lacks the field(s) {missing} the prompt template needs; present: "
                                 f"{sorted(item)}.")
            item, known, _ = prompt_template._fit(item, tokenizer, max_prompt_tokens)
        elif isinstance(item, str) and not item.strip():
            raise UsageError(f"Input {position} is empty text.")
        prompts.append(item)
        ids.append(known)
    todo = [position for position, known in enumerate(ids) if known is None]
    for position, encoded in zip(todo, _tokenize(tokenizer, [prompts[position] for position in todo]), strict=True):
        ids[position] = encoded
    return ids


def prediction_input(row: Mapping[str, Any], template: PromptTemplate | None, source: str | os.PathLike,
                     number: int) -> dict[str, Any]:
    """Row `number` of `source` as `predict` takes it: its ready `prompt`, or the non-empty fields `template` reads."""
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip() or isinstance(prompt, list) and prompt:
        return {"prompt": prompt}
    if template is None:
        raise UsageError(f"{source}: rows have no `prompt` column and the model folder has no clsgen_prompt.json; "
                         f"name the text column(s) ({{text_fields}}) or pass a prompt template ({{prompt_template}}). "
                         f"Columns present: {sorted(row)}.", text_fields=..., prompt_template=...)
    missing = [name for name in template.fields if name not in row]
    if missing:
        raise UsageError(f"{source}, row {number}: missing the field(s) {', '.join(map(repr, missing))} the prompt "
                         f"needs; columns present: {sorted(row)}.")
    empty = [name for name in template.fields if row[name] is None or not str(row[name]).strip()]
    if empty:
        raise UsageError(f"{source}, row {number}: the field(s) {', '.join(map(repr, empty))} are empty.")
    return {name: row[name] for name in template.fields}


def count_prompt_tokens(tokenizer: PreTrainedTokenizerBase, prompt: str | Messages) -> int:
    """The prompt's length in tokens, as `encode_prompts` encodes it."""
    return len(_tokenize(tokenizer, [prompt])[0])


class EncodedExample(NamedTuple):
    """A training row: prompt + completion ids, LM labels (-100 on the prompt), the last prompt token's index (what
    the head reads) and whether the completion was cut at `max_length`."""

    input_ids: list[int]
    labels: list[int]
    cls_position: int
    truncated: bool


def encode_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str | Messages, completion: str | Messages, max_length: int | None
) -> EncodedExample:
    """Training ids of prompt + completion, the prompt's exactly as `encode_prompts` gives them.

    A row too long for `max_length` loses the end of its completion (as TRL truncates), never a prompt token.
    """
    prompt_text = _render(tokenizer, [prompt])[0]
    full_text = tokenizer.apply_chat_template(_messages(prompt) + _messages(completion, "assistant"), tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("The chat template renders the prompt differently when a completion follows it, so training "
                         f"would not see the prompt that inference sees. Prompt: {prompt_text[-200:]!r}")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    if max_length is not None and len(prompt_ids) >= max_length:
        raise UsageError(f"A prompt has {len(prompt_ids)} tokens, leaving none of max_length={max_length} for its "
                         "explanation: fit prompts to fewer tokens (max_prompt_tokens) or raise max_length.")
    cut = max_length is not None and len(prompt_ids) + len(completion_ids) > max_length
    if cut:
        completion_ids = completion_ids[: max_length - len(prompt_ids)]
    return EncodedExample(prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids, len(prompt_ids) - 1,
                          cut)


def _tokenize(tokenizer: PreTrainedTokenizerBase, prompts: list[str | Messages]) -> list[list[int]]:
    return tokenizer(_render(tokenizer, prompts), add_special_tokens=False)["input_ids"] if prompts else []


def _render(tokenizer: PreTrainedTokenizerBase, prompts: list[str | Messages]) -> list[str]:
    return [tokenizer.apply_chat_template(_messages(p), tokenize=False, add_generation_prompt=True) for p in prompts]


def _messages(prompt: str | Messages, role: str = "user") -> Messages:
    return [{"role": role, "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _is_jinja(template: str) -> bool:
    """Templates with `{{` or `{%` are Jinja; any other is a `str.format` template."""
    return "{{" in template or "{%" in template


__all__ = [
    "PROMPT_TEMPLATE_NAME", "EncodedExample", "Messages", "PromptTemplate", "build_prompt_template",
    "count_prompt_tokens", "default_prompt_template", "encode_example", "encode_prompts", "prediction_input",
]
