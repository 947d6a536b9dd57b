"""The one verdict reader, on real-looking explanation endings."""

import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from clsgen_hf import NO_VERDICT, VerdictFormat, read_verdict
from clsgen_hf.data.clinifact import CLINIFACT_MULTICLASS_TEMPLATE


BINARY = VerdictFormat()
DECISION = VerdictFormat({0: "Refuted", 1: "Supported"}, prefix="Decision:")
FINAL_VERDICT = VerdictFormat({0: "Negative", 1: "Positive"}, prefix="Final verdict:")
CLINIFACT = CLINIFACT_MULTICLASS_TEMPLATE.verdict_format  # {0: "Inconclusive", 1: "Evidence", 2: "No information"}

BINARY_CASES = [
    ("The abstract reports a significant reduction.\nAnswer: Yes", 1),
    ("The trial was stopped early.\n\nAnswer: No", 0),
    ("answer: yes", 1),
    ("ANSWER:  NO.", 0),
    ("  Answer: No  ", 0),
    ("Answer:Yes", 1),
    ("Answer : Yes", 1),
    # markdown around the prefix and the word
    ("**Answer:** Yes", 1),
    ("**Answer**: No", 0),
    ("## Answer: Yes", 1),
    ("> Answer: No", 0),
    ("- Answer: Yes", 1),
    ("Answer: **Yes**.", 1),
    ("Answer: `Yes`", 1),
    ('Answer: "No"', 0),
    # the word on the next non-empty line
    ("Answer:\nYes", 1),
    ("**Answer:**\nNo", 0),
    ("The dose mattered.\nAnswer:\n\n  **Yes**", 1),
    ("Answer:\nAnswer: Yes", 1),
    ("Answer:\nThe abstract does not say.", NO_VERDICT),
    ("Answer:", NO_VERDICT),
    # the word first; what follows it is not read
    ("Answer: Yes, there is no doubt.", 1),
    ("Answer: No, not yes.", 0),
    ("Answer: Yes because the primary outcome improved, not worsened.", 1),
    # repeated and conflicting verdict lines
    ("Answer: Yes\nAnswer: yes", 1),
    ("Answer: Yes\nOn reflection...\nAnswer: No", NO_VERDICT),
    ("Answer: Yes\nAnswer: unclear", 1),  # an unreadable verdict line is ignored
    # negated, undecided or merely similar words
    ("Answer: not Yes", NO_VERDICT),
    ("Answer: Not yes", NO_VERDICT),
    ("Answer: Yes or No", NO_VERDICT),
    ("Answer: Yes/No", NO_VERDICT),
    ("Answer: Yesterday's data are unclear", NO_VERDICT),
    ("Answer: Nope", NO_VERDICT),
    ("Answer: No-one can tell", NO_VERDICT),
    ("Answer: unclear", NO_VERDICT),
    ("Answer: The answer is Yes", NO_VERDICT),
    # no verdict line: prose, a bare final word, other prefixes, the prefix elsewhere than at the start
    ("The conclusion is that there was no significant difference.", NO_VERDICT),
    ("Label - the outcome showed no change.", NO_VERDICT),
    ("The answer is not clearly yes.", NO_VERDICT),
    ("The answer is No.", NO_VERDICT),
    ("Reasoning first.\nYes.", NO_VERDICT),
    ("Final answer: Yes", NO_VERDICT),
    ("**Final answer:** no", NO_VERDICT),
    ("### Verdict: **No**", NO_VERDICT),
    ("Final Answer - Yes!", NO_VERDICT),
    ("Answers: Yes", NO_VERDICT),
    ("In short, Answer: Yes", NO_VERDICT),
    ("The answer: Yes", NO_VERDICT),
    ("The results are mixed and no conclusion is given.", NO_VERDICT),
    ("", NO_VERDICT),
    (None, NO_VERDICT),
]

DECISION_CASES = [
    ("The evidence backs the claim.\nDecision: Supported", 1),
    ("decision: refuted", 0),
    ("**Decision:** Supported.", 1),
    ("Decision:\nRefuted", 0),
    ("Decision: Supported, though it is not refuted elsewhere.", 1),
    ("Decision: Supported\nDecision: Refuted", NO_VERDICT),
    ("Decision: not supported", NO_VERDICT),
    ("Decision: Unsupported", NO_VERDICT),
    ("Decision: Yes", NO_VERDICT),  # the default verbalizers are not this format's
    ("Answer: Supported", NO_VERDICT),  # nor is the default prefix
]

