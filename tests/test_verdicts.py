"""The one verdict reader, on real-looking explanation endings."""

import pytest

from clsgen_hf import NO_VERDICT, VerdictFormat, read_verdict


CASES = [
    ("The abstract reports a significant reduction.\nAnswer: Yes", 1),
    ("The trial was stopped early.\n\nAnswer: No", 0),
    ("answer: yes", 1),
    ("ANSWER:  NO.", 0),
    ("**Answer:** Yes", 1),
    ("**Final answer:** no", 0),
    ("### Verdict: **No**", 0),
    ("Final Answer - Yes!", 1),
    ("The answer is No.", 0),
    ("Reasoning first.\nYes.", 1),
    ("Answer: `Yes`", 1),
    ("Answer: not Yes", NO_VERDICT),  # negation
    ("Answer: Yes or No", NO_VERDICT),  # two labels on one line
    ("Answer: Yes\nOn reflection...\nAnswer: No", NO_VERDICT),  # two conflicting verdicts
    ("Answer: Yes\nAnswer: yes", 1),  # repeated, consistent
    ("Answer: Yesterday's data are unclear", NO_VERDICT),  # a word that merely starts like a verbalizer
    ("The results are mixed and no conclusion is given.", NO_VERDICT),
    ("", NO_VERDICT),
    (None, NO_VERDICT),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_read_verdict(text, expected):
    assert read_verdict(text) == expected


def test_custom_verbalizers_and_format():
    fmt = VerdictFormat({0: "Inconclusive", 1: "Evidence", 2: "No information"}, prefix="Verdict:")
    assert fmt.line(2) == "Verdict: No information"
    assert fmt.read("It gives background only.\nVerdict: no information") == 2
    assert fmt.read("Verdict: Evidence") == 1
    assert fmt.read("Verdict: Inconclusive") == 0
    assert "Verdict: Evidence" in fmt.instruction


def test_verdict_format_rejects_bad_verbalizers():
    with pytest.raises(ValueError, match="distinct"):
        VerdictFormat({0: "Yes", 1: "yes"})
    with pytest.raises(ValueError, match="at least two"):
        VerdictFormat({0: "Yes"})
    with pytest.raises(ValueError, match="no verbalizer"):
        VerdictFormat().line(3)
