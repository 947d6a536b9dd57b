"""`clsgen-hf export --format serving`: two folders of standard transformers architectures (no remote code) that give
the CLSGen model's calibrated probabilities and its explanations."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from clsgen_hf import LlamaForCLSGen, predict
from clsgen_hf.cli import main as cli_main
from clsgen_hf.data import PromptTemplate
from clsgen_hf.prompt_template import encode_prompts

from .toy import tiny_model_for


TEMPLATE = PromptTemplate("{{ text }}", system="Classify.", question="Improved?")
TEXTS = ("the dose improved", "the patient trial arm group week study result measure unchanged", "outcome")
CALIBRATIONS = {  # name -> config overrides, whether the head gets a random bias
    "platt": (dict(cls_logit_scale=0.7, cls_logit_bias=[0.3, -0.9]), True),  # a per-class offset: stays in the config
    "temperature": (dict(cls_logit_scale=1.8), False),  # none: the classifier's own softmax is calibrated
}


def _source(folder: Path, tokenizer, calibration: str = "platt", **overrides) -> LlamaForCLSGen:
    """A trained-looking tiny CLSGen model folder: labels, threshold, calibration map, a non-zero head bias."""
    config, random_bias = CALIBRATIONS[calibration]
    model = tiny_model_for(tokenizer, id2label={0: "No", 1: "Yes"}, cls_threshold=0.35, **config, **overrides)
    with torch.no_grad():
        model.score.weight.normal_(std=2.0)
        model.score.bias.copy_(torch.randn(2) if random_bias else torch.zeros(2))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    TEMPLATE.save_pretrained(folder)
    return model.eval()


def _export(source: Path, dest: Path, *extra: str) -> None:
    assert cli_main(["export", str(source), str(dest), "--format", "serving", *extra]) == 0


def _load(folder: Path, auto_class=AutoModelForSequenceClassification):
    """An exported folder as an engine user loads it: a plain Auto class, no remote code, and its tokenizer."""
    return auto_class.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _prompts(tokenizer) -> list[list[int]]:
    return encode_prompts(tokenizer, [TEMPLATE.to_messages({"text": text}) for text in TEXTS])


def _batch(tokenizer, ids: list[list[int]], side: str = "left"):
    tokenizer.padding_side = side
    return tokenizer.pad({"input_ids": ids}, return_tensors="pt")


@torch.no_grad()
def _served_probabilities(classifier, inputs) -> torch.Tensor:
    """What an engine user computes: softmax of the classifier's logits, plus `cls_logit_bias` when it has one."""
    bias = classifier.config.cls_logit_bias
    return (classifier(**inputs).logits + torch.tensor(bias or 0.0)).softmax(-1)


@pytest.mark.parametrize("calibration", CALIBRATIONS)
def test_classifier_gives_the_calibrated_probabilities(tmp_path, smollm2_tokenizer, calibration):
    source = _source(tmp_path / "src", smollm2_tokenizer, calibration)
    _export(tmp_path / "src", tmp_path / "dest")
    classifier, tokenizer = _load(tmp_path / "dest" / "classifier")
    assert type(classifier) is LlamaForSequenceClassification
    assert classifier.config.cls_threshold == 0.35 and classifier.config.id2label == {0: "No", 1: "Yes"}
    assert classifier.score.bias is None  # transformers' class has no bias: the reason for `cls_logit_bias`

    ids = _prompts(tokenizer)
    assert len({len(x) for x in ids}) == len(ids)  # the batches below are really padded
    batches = [_batch(tokenizer, [x]) for x in ids] + [_batch(tokenizer, ids, "left"), _batch(tokenizer, ids, "right")]
    for inputs in batches:
        with torch.no_grad():
            expected = source(**inputs).cls_probabilities
        torch.testing.assert_close(_served_probabilities(classifier, inputs), expected, atol=1e-5, rtol=0)

    inputs = _batch(tokenizer, ids)
    with torch.no_grad():
        plain_softmax = classifier(**inputs).logits.softmax(-1)
        expected = source(**inputs).cls_probabilities
    if calibration == "temperature":  # folded exactly: the engine's own softmax is the calibrated probability
        assert classifier.config.cls_logit_bias is None
        torch.testing.assert_close(plain_softmax, expected, atol=1e-5, rtol=0)
    else:  # the per-class offset, relative to class 0, is what a bias-free `score` cannot hold
        config = source.config
        offset = [0.7 * (source.score.bias[1] - source.score.bias[0]).item() + config.cls_logit_bias[1] - 0.3]
        assert classifier.config.cls_logit_bias[0] == 0.0
        assert classifier.config.cls_logit_bias[1:] == pytest.approx(offset, abs=1e-6)
        assert (plain_softmax - expected).abs().max() > 1e-3