FINAL_VERDICT_CASES = [
    ("Both arms improved.\nFinal verdict: Positive", 1),
    ("FINAL VERDICT: negative", 0),
    ("Final  verdict: Positive", 1),
    ("## Final verdict:\n**Negative**", 0),
    ("Final verdict: Positive or Negative", NO_VERDICT),
    ("Verdict: Positive", NO_VERDICT),
    ("Final verdict - Positive", NO_VERDICT),
    ("The final verdict: Positive", NO_VERDICT),
]

CLINIFACT_CASES = [
    ("The abstract reports a benefit.\nAnswer: Evidence", 1),
    ("Answer: Inconclusive", 0),
    ("Answer: No information", 2),
    ("Answer: no  information.", 2),
    ("**Answer:**\nNo information", 2),
    ("Answer: Evidence, no information is missing.", 1),
    ("Answer: Evidence\nAnswer: No information", NO_VERDICT),
    ("Answer: No evidence", NO_VERDICT),
    ("Answer: lack of evidence", NO_VERDICT),
    ("Answer: not Evidence", NO_VERDICT),
    ("Answer: No", NO_VERDICT),
    ("Answer: Information", NO_VERDICT),
    ("Answer: Evidences", NO_VERDICT),
]

NESTED = VerdictFormat({0: "No", 1: "Yes", 2: "No information"})
NESTED_CASES = [  # a verbalizer opening with another one is tried first
    ("Answer: No information", 2),
    ("Answer: No, information is missing", 0),
    ("Answer: No info", 0),
    ("Answer: No information or Yes", NO_VERDICT),
]

EVIDENCE = VerdictFormat({0: "No evidence", 1: "Evidence"}, prefix="Verdict:")
EVIDENCE_CASES = [
    ("Verdict: No evidence", 0),
    ("Verdict: Evidence", 1),
    ("Verdict: no  evidence, only background", 0),
    ("Verdict: not evidence", NO_VERDICT),
    ("Verdict: No", NO_VERDICT),
]

CASES = [
    pytest.param(fmt, text, expected, id=f"{name}-{i}")
    for name, fmt, cases in [
        ("binary", BINARY, BINARY_CASES),
        ("decision", DECISION, DECISION_CASES),
        ("final_verdict", FINAL_VERDICT, FINAL_VERDICT_CASES),
        ("clinifact", CLINIFACT, CLINIFACT_CASES),
        ("nested", NESTED, NESTED_CASES),
        ("evidence", EVIDENCE, EVIDENCE_CASES),
    ]
    for i, (text, expected) in enumerate(cases)
]


@pytest.mark.parametrize("fmt, text, expected", CASES)
def test_read_verdict(fmt, text, expected):
    assert fmt.read(text) == expected
    assert read_verdict(text, fmt.verbalizers, fmt.prefix) == expected


def test_read_verdict_defaults_to_answer_no_yes():
    assert read_verdict("Answer: Yes") == 1
    assert read_verdict("Decision: Yes") == NO_VERDICT
    assert read_verdict("Decision: Yes", prefix="Decision:") == 1


def test_a_format_reads_its_own_lines():
    for fmt in (BINARY, DECISION, FINAL_VERDICT, CLINIFACT, VerdictFormat(prefix="Decision:")):
        for label in fmt.verbalizers:
            assert fmt.read(f"Some reasoning.\n{fmt.line(label)}") == label


def test_custom_verbalizers_and_format():
    fmt = VerdictFormat({0: "Inconclusive", 1: "Evidence", 2: "No information"}, prefix="Verdict:")
    assert fmt.line(2) == "Verdict: No information"
    assert fmt.read("It gives background only.\nVerdict: no information") == 2
    assert fmt.read("Verdict: Evidence") == 1
    assert fmt.read("Verdict: Inconclusive") == 0
    assert fmt.read("Answer: Evidence") == NO_VERDICT
    assert "Verdict: Evidence" in fmt.instruction


@pytest.mark.parametrize(
    "explanation, reasoning",
    [
        ("It improved.\nAnswer: Yes", "It improved."),
        ("Answer: No\nBecause nothing changed.", ""),
        ("Explanation: dose mattered.\n**Answer**: Yes\nmore", "Explanation: dose mattered."),
        ("Answers differ between arms.\nAnswer:", "Answers differ between arms."),
        ("It improved.\nAnswer:\nYes", "It improved."),
        ("It improved.\nYes.", "It improved.\nYes."),  # a bare word is no verdict line
        ("The answer is yes.\nFinal answer: Yes", "The answer is yes.\nFinal answer: Yes"),
        ("No verdict at all", "No verdict at all"),
    ],
)
def test_strip(explanation, reasoning):
    assert BINARY.strip(explanation) == reasoning


