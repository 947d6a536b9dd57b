"""The classifier's prompt: one `PromptTemplate` turns a dataset row into chat messages.

The classification head reads the hidden state at the last prompt token, so training, synthesis and inference must
build exactly the same prompt. The template is therefore a small serialisable object (saved as JSON next to models),
not code scattered over scripts.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, meta
from jinja2.sandbox import SandboxedEnvironment

from ..verdicts import VerdictFormat


_JINJA = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
DEFAULT_SYSTEM = "You are a careful expert. Read the text, reason briefly, then give your verdict."
DEFAULT_QUESTION = "Classify the text above."


def _is_jinja(template: str) -> bool:
    """Templates with `{{` or `{%` are Jinja; any other is a `str.format` template."""
    return "{{" in template or "{%" in template


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
        max_prompt_tokens: the token budget prompts were fitted to in training (see `fit_prompt`), saved with the
            template so that prediction fits new rows the same way.
    """

    user_template: str
    system: str = DEFAULT_SYSTEM
    question: str = DEFAULT_QUESTION
    verdict_format: VerdictFormat = field(default_factory=VerdictFormat)
    max_prompt_tokens: int | None = None

    def __post_init__(self):
        if not self.fields:
            raise ValueError(f"`user_template` names no field of the row: {self.user_template!r}.")

    @cached_property
    def fields(self) -> tuple[str, ...]:
        """The row fields the template reads, in order of first use."""
        if _is_jinja(self.user_template):
            names = meta.find_undeclared_variables(_JINJA.parse(self.user_template))
            return tuple(sorted(names, key=self.user_template.find))
        parsed = (name for _, name, _, _ in string.Formatter().parse(self.user_template) if name)
        return tuple(dict.fromkeys(name.split(".")[0].split("[")[0] for name in parsed))

    @cached_property
    def _jinja_template(self):
        return _JINJA.from_string(self.user_template)

    @property
    def labels(self) -> list[int]:
        """The label ids this template can state."""
        return sorted(self.verdict_format.verbalizers)

    def render_user(self, row: Mapping[str, Any]) -> str:
        """The user message for `row`."""
        values = {name: "" if row[name] is None else row[name] for name in self.fields}
        if _is_jinja(self.user_template):
            text = self._jinja_template.render(**values)
        else:
            text = self.user_template.format(**values)
        tail = "\n".join(part for part in (self.question, self.verdict_format.instruction) if part)
        return f"{text.strip()}\n\n{tail}"

    def to_messages(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages (system + user) the classifier sees for `row`."""
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.render_user(row)}]

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_template": self.user_template,
            "system": self.system,
            "question": self.question,
            "verdict_format": {
                "verbalizers": {str(k): v for k, v in self.verdict_format.verbalizers.items()},
                "prefix": self.verdict_format.prefix,
            },
            "max_prompt_tokens": self.max_prompt_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptTemplate:
        data = dict(data)
        verdict = data.pop("verdict_format", None) or {}
        return cls(**data, verdict_format=VerdictFormat(**verdict))

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def from_json_file(cls, path: str | Path) -> PromptTemplate:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def default_prompt_template(
    text_fields: str | Sequence[str],
    *,
    question: str = DEFAULT_QUESTION,
    verdict_format: VerdictFormat | None = None,
    system: str = DEFAULT_SYSTEM,
) -> PromptTemplate:
    """A generic template: one `Field name: value` paragraph per text field, then the question."""
    fields = [text_fields] if isinstance(text_fields, str) else list(text_fields)
    body = "\n\n".join(f"{name.replace('_', ' ').capitalize()}: {{{{ {name} }}}}" for name in fields)
    return PromptTemplate(body, system=system, question=question, verdict_format=verdict_format or VerdictFormat())


__all__ = ["PromptTemplate", "default_prompt_template"]