def test_predict_on_the_classifier_gives_the_sources_records(tmp_path, smollm2_tokenizer):
    """`predict` at `max_new_tokens=0` takes a `*ForSequenceClassification`: the served classifier's records are the
    source's, probabilities (its `cls_logit_bias` applied) and decisions at the stored threshold."""
    source = _source(tmp_path / "src", smollm2_tokenizer)
    _export(tmp_path / "src", tmp_path / "dest")
    classifier, tokenizer = _load(tmp_path / "dest" / "classifier")
    rows = [{"text": text} for text in TEXTS]
    served, expected = (predict(model, tok, rows, prompt_template=TEMPLATE, max_new_tokens=0, show_progress=False)
                        for model, tok in ((classifier, tokenizer), (source, smollm2_tokenizer)))
    np.testing.assert_allclose([r["probability"] for r in served], [r["probability"] for r in expected], atol=1e-5)
    assert [r["label"] for r in served] == [r["label"] for r in expected]


@pytest.mark.parametrize("tied", [True, False])
def test_generator_writes_the_same_explanations(tmp_path, smollm2_tokenizer, tied):
    source = _source(tmp_path / "src", smollm2_tokenizer, tie_word_embeddings=tied)
    _export(tmp_path / "src", tmp_path / "dest")
    generator, tokenizer = _load(tmp_path / "dest" / "generator", AutoModelForCausalLM)
    assert type(generator) is LlamaForCausalLM
    assert (generator.lm_head.weight is generator.model.embed_tokens.weight) == tied
    torch.testing.assert_close(generator.lm_head.weight, source.lm_head.weight, atol=0, rtol=0)
    assert tokenizer.chat_template == smollm2_tokenizer.chat_template
    ids = _prompts(tokenizer)
    for inputs in [_batch(tokenizer, ids[:1]), _batch(tokenizer, ids)]:
        with torch.no_grad():
            expected = source.classify_and_generate(**inputs, max_new_tokens=6, do_sample=False).sequences
            generated = generator.generate(**inputs, max_new_tokens=6, do_sample=False)
        assert generated.tolist() == expected.tolist()


def test_an_adapter_is_merged_into_both_folders(tmp_path, smollm2_tokenizer):
    from peft import LoraConfig, get_peft_model

    _source(tmp_path / "base", smollm2_tokenizer)
    base = LlamaForCLSGen.from_pretrained(tmp_path / "base")
    adapter = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["score"],
                                               init_lora_weights=False)).eval()
    adapter.save_pretrained(tmp_path / "adapter")
    smollm2_tokenizer.save_pretrained(tmp_path / "adapter")
    _export(tmp_path / "adapter", tmp_path / "dest")
    classifier, _ = _load(tmp_path / "dest" / "classifier")
    inputs = _batch(smollm2_tokenizer, _prompts(smollm2_tokenizer))
    with torch.no_grad():
        expected = adapter(**inputs).cls_probabilities
    torch.testing.assert_close(_served_probabilities(classifier, inputs), expected, atol=1e-5, rtol=0)


