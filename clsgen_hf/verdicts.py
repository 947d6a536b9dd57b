"""Reading the verdict out of an explanation: the synthesizer's filter, inference and the alignment metrics all read
it through `VerdictFormat.read`, so that they agree on what an explanation says."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple


NO_VERDICT = -1
"""Returned when no verdict (or two conflicting ones) can be read from a text."""

DEFAULT_VERBALIZERS = {0: "No", 1: "Yes"}
DECISION_CUE_COLUMN = "decision_cue"
"""Training rows whose completion starts with a decision cue (`VerdictFormat.cue`) name it in this column: the trainer
masks it out of the LM loss, as it is given at inference, not generated."""
DEFAULT_VERDICT_PREFIX = "Answer:"

_LEAD = r"[\s#>*_`~+\-]*"  # markdown before the prefix: heading, quote, bullet, emphasis
_OPEN = r"[\s*_`~\"'“‘(\[]*"  # emphasis, quotes or a bracket before the verdict word
_CLOSE = r"[*_`~\"'”’)\]]*"  # and after it
_EMPTY = re.compile(r"[\s*_`~]*")  # what is left of "**Answer:**" when the word is on the next line


class VerdictLine(NamedTuple):
    """A verdict line of a text: lines `start` to `end` (exclusive) of `text.splitlines()` (two lines when the word
    follows the prefix line) and the label they state, `NO_VERDICT` when none can be read."""

    start: int
    end: int
    label: int


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
        object.__setattr__(self, "verbalizers", {int(k): v for k, v in self.verbalizers.items()})
        self._reader()  # a ValueError for what could not be read back

    def _reader(self) -> _Reader:
        return _compile(self.prefix, tuple(sorted(self.verbalizers.items())))

    def line(self, label: int) -> str:
        """The verdict line for `label`, e.g. `"Answer: Yes"`."""
        if label not in self.verbalizers:
            raise ValueError(f"Label {label!r} has no verbalizer; known labels: {sorted(self.verbalizers)}.")
        return f"{self.prefix} {self.verbalizers[label]}"

    def cue(self, label: int) -> str:
        """The decision cue of decision-consistent explanations: the verdict line of `label`, given before the
        reasoning (the model continues after it and ends with its own verdict line)."""
        return self.line(label) + "\n"

    @property
    def stop_strings(self) -> list[str]:
        """The verdict lines generation stops at; a line that another one extends ("Answer: No" before "Answer: No
        information") is left out, since stopping there would cut the longer verdict."""
        lines = [self.line(label) for label in sorted(self.verbalizers)]
        return [line for line in lines if not any(other != line and other.startswith(line) for other in lines)]

    def ends_with_verdict(self, text: str | None) -> bool:
        """Whether `text` ends on a readable verdict line (nothing but blank lines after it)."""
        lines = (text or "").strip().splitlines()
        found = self.verdict_lines("\n".join(lines))
        return bool(found) and found[-1].end == len(lines) and found[-1].label != NO_VERDICT

    def read(self, text: str | None) -> int:
        """The label stated by `text`, or `NO_VERDICT` (see `read_verdict`)."""
        labels = {verdict.label for verdict in self.verdict_lines(text or "")} - {NO_VERDICT}
        return labels.pop() if len(labels) == 1 else NO_VERDICT

    def verdict_lines(self, text: str) -> list[VerdictLine]:
        """Every line of `text` introduced by the prefix, with the label it states."""
        reader, lines, found = self._reader(), text.splitlines(), []
        for i, line in enumerate(lines):
            match = reader.prefix.match(line)
            if not match:
                continue
            stated, end = match.group(1), i + 1
            if _EMPTY.fullmatch(stated):  # "Answer:" alone: the word may stand on the next non-empty line
                following = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)
                if following is not None and not reader.prefix.match(lines[following]):
                    stated, end = lines[following], following + 1
            word = reader.word.match(stated)
            readable = word and not reader.alternative.match(stated, word.end())
            found.append(VerdictLine(i, end, reader.labels[_normalised(word.group(1))] if readable else NO_VERDICT))
        return found

    def strip(self, text: str) -> str:
        """The reasoning of an explanation: its lines before the first verdict line."""
        text = text.strip()
        lines = text.splitlines()
        found = self.verdict_lines(text)
        return "\n".join(lines[: found[0].start] if found else lines).strip()

    @property
    def instruction(self) -> str:
        """A sentence telling a model how to end its answer."""
        options = " or ".join(f'"{self.prefix} {w}"' for w in self.verbalizers.values())
        return f"End with one line that is exactly {options}."


