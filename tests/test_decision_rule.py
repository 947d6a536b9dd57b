"""The decision rule (calibration map, threshold, labels) survives every save and load path: adapter folders,
checkpoints, exports, the trainer's evaluation; and one-class validation rows never cost the trained weights."""

import copy
import logging

import numpy as np
import pytest
from transformers import AutoModel

from clsgen_hf import (
    Calibration,
    CLSGenConfig,
    CLSGenTrainer,
    LlamaForCLSGen,
    build_model_card,
    export_model,
    fit_decision_rule,
    load_model_and_tokenizer,
    predict,
)
from clsgen_hf.calibration import RULE_FILE, DecisionRule
from clsgen_hf.model_folders import inspect_model_folder, load_model_folder

from .toy import lora_config, tiny_model_for, toy_dataset


CALIBRATION = Calibration("platt", scale=0.5, bias=[0.0, 1.5])


def _probabilities(model, tokenizer, prompts) -> tuple[np.ndarray, list[int]]:
    records = predict(model, tokenizer, prompts, max_new_tokens=0, show_progress=False)
    return np.array([r["probability"] for r in records]), [r["label"] for r in records]


@pytest.fixture(scope="module", params=[False, True], ids=["adapter", "merged"])
def run(request, tmp_path_factory, _smollm2_tokenizer):
    """A 2-step LoRA run, checkpointed, whose rule is set after training and saved as the adapter or merged; returns
    (output folder, trainer, tokenizer, prompts, the trained model's probabilities and labels)."""
    root = tmp_path_factory.mktemp("rule")
    tokenizer = copy.deepcopy(_smollm2_tokenizer)
    tiny_model_for(tokenizer).save_pretrained(root / "base")
    args = CLSGenConfig(str(root / "out"), per_device_train_batch_size=4, learning_rate=1e-2, max_steps=2,
                        save_strategy="steps", save_steps=2, report_to=[], use_cpu=True, seed=0,
                        save_merged=request.param)
    trainer = CLSGenTrainer(LlamaForCLSGen.from_pretrained(root / "base"), args, train_dataset=toy_dataset(8),
                            processing_class=tokenizer, peft_config=lora_config())  # the adapter names its base
    trainer.train()
    prompts = toy_dataset(6, seed=3)["prompt"]
    CALIBRATION.store(trainer.model)
    positive = np.sort(_probabilities(trainer.model, tokenizer, prompts)[0][:, 1])
    trainer.model.get_base_model().config.cls_threshold = float(positive[2:4].mean())  # three rows on each side
    trainer.save_model()
    probabilities, labels = _probabilities(trainer.model, tokenizer, prompts)
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]
    return root / "out", trainer, tokenizer, prompts, probabilities, labels


def _assert_same(model, tokenizer, run_) -> None:
    _, _, _, prompts, probabilities, labels = run_
    reloaded, reloaded_labels = _probabilities(model.eval(), tokenizer, prompts)
    np.testing.assert_allclose(reloaded, probabilities, atol=1e-5, rtol=0)
    assert reloaded_labels == labels


def test_every_reload_gives_the_trained_probabilities(run, tmp_path):
    out, _, tokenizer = run[:3]
    checkpoint = out / "checkpoint-2"
    _assert_same(*load_model_and_tokenizer(out), run)
    _assert_same(*load_model_and_tokenizer(checkpoint), run)
    for source in (out, checkpoint):
        model, source_tokenizer = load_model_folder(inspect_model_folder(source))[:2]  # PEFT on its base, or the model
        _assert_same(model, source_tokenizer, run)
        export_model(source, tmp_path / f"{source.name}-merged")
        _assert_same(AutoModel.from_pretrained(tmp_path / f"{source.name}-merged"), tokenizer, run)
        if source == checkpoint:  # an adapter: also as the adapter
            export_model(source, tmp_path / "adapter", merge=False)
            assert (tmp_path / "adapter" / RULE_FILE).is_file()
            _assert_same(*load_model_and_tokenizer(tmp_path / "adapter"), run)


def test_an_adapter_without_its_rule_says_so(run, tmp_path, caplog):
    checkpoint = run[0] / "checkpoint-2"
    folder = tmp_path / "bare"
    folder.mkdir()
    for path in checkpoint.iterdir():
        if path.is_file() and path.name != RULE_FILE:
            (folder / path.name).write_bytes(path.read_bytes())
    with caplog.at_level(logging.WARNING, logger="clsgen_hf.calibration"):
        model, _ = load_model_and_tokenizer(folder)
    assert f"{folder} holds no decision rule" in caplog.text
    assert DecisionRule.from_config(model) == DecisionRule(id2label=DecisionRule.from_config(model).id2label)


def test_trainer_evaluation_scores_at_the_stored_rule(run):
    _, trainer, tokenizer, *_ = run
    rows = toy_dataset(6, seed=3)
    metrics = trainer.evaluate(rows)
    probabilities, _ = _probabilities(trainer.model, tokenizer, rows["prompt"])
    calibrated_log_loss = -np.log(probabilities[np.arange(6), rows["label"]]).mean()
    assert metrics["eval_log_loss"] == pytest.approx(calibrated_log_loss, abs=1e-4)
    assert metrics["eval_threshold"] == trainer.model.get_base_model().config.cls_threshold != 0.5
    assert metrics["eval_raw_log_loss"] != pytest.approx(metrics["eval_log_loss"], abs=1e-3)


def test_one_class_validation_rows_keep_the_identity_rule(smollm2_tokenizer, caplog):
    model = tiny_model_for(smollm2_tokenizer).eval()
    model.config.cls_threshold, model.config.cls_logit_scale = 0.9, 3.0
    rows = toy_dataset(4)
    with caplog.at_level(logging.WARNING, logger="clsgen_hf.evaluation"):
        rule = fit_decision_rule(model, smollm2_tokenizer, rows["prompt"], [1] * 4)
    assert "hold one class" in caplog.text and rule["note"] and rule["threshold"] == 0.5
    assert (model.config.cls_threshold, model.config.cls_logit_scale, model.config.cls_logit_bias) == (0.5, 1.0, None)
    card = build_model_card(model.config, decision_rule=rule["note"])
    assert "No decision rule was fitted" in card.text and rule["note"] in card.text


def test_predict_runs_in_eval_mode_and_restores_the_callers(smollm2_tokenizer):
    model = tiny_model_for(smollm2_tokenizer, cls_dropout=0.5).train()
    prompts = toy_dataset(4)["prompt"]
    first, second = (_probabilities(model, smollm2_tokenizer, prompts)[0] for _ in range(2))
    assert model.training and model.cls_dropout.training
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, _probabilities(model.eval(), smollm2_tokenizer, prompts)[0], atol=1e-6)