def test_folders_need_no_remote_code(tmp_path, smollm2_tokenizer):
    _source(tmp_path / "src", smollm2_tokenizer)
    _export(tmp_path / "src", tmp_path / "dest")
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["classifier", "generator"]
    for name, architecture in (("classifier", "LlamaForSequenceClassification"), ("generator", "LlamaForCausalLM")):
        folder = tmp_path / "dest" / name
        config = json.loads((folder / "config.json").read_text())
        assert "auto_map" not in config and config["model_type"] == "llama"
        assert config["architectures"] == [architecture]
        assert not [k for k in config if k.startswith("cls_") and k not in ("cls_threshold", "cls_logit_bias")]
        assert not list(folder.rglob("*.py"))
        assert json.loads((folder / "clsgen_prompt.json").read_text()) == TEMPLATE.to_dict()
        assert {"model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    assert "cls_threshold" not in json.loads((tmp_path / "dest" / "generator" / "config.json").read_text())
    assert (tmp_path / "dest" / "generator" / "generation_config.json").is_file()


def test_a_pad_token_that_ends_the_prompts_is_replaced_for_pooling(tmp_path, smollm2_tokenizer):
    """The sequence classifier pools the rightmost non-pad token: with pad = the generation prompt's last token (`\\n`)
    it would read an earlier one, so the export gives the classifier another pad token."""
    newline = smollm2_tokenizer.convert_tokens_to_ids("Ċ")
    smollm2_tokenizer.pad_token = "Ċ"
    assert {ids[-1] for ids in _prompts(smollm2_tokenizer)} == {newline}
    source = _source(tmp_path / "src", smollm2_tokenizer)
    _export(tmp_path / "src", tmp_path / "dest")
    classifier, tokenizer = _load(tmp_path / "dest" / "classifier")
    assert classifier.config.pad_token_id == tokenizer.pad_token_id != newline
    # generation keeps it
    assert AutoTokenizer.from_pretrained(tmp_path / "dest" / "generator").pad_token_id == newline
    for side in ("left", "right"):
        inputs = _batch(tokenizer, _prompts(tokenizer), side)
        with torch.no_grad():
            expected = source(**inputs).cls_probabilities
        torch.testing.assert_close(_served_probabilities(classifier, inputs), expected, atol=1e-5, rtol=0)


def test_overwrite_replaces_a_serving_export_only(tmp_path, smollm2_tokenizer, capsys):
    _source(tmp_path / "src", smollm2_tokenizer)
    dest = tmp_path / "dest"
    _export(tmp_path / "src", dest, "--no_validate")
    argv = ["export", str(tmp_path / "src"), str(dest), "--format", "serving", "--no_validate"]
    assert cli_main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    _export(tmp_path / "src", dest, "--no_validate", "--overwrite")
    (dest / "generator" / "notes.txt").write_text("mine")
    assert cli_main(argv + ["--overwrite"]) == 2
    assert "generator/, which holds notes.txt" in capsys.readouterr().err
    assert (dest / "generator" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src"]  # no staging folder left behind


@pytest.mark.slow
def test_embedded_model_classifier_gives_the_calibrated_probabilities(tmp_path, smollm2):
    model, tokenizer = smollm2
    ids = _prompts(tokenizer)[:2]
    saved = model.config.cls_logit_scale, model.config.cls_logit_bias
    model.config.cls_logit_scale, model.config.cls_logit_bias = 0.8, [0.0, 0.5]
    try:
        model.save_pretrained(tmp_path / "src")
        with torch.no_grad():
            expected = model(**_batch(tokenizer, ids)).cls_probabilities
    finally:
        model.config.cls_logit_scale, model.config.cls_logit_bias = saved
    tokenizer.save_pretrained(tmp_path / "src")
    _export(tmp_path / "src", tmp_path / "dest", "--no_validate")
    classifier, served_tokenizer = _load(tmp_path / "dest" / "classifier")
    assert _prompts(served_tokenizer)[:2] == ids
    probabilities = _served_probabilities(classifier, _batch(served_tokenizer, ids))
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=0)