def read_verdict(
    text: str | None, verbalizers: dict[int, str] | None = None, prefix: str = DEFAULT_VERDICT_PREFIX
) -> int:
    """Read the label an explanation states on its verdict line.

    Only a line introduced by `prefix` (case-insensitive, after markdown such as `**Answer:**` or `- Answer:`) counts,
    so that the metrics depend on what a model decided rather than on how it words its ending. The verbalizer must
    come first after the prefix (or alone on the next non-empty line), as a whole word; what follows it is not read
    ("Answer: Yes, no doubt." is Yes, "Answer: not Yes" and "Answer: Yes or No" state nothing). Longer verbalizers
    are tried first ("No information" before "No"); verdict lines that state different labels cancel each other.

    Args:
        text: the generated explanation.
        verbalizers: label id -> word, defaults to `{0: "No", 1: "Yes"}`.
        prefix: what introduces the verdict line, defaults to `"Answer:"`.

    Returns:
        The label id, or `NO_VERDICT` (-1).
    """
    return VerdictFormat(verbalizers or DEFAULT_VERBALIZERS, prefix).read(text)


class _Reader(NamedTuple):
    prefix: re.Pattern  # a verdict line; group 1 is what follows the prefix
    word: re.Pattern  # a verbalizer first; group 1 is the verbalizer
    alternative: re.Pattern  # "or No" after a verbalizer
    labels: dict[str, int]  # normalised verbalizer -> label


@lru_cache(maxsize=64)
def _compile(prefix: str, verbalizers: tuple[tuple[int, str], ...]) -> _Reader:
    """The patterns that read `verbalizers` after `prefix`; a ValueError if a line written with them can't be read."""
    if not isinstance(prefix, str) or not prefix.strip() or len(prefix.splitlines()) > 1:
        raise ValueError(f"`prefix` must be a non-empty single line, got {prefix!r}.")
    words = [_normalised(word) for _, word in verbalizers]
    if len(words) < 2:
        raise ValueError(f"`verbalizers` needs at least two labels, got {dict(verbalizers)!r}.")
    if not all(words) or len(set(words)) != len(words) or any(len(word.splitlines()) > 1 for _, word in verbalizers):
        raise ValueError(
            f"`verbalizers` must be non-empty, single-line and distinct (case-insensitive), got {dict(verbalizers)!r}."
        )
    body, punctuation = re.fullmatch(r"(.*?)([^\w\s]*)", prefix.strip()).groups()
    # "**Answer**:" closes the emphasis before the colon; a prefix ending in a word must end at a word boundary.
    end = rf"[*_`]*\s*{re.escape(punctuation)}" if punctuation else r"(?!\w)"
    prefix_pattern = re.compile(rf"^{_LEAD}{_spaced(body)}{end}(.*)$", re.IGNORECASE)
    longest_first = sorted((word for _, word in verbalizers), key=lambda word: len(_normalised(word)), reverse=True)
    alternatives = "|".join(map(_spaced, longest_first))  # "No information" is tried before "No"
    whole = r"(?!\w|-\w)"
    return _Reader(
        prefix_pattern,
        re.compile(rf"{_OPEN}({alternatives}){whole}", re.IGNORECASE),
        re.compile(rf"{_CLOSE}\s*(?:or|and|/)\s*{_OPEN}(?:{alternatives}){whole}", re.IGNORECASE),
        {_normalised(word): label for label, word in verbalizers},
    )


def _spaced(words: str) -> str:
    return r"\s+".join(map(re.escape, words.split()))


def _normalised(word: str) -> str:
    return " ".join(word.split()).lower()


__all__ = [
    "NO_VERDICT", "DECISION_CUE_COLUMN", "DEFAULT_VERBALIZERS", "DEFAULT_VERDICT_PREFIX", "VerdictFormat",
    "VerdictLine", "read_verdict",
]
