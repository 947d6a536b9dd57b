"""Reading the verdict out of an explanation.

One place decides what an explanation "says": the data synthesizer keeps teacher answers whose verdict matches
the gold label, inference reports the verdict next to the probability, and the alignment metrics compare it with
the classification head. All three must read the same way, so all three call `read_verdict`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


NO_VERDICT = -1
"""Returned when no verdict (or two conflicting ones) can be read from a text."""

DEFAULT_VERBALIZERS = {0: "No", 1: "Yes"}
DEFAULT_VERDICT_PREFIX = "Answer:"

# "Answer:", "Final answer:", "**Answer**:", "Verdict -" ... optionally in markdown emphasis or a heading.
_PREFIX_WORDS = r"(?:final\s+answer|answer|verdict|final\s+verdict|label|prediction|conclusion)"
_NEGATION = re.compile(r"\b(?:not|no\s+longer|never|isn't|is\s+not)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class VerdictFormat:
    """How a verdict is written at the end of an explanation and how it is read back.

    Args:
        verbalizers: label id -> the word that states it, e.g. `{0: "No", 1: "Yes"}`.
        prefix: what introduces the verdict on its own line, e.g. `"Answer:"`.
    """

    verbalizers: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_VERBALIZERS))
    prefix: str = DEFAULT_VERDICT_PREFIX

    def __post_init__(self):
        words = [w.strip().lower() for w in self.verbalizers.values()]
        if len(self.verbalizers) < 2:
            raise ValueError(f"`verbalizers` needs at least two labels, got {self.verbalizers!r}.")
        if any(not w for w in words) or len(set(words)) != len(words):
            raise ValueError(f"`verbalizers` must be non-empty and distinct (case-insensitive), got {self.verbalizers!r}.")
        object.__setattr__(self, "verbalizers", {int(k): v for k, v in self.verbalizers.items()})

    def line(self, label: int) -> str:
        """The verdict line for `label`, e.g. `"Answer: Yes"`."""
        if label not in self.verbalizers:
            raise ValueError(f"Label {label!r} has no verbalizer; known labels: {sorted(self.verbalizers)}.")
        return f"{self.prefix} {self.verbalizers[label]}"

    def read(self, text: str) -> int:
        """The label stated by `text`, or `NO_VERDICT`."""
        return read_verdict(text, self.verbalizers)

    @property
    def instruction(self) -> str:
        """A sentence telling a model how to end its answer."""
        options = " or ".join(f'"{self.prefix} {w}"' for w in self.verbalizers.values())
        return f"End with one line that is exactly {options}."


def _word_pattern(verbalizers: dict[int, str]) -> re.Pattern:
    alternatives = "|".join(re.escape(w.strip()) for w in sorted(verbalizers.values(), key=len, reverse=True))
    return re.compile(rf"(?<![\w])({alternatives})(?![\w])", re.IGNORECASE)


def read_verdict(text: str | None, verbalizers: dict[int, str] | None = None) -> int:
    """Read the label an explanation ends on.

    Lines introduced by an answer word ("Answer:", "Final answer:", "**Verdict**:", "The answer is" ...) decide; without such a
    line, a final line that is only a verbalizer ("Yes.") does. Two answer lines naming different labels, a line
    naming two labels, or a negated verdict ("Answer: not Yes") read as `NO_VERDICT`. Case, punctuation and
    markdown are ignored.

    Args:
        text: the generated explanation.
        verbalizers: label id -> word, defaults to `{0: "No", 1: "Yes"}`.

    Returns:
        The label id, or `NO_VERDICT` (-1).
    """
    if not text:
        return NO_VERDICT
    verbalizers = verbalizers or DEFAULT_VERBALIZERS
    word_to_label = {word.strip().lower(): int(label) for label, word in verbalizers.items()}
    words = _word_pattern(verbalizers)
    prefixed = re.compile(
        rf"^[\s#>*_`-]*(?:the\s+|my\s+)?{_PREFIX_WORDS}(?:[\s*_`]*[:=\-–]|\s+is\b)\s*(.*)$", re.IGNORECASE
    )

    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    stated = [_label_of(m.group(1), words, word_to_label) for m in map(prefixed.match, lines) if m]
    if stated:
        readable = set(stated) - {NO_VERDICT}
        return readable.pop() if len(readable) == 1 else NO_VERDICT
    if lines:
        last = re.sub(r"[\s*_`#>.!\"'()\[\]]+", " ", lines[-1]).strip()
        if last.lower() in word_to_label:
            return word_to_label[last.lower()]
    return NO_VERDICT


def _label_of(answer: str, words: re.Pattern, word_to_label: dict[str, int]) -> int:
    found = list(words.finditer(answer))
    if not found:
        return NO_VERDICT
    labels = {word_to_label[m.group(1).lower()] for m in found}
    if len(labels) > 1:
        return NO_VERDICT
    if _NEGATION.search(answer[: found[0].start()]):
        return NO_VERDICT
    return labels.pop()


__all__ = ["NO_VERDICT", "DEFAULT_VERBALIZERS", "VerdictFormat", "read_verdict"]
