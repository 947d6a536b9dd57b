"""Loading classification datasets into classifier prompts: formats, labels, templates, errors, truncation."""

import json
import logging
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from clsgen_hf.data import (
    CLINIFACT_BINARY_TEMPLATE,
    CLINIFACT_MULTICLASS_TEMPLATE,
    CLINIFACT_RATIONALE_COLUMN,
    PromptTemplate,
    count_prompt_tokens,
    default_prompt_template,
    describe_dataset,
    fit_prompts,
    load_classification_dataset,
    load_clinifact,
    registry_rationale,
    with_decision_cues,
)
from clsgen_hf.data.clinifact import CLINIFACT_GROUNDED_COLUMN, grounded_rationale
from clsgen_hf.errors import UsageError
from clsgen_hf.verdicts import DECISION_CUE_COLUMN, VerdictFormat


CLINIFACT_DIR = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "clinifact")
ROWS = [
    {"title": "Great", "body": "Loved it.", "stars": 1},
    {"title": "Bad", "body": "Broke at once.", "stars": 0},
    {"title": "Fine", "body": "Does the job.", "stars": 1},
]


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "reviews.csv"
    Dataset.from_list(ROWS).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def clinifact_train():
    return load_clinifact(CLINIFACT_DIR, splits="train")


def _check_rows(ds: Dataset):
    assert ds["label"] == [1, 0, 1]
    assert {"title", "body", "stars", "prompt", "label"} <= set(ds.column_names)
    system, user = ds[1]["prompt"]
    assert system["role"] == "system" and user["role"] == "user"
    assert "Title: Bad" in user["content"] and "Body: Broke at once." in user["content"]
    assert user["content"].endswith(VerdictFormat().instruction)


def test_load_csv(csv_file):
    _check_rows(load_classification_dataset(csv_file, text_fields=["title", "body"], label_field="stars"))


def test_load_jsonl_and_parquet(tmp_path):
    Dataset.from_list(ROWS).to_json(tmp_path / "r.jsonl", lines=True)
    Dataset.from_list(ROWS).to_parquet(tmp_path / "r.parquet")
    for name in ("r.jsonl", "r.parquet"):
        _check_rows(load_classification_dataset(tmp_path / name, text_fields=["title", "body"], label_field="stars"))


def test_load_dataset_objects_and_splits(csv_file):
    ds = Dataset.from_list(ROWS)
    _check_rows(load_classification_dataset(ds, text_fields=["title", "body"], label_field="stars"))
    both = load_classification_dataset(
        DatasetDict(train=ds, test=ds), text_fields=["title", "body"], label_field="stars"
    )
    assert isinstance(both, DatasetDict) and set(both) == {"train", "test"}
    files = {"train": csv_file, "validation": csv_file}
    one = load_classification_dataset(files, text_fields=["title", "body"], label_field="stars", split="validation")
    _check_rows(one)


def test_string_labels_through_label2id():
    rows = [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}]
    ds = load_classification_dataset(
        Dataset.from_list(rows), text_fields="text", label_field="label", label2id={"neg": 0, "pos": 1}
    )
    assert ds["label"] == [1, 0]
    assert ds["original_label"] == ["pos", "neg"]


def test_clinifact_views(clinifact_train):
    assert len(clinifact_train) == 1260
    assert clinifact_train["label"].count(1) == 366 and clinifact_train["label"].count(0) == 894
    assert sorted(set(clinifact_train["original_label"])) == [0, 1, 2]
    user = clinifact_train[0]["prompt"][1]["content"]
    assert clinifact_train[0]["claim"] in user and clinifact_train[0]["article_title"] in user
    multi = load_clinifact(CLINIFACT_DIR, view="multiclass", splits=["validation"])
    assert isinstance(multi, DatasetDict)
    assert [multi["validation"]["label"].count(k) for k in (0, 1, 2)] == [67, 83, 166]