def test_verdict_lines():
    text = "Reasons.\nAnswer:\n\n**Yes**\nAnswer: maybe\nMore.\n- Answer: No"
    assert BINARY.verdict_lines(text) == [(1, 4, 1), (4, 5, NO_VERDICT), (6, 7, 0)]
    assert BINARY.verdict_lines("No verdict.") == []


def test_verdict_format_rejects_bad_verbalizers_and_prefixes():
    with pytest.raises(ValueError, match="distinct"):
        VerdictFormat({0: "Yes", 1: "yes"})
    with pytest.raises(ValueError, match="distinct"):
        VerdictFormat({0: "No information", 1: "no  information"})
    with pytest.raises(ValueError, match="distinct"):
        VerdictFormat({0: "No", 1: ""})
    with pytest.raises(ValueError, match="at least two"):
        VerdictFormat({0: "Yes"})
    with pytest.raises(ValueError, match="no verbalizer"):
        VerdictFormat().line(3)
    for prefix in ("", "   ", "Answer:\nFinal:"):
        with pytest.raises(ValueError, match="prefix"):
            VerdictFormat(prefix=prefix)
    with pytest.raises(ValueError, match="prefix"):
        read_verdict("Answer: Yes", prefix="")


# --------------------------------------------------------------------------------------------------- property

_WORD = st.text(string.ascii_letters, min_size=1, max_size=8)
_PREFIXES = ["Answer:", "Decision:", "Final verdict:", "Verdict -", "Label =", "Conclusion", "**Answer:**", "=>"]
_VERBALIZERS = ["No", "Yes", "Not yes", "No information", "Evidence", "No evidence", "Inconclusive", "Refuted"]


def _unit(text: str) -> str:
    return " ".join(text.split()).lower()


@st.composite
def _explanations(draw):
    """A format, reasoning with no line opening with its prefix (but its verbalizers, "no", "not" and the prefix
    itself elsewhere), and a label."""
    prefix = draw(st.sampled_from(_PREFIXES) | _WORD.map(lambda word: f"{word}:"))
    words = draw(
        st.lists(st.sampled_from(_VERBALIZERS) | st.lists(_WORD, min_size=1, max_size=3).map(" ".join),
                 min_size=2, max_size=4, unique_by=_unit)
    )
    if draw(st.booleans()):  # one verbalizer opening with another, as "No information" with "No"
        longer = f"{draw(st.sampled_from(words))} {draw(_WORD)}"
        assume(_unit(longer) not in map(_unit, words))
        words = draw(st.permutations([*words, longer]))
    fmt = VerdictFormat(dict(enumerate(words)), prefix)
    token = st.sampled_from([*words, "no", "not", "or", prefix, prefix.rstrip(":"), "Answer:"]) | _WORD
    lines = draw(st.lists(st.lists(token, max_size=10).map(" ".join), max_size=6))
    assume(not any(_unit(line).startswith(_unit(prefix)) for line in lines))
    return fmt, "\n".join(lines), draw(st.sampled_from(sorted(fmt.verbalizers)))


@settings(max_examples=300, deadline=None)
@given(_explanations())
def test_the_appended_verdict_line_is_read(case):
    fmt, reasoning, label = case
    explanation = f"{reasoning}\n{fmt.line(label)}"
    assert fmt.read(explanation) == label
    assert fmt.strip(explanation) == reasoning.strip()


def test_stop_strings_cue_and_ending():
    fmt = VerdictFormat()
    assert fmt.stop_strings == ["Answer: No", "Answer: Yes"]
    assert fmt.cue(1) == "Answer: Yes\n"
    # stopping at "Answer: No" would cut "Answer: No information"
    assert VerdictFormat({0: "No", 1: "Yes", 2: "No information"}).stop_strings == ["Answer: Yes",
                                                                                   "Answer: No information"]
    assert fmt.ends_with_verdict("Because.\nAnswer: Yes\n\n")
    assert fmt.ends_with_verdict("Because.\n**Answer:**\nNo")
    assert not fmt.ends_with_verdict("Answer: Yes\nand then it went on")
    assert not fmt.ends_with_verdict("Because.\nAnswer: maybe")
    assert not fmt.ends_with_verdict("")
