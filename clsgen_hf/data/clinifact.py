"""CliniFact (Zhang et al., Sci. Data 2025): does a trial publication's abstract support a clinical claim?

Raw labels: 1 = evidence, 0 = inconclusive, 2 = no information; the CLSGen paper evaluates the binary view (evidence
vs the rest). `registry_rationale` writes free label-conditioned explanations, for runs with no capable teacher;
`grounded_rationale` quotes the abstract instead (the `grounded_rationale` column: `explanation_column`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, DatasetDict

from ..errors import UsageError
from ..prompt_template import PromptTemplate
from ..verdicts import VerdictFormat
from .classification import load_classification_dataset


CLINIFACT_TEXT_FIELDS = ("claim", "article_title", "article_abstract")
CLINIFACT_RATIONALE_COLUMN = "registry_rationale"
CLINIFACT_GROUNDED_COLUMN = "grounded_rationale"
CLINIFACT_SPLITS = ("train", "validation", "test")

_SYSTEM = "You are a clinical research expert who checks claims about clinical trials against published abstracts."
_USER = "Claim: {{ claim }}\n\nArticle title: {{ article_title }}\n\nAbstract: {{ article_abstract }}"

CLINIFACT_BINARY_TEMPLATE = PromptTemplate(
    _USER,
    system=_SYSTEM,
    question="Does the abstract report results that support the claim?",
    verdict_format=VerdictFormat({0: "No", 1: "Yes"}),
)
"""Binary view: 1 = the abstract reports evidence for the claim, 0 = inconclusive or no information."""

CLINIFACT_MULTICLASS_TEMPLATE = PromptTemplate(
    _USER,
    system=_SYSTEM,
    question=(
        "Does the abstract report results that support the claim (Evidence), report results that do not settle it "
        "(Inconclusive), or give only background with no results about it (No information)?"
    ),
    verdict_format=VerdictFormat({0: "Inconclusive", 1: "Evidence", 2: "No information"}),
)
"""3-class view, the dataset's own labels: 0 = inconclusive, 1 = evidence, 2 = no information."""

_BINARY_LABEL2ID = {0: 0, 1: 1, 2: 0}
_FINDINGS = {  # by raw label
    1: "The abstract reports results on this outcome that support the claim.",
    0: "The abstract reports results on this outcome, but they do not establish the claim.",
    2: "The abstract gives background only and reports no results on this outcome.",
}
_QUOTED_FINDINGS = {  # by raw label: what the quoted sentence shows
    1: "This result supports the claim.",
    0: "This result does not establish the claim.",
}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
_WORD = re.compile(r"[a-z0-9]{3,}")
_RESULT = re.compile(r"p\s*[<=>≤]|signific|\d\s*%|\bci\b|versus|\bvs\b|compared|reduc|increas|improv|differ|"
                     r"superior|inferior|efficac|effective", re.IGNORECASE)
_QUOTE_WORDS = 30


def registry_rationale(row: Mapping[str, Any]) -> str:
    """Two sentences from a CliniFact row's registry fields (arms, outcome) and its raw gold label (`original_label`
    in the binary view); the verdict line is the trainer's to add."""
    outcome = (row["outcome_title"] or "").strip() or "the claimed outcome"
    raw_label = int(row["original_label"] if "original_label" in row else row["label"])
    return (f"The claim compares {(row['intervention_group_title'] or '').strip()} with "
            f"{(row['comparator_group_title'] or '').strip()} on {outcome}. "
            + _FINDINGS[raw_label])


def grounded_rationale(row: Mapping[str, Any]) -> str:
    """An explanation grounded in the row's text: the abstract sentence that reports on the claim's outcome, quoted,
    then what it shows for the claim (by the raw gold label, `original_label` in the binary view); with no results
    on the outcome (raw label 2), the article's title, quoted. The verdict line is the trainer's to add."""
    outcome = (row["outcome_title"] or "").strip() or "the claimed outcome"
    raw_label = int(row["original_label"] if "original_label" in row else row["label"])
    if raw_label == 2:
        return f'The abstract reports no results on {outcome}; the article is about: "{row["article_title"].strip()}"'
    return f'The abstract reports: "{outcome_sentence(row)}" {_QUOTED_FINDINGS[raw_label]}'


def outcome_sentence(row: Mapping[str, Any]) -> str:
    """The abstract sentence that shares most words with the claim's outcome and arms, a reported result preferred
    (cut to its first words)."""
    topic = _words(row["outcome_title"])
    arms = _words(f"{row['intervention_group_title'] or ''} {row['comparator_group_title'] or ''}")
    sentences = _SENTENCE_END.split((row["article_abstract"] or "").strip())

    def score(sentence: str) -> int:
        words = _words(sentence)
        return 2 * len(topic & words) + len(arms & words) + 2 * bool(_RESULT.search(sentence))

    words = max(sentences, key=score).split()
    return " ".join(words[:_QUOTE_WORDS]) + (" ..." if len(words) > _QUOTE_WORDS else "")


def _words(text: str | None) -> set[str]:
    return set(_WORD.findall((text or "").lower()))


def load_clinifact(
    data_dir: str | Path,
    *,
    view: Literal["binary", "multiclass"] = "binary",
    splits: str | Sequence[str] = CLINIFACT_SPLITS,
    prompt_template: PromptTemplate | None = None,
    **kwargs,
) -> Dataset | DatasetDict:
    """CliniFact's `<split>.csv` files in `data_dir` as classifier prompts (claim, title, abstract), each row with its
    `registry_rationale` and `grounded_rationale`.

    Args:
        view: `"binary"` (the raw label kept as `original_label`) or `"multiclass"` (the three original labels).
        splits: one split name (returns a `Dataset`) or several (a `DatasetDict`).
        prompt_template: overrides the view's template (its verbalizers must cover the view's labels).
        **kwargs: passed to `load_classification_dataset` (`tokenizer`, `max_prompt_tokens`, `allow_empty_text`).
    """
    if view not in ("binary", "multiclass"):
        raise UsageError(f"`view` must be 'binary' or 'multiclass', got {view!r}.")
    names = [splits] if isinstance(splits, str) else list(splits)
    files = {name: Path(data_dir) / f"{name}.csv" for name in names}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        expected = [f"{split}.csv" for split in CLINIFACT_SPLITS]
        raise UsageError(f"CliniFact files missing: {missing}. The folder should hold {expected}.")
    default = CLINIFACT_BINARY_TEMPLATE if view == "binary" else CLINIFACT_MULTICLASS_TEMPLATE
    data = load_classification_dataset(
        files,
        text_fields=CLINIFACT_TEXT_FIELDS,
        label_field="label",
        label2id=_BINARY_LABEL2ID if view == "binary" else None,
        prompt_template=prompt_template or default,
        split=names[0] if isinstance(splits, str) else None,
        **kwargs,
    )
    return data.map(lambda row: {CLINIFACT_RATIONALE_COLUMN: registry_rationale(row),
                                 CLINIFACT_GROUNDED_COLUMN: grounded_rationale(row)})


__all__ = ["CLINIFACT_BINARY_TEMPLATE", "CLINIFACT_MULTICLASS_TEMPLATE", "CLINIFACT_RATIONALE_COLUMN",
           "load_clinifact", "CLINIFACT_GROUNDED_COLUMN", "grounded_rationale", "outcome_sentence",
           "registry_rationale"]