def test_registry_rationale_states_the_finding(clinifact_train):
    row = {"intervention_group_title": "Drug A ", "comparator_group_title": "Placebo", "outcome_title": "Pain",
           "original_label": 2}
    assert registry_rationale(row) == (
        "The claim compares Drug A with Placebo on Pain. The abstract gives background only and reports no results "
        "on this outcome."
    )
    assert "support the claim" in registry_rationale({**row, "original_label": 1})
    evidence = clinifact_train.filter(lambda row: row["original_label"] == 1)[0]
    assert evidence[CLINIFACT_RATIONALE_COLUMN] == registry_rationale(evidence)
    assert "support the claim" in evidence[CLINIFACT_RATIONALE_COLUMN]


def test_grounded_rationale_quotes_the_abstract_sentence_on_the_outcome(clinifact_train):
    row = {"intervention_group_title": "Drug A ", "comparator_group_title": "Placebo", "outcome_title": "Pain score",
           "article_title": "A trial of drug A. ", "original_label": 2,
           "article_abstract": "Pain is common. We randomised 80 adults. The pain score fell with drug A "
                               "versus placebo (p < 0.01). Drug A was well tolerated."}
    assert grounded_rationale(row) == ('The abstract reports no results on Pain score; the article is about: "A trial '
                                       'of drug A."')
    assert grounded_rationale({**row, "original_label": 1}) == (
        'The abstract reports: "The pain score fell with drug A versus placebo (p < 0.01)." This result supports the '
        "claim.")
    assert grounded_rationale({**row, "original_label": 0}).endswith("This result does not establish the claim.")
    evidence = clinifact_train.filter(lambda row: row["original_label"] == 1)[0]
    assert evidence[CLINIFACT_GROUNDED_COLUMN] == grounded_rationale(evidence)
    quote = evidence[CLINIFACT_GROUNDED_COLUMN].split('"')[1].removesuffix(" ...")
    assert quote in evidence["article_abstract"]  # grounded: copied from the row, not a paraphrase of the claim


def test_decision_cues_start_a_share_of_the_completions():
    fmt = VerdictFormat()
    rows = Dataset.from_list([{"prompt": "p", "completion": [{"role": "assistant", "content": f"Why {i}.\nAnswer: "
                                                                f"{'Yes' if i % 2 else 'No'}"}], "label": i % 2}
                              for i in range(40)])
    cued = with_decision_cues(rows, fmt, 0.5)
    chosen = [row for row in cued if row[DECISION_CUE_COLUMN]]
    assert 10 < len(chosen) < 30
    for row, before in zip(cued, rows):
        content = row["completion"][0]["content"]
        if row[DECISION_CUE_COLUMN]:
            assert row[DECISION_CUE_COLUMN] == fmt.cue(row["label"])
            assert content == fmt.cue(row["label"]) + before["completion"][0]["content"]
        else:
            assert content == before["completion"][0]["content"]
    assert not any(with_decision_cues(rows, fmt, 0.0)[DECISION_CUE_COLUMN])
    with pytest.raises(UsageError):
        with_decision_cues(rows, fmt, 1.5)


def test_clinifact_verbalizers_are_read_back():
    for template in (CLINIFACT_BINARY_TEMPLATE, CLINIFACT_MULTICLASS_TEMPLATE):
        fmt = template.verdict_format
        for label in fmt.verbalizers:
            assert fmt.read(f"Because of the results.\n{fmt.line(label)}") == label


def test_prompt_template_jinja_format_and_json(tmp_path):
    fmt = VerdictFormat({0: "Negative", 1: "Positive"}, prefix="Verdict:")
    jinja = PromptTemplate("Review: {{ body | upper }}", system="S", question="Q?", verdict_format=fmt)
    plain = PromptTemplate("Review: {body}", question="Q?", verdict_format=fmt)
    assert jinja.fields == plain.fields == ("body",)
    assert jinja.to_messages({"body": "ok"})[1]["content"].startswith("Review: OK\n\nQ?\n")
    assert plain.to_messages({"body": "{x}"})[1]["content"].startswith("Review: {x}")
    jinja.save_pretrained(tmp_path)
    assert PromptTemplate.from_pretrained(tmp_path) == jinja
    assert PromptTemplate.from_pretrained(tmp_path / "clsgen_prompt.json") == jinja
    assert PromptTemplate.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain


