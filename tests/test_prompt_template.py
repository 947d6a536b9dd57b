"""The one prompt pipeline: a row reaches the head as the same token ids in training and at prediction."""

import pytest
from datasets import Dataset

from clsgen_hf import CLSGenConfig, CLSGenTrainer, predict
from clsgen_hf.data import load_classification_dataset
from clsgen_hf.prompt_template import PromptTemplate, default_prompt_template, encode_prompts

from .toy import tiny_model_for


ROWS = [
    {"note": "The start. " + "filler words in the middle of a long note. " * 40 + "The decisive end.", "label": 1},
    {"note": "A short note.", "label": 0},
]


def test_training_and_prediction_read_the_same_prompt_ids_for_the_same_row(smollm2_tokenizer, tmp_path):
    """A long row is fitted to the template's budget once, in one way: the trainer's features (up to the token the
    head reads) equal what `predict`, the pipeline and `clsgen-hf predict` encode from the raw row and the saved
    template."""
    tokenizer = smollm2_tokenizer
    template = default_prompt_template("note", question="Is the note positive?", max_prompt_tokens=96)
    rows = load_classification_dataset(Dataset.from_list(ROWS), text_fields="note", label_field="label",
                                       prompt_template=template, tokenizer=tokenizer, max_prompt_tokens=96)
    explained = rows.add_column("completion", [[{"role": "assistant", "content": "Because.\nAnswer: Yes"}]] * 2)
    trainer = CLSGenTrainer(tiny_model_for(tokenizer), CLSGenConfig(str(tmp_path / "out"), use_cpu=True,
                            report_to=[], max_length=128), train_dataset=explained, processing_class=tokenizer)
    features = sorted(trainer.train_dataset, key=lambda row: -len(row["input_ids"]))  # the trainer may shuffle
    template.save_pretrained(tmp_path / "model")
    loaded = PromptTemplate.from_pretrained(tmp_path / "model")
    inference_ids = encode_prompts(tokenizer, [{"note": row["note"]} for row in ROWS], loaded)
    assert len(inference_ids[0]) <= 96 < len(encode_prompts(tokenizer, [template.to_messages(ROWS[0])])[0])
    for feature, ids in zip(features, inference_ids):
        assert feature["input_ids"][: feature["cls_positions"] + 1] == ids


def test_a_row_without_the_template_fields_is_named(smollm2_tokenizer):
    template = default_prompt_template("note")
    with pytest.raises(ValueError, match=r"Input 1 lacks the field\(s\) \['note'\].*present: \['text'\]"):
        encode_prompts(smollm2_tokenizer, [{"note": "ok"}, {"text": "no note"}], template)
    with pytest.raises(ValueError, match="Input 0 is a row without a `prompt`"):
        predict(tiny_model_for(smollm2_tokenizer), smollm2_tokenizer, [{"note": "ok"}], show_progress=False)


def test_the_template_is_the_users_to_set(tmp_path):
    template = default_prompt_template(["question", "passage"], question="Does the passage answer yes?",
                                       system="You answer yes/no questions.")
    content = template.to_messages({"question": "Is it?", "passage": "It is."})
    assert content[0]["content"] == "You answer yes/no questions."
    assert "Does the passage answer yes?" in content[1]["content"]
    with pytest.raises(ValueError, match="holds no prompt template"):
        PromptTemplate.from_pretrained(tmp_path)
    assert PromptTemplate.in_folder(tmp_path) is None