def test_missing_field_lists_columns(csv_file):
    with pytest.raises(ValueError, match=r"'summary'.*\['title', 'body', 'stars'\]"):
        load_classification_dataset(csv_file, text_fields=["summary"], label_field="stars")
    with pytest.raises(ValueError, match=r"'grade'.*columns"):
        load_classification_dataset(csv_file, text_fields=["body"], label_field="grade")


def test_labels_outside_the_set_are_listed_with_counts():
    rows = [{"text": "x", "label": v} for v in (0, 1, 2, 2, 7)]
    with pytest.raises(ValueError, match=r"2 \(2 rows\), 7 \(1 rows\)"):
        load_classification_dataset(Dataset.from_list(rows), text_fields="text", label_field="label")
    strings = Dataset.from_list([{"text": "x", "label": "maybe"}, {"text": "y", "label": "yes"}])
    with pytest.raises(ValueError, match=r"'maybe' \(1 rows\)"):
        load_classification_dataset(strings, text_fields="text", label_field="label", label2id={"yes": 1, "no": 0})


def test_empty_text_raises_with_rows_or_is_skipped(caplog):
    rows = [{"text": text, "label": i % 2} for i, text in enumerate(["fine", "  ", None, "ok"])]
    with pytest.raises(ValueError, match=r"rows 1, 2"):
        load_classification_dataset(Dataset.from_list(rows), text_fields="text", label_field="label")
    with caplog.at_level(logging.WARNING):
        ds = load_classification_dataset(
            Dataset.from_list(rows), text_fields="text", label_field="label", allow_empty_text=True
        )
    assert ds["text"] == ["fine", "ok"] and "Skipping 2 rows" in caplog.text


def test_long_prompts_are_cut_in_the_middle(smollm2_tokenizer, caplog):
    long_text = "BEGIN " + "filler words here. " * 300 + "the decisive END"
    rows = [{"text": long_text, "label": 1}, {"text": "short", "label": 0}]
    with caplog.at_level(logging.WARNING):
        ds = load_classification_dataset(
            Dataset.from_list(rows), text_fields="text", label_field="label",
            tokenizer=smollm2_tokenizer, max_prompt_tokens=200,
        )
    cut = ds[0]["prompt"][1]["content"]
    assert count_prompt_tokens(smollm2_tokenizer, ds[0]["prompt"]) <= 200
    assert "BEGIN" in cut and "[...]" in cut and "decisive END" in cut and cut.endswith(VerdictFormat().instruction)
    assert ds[1]["prompt"][1]["content"].startswith("Text: short")
    assert "1 of 2 prompts" in caplog.text
    assert ds[0]["text"] == long_text  # the original column is untouched
    unfitted = load_classification_dataset(Dataset.from_list(rows), text_fields="text", label_field="label")
    fitted_later = fit_prompts(unfitted, default_prompt_template("text"), smollm2_tokenizer, 200)
    assert list(fitted_later["prompt"]) == list(ds["prompt"]) and fitted_later.column_names == ds.column_names


def test_two_long_fields_are_both_cut_when_the_longest_cannot_absorb_the_excess(smollm2_tokenizer):
    template = default_prompt_template(["claim", "body"])
    row = {"claim": "CLAIM " + "claim words. " * 120 + "CLAIM-END",
           "body": "BODY " + "body words. " * 150 + "BODY-END"}
    messages, was_cut = template.fit(row, smollm2_tokenizer, 120)
    text = messages[-1]["content"]
    assert was_cut and count_prompt_tokens(smollm2_tokenizer, messages) <= 120
    assert text.count("[...]") == 2 and "CLAIM-END" in text and "BODY-END" in text
    with pytest.raises(ValueError, match="max_prompt_tokens=20 is too small"):
        template.fit(row, smollm2_tokenizer, 20)


def test_describe_dataset(smollm2_tokenizer):
    ds = load_classification_dataset(Dataset.from_list(ROWS), text_fields=["title", "body"], label_field="stars")
    text = describe_dataset(ds, smollm2_tokenizer)
    assert "3 rows" in text and "label 0: 1 (33.3%)" in text and "label 1: 2 (66.7%)" in text
    assert "prompt tokens: mean" in text and "p90" in text
    assert default_prompt_template(["title", "body"]).fields == ("title", "body")
