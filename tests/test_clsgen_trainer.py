"""CLSGenTrainer: learning, LoRA + `score`, accumulation invariance, saving, DDP, resume, bad input, public hooks."""

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModel
from transformers import trainer as transformers_trainer
from trl import SFTTrainer
from trl.trainer import base_trainer, sft_trainer

from clsgen_hf import CLSGenConfig, CLSGenTrainer, LlamaForCLSGen, clsgen_trainer, prepare_clsgen_dataset
from clsgen_hf.data import with_decision_cues
from clsgen_hf.errors import UsageError
from clsgen_hf.prompt_template import encode_example, encode_prompts
from clsgen_hf.verdicts import VerdictFormat

from .helpers import kill_after_first_checkpoint
from .toy import lora_config, tiny_model_for, toy_dataset


REPO = Path(__file__).resolve().parents[1]
TRAIN_TOY = REPO / "tests" / "scripts" / "train_toy.py"


def _config(tmp_path, **overrides) -> CLSGenConfig:
    kwargs = dict(
        per_device_train_batch_size=8, learning_rate=1e-2, logging_steps=1, report_to=[], save_strategy="no",
        use_cpu=True, seed=0,
    )
    kwargs.update(overrides)
    return CLSGenConfig(str(tmp_path / "out"), **kwargs)


def _probabilities(model, tokenizer, dataset) -> torch.Tensor:
    ids = encode_prompts(tokenizer, dataset["prompt"])
    width = max(map(len, ids))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    with torch.no_grad():
        return model(input_ids, attention_mask=mask).cls_logits.softmax(-1)


def test_toy_task_is_learned(smollm2_tokenizer, tmp_path):
    tokenizer = smollm2_tokenizer
    trainer = CLSGenTrainer(
        tiny_model_for(tokenizer),
        # A 2-layer random backbone must first learn to carry the keyword to the last prompt token; weighting the
        # class loss up makes that happen within a few dozen steps (with weight 1 the LM loss dominates for ~60).
        _config(tmp_path, max_steps=40, eval_strategy="steps", eval_steps=40, cls_loss_weight=4.0),
        train_dataset=toy_dataset(64),
        eval_dataset=toy_dataset(32, seed=1),
        processing_class=tokenizer,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "lm_loss" in entry and "eval_lm_loss" not in entry]
    assert {"loss", "lm_loss", "cls_loss"} <= set(logs[0])
    assert logs[-1]["lm_loss"] < 0.5 * logs[0]["lm_loss"]
    evaluation = trainer.state.log_history[-2]
    assert evaluation["eval_auroc"] > 0.9, evaluation
    assert {"eval_f1", "eval_log_loss", "eval_cls_loss", "eval_lm_loss"} <= set(evaluation)


def test_lora_trains_adapters_and_head_only_and_saves(smollm2_tokenizer, tmp_path):
    tokenizer = smollm2_tokenizer
    trainer = CLSGenTrainer(
        tiny_model_for(tokenizer),
        _config(tmp_path, max_steps=3, save_merged=False),
        train_dataset=toy_dataset(24),
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    model = trainer.model
    assert isinstance(model, PeftModel) and "score" in model.peft_config["default"].modules_to_save
    assert not any("score" in name for name in model.targeted_module_names)  # trained fully, not LoRA-wrapped
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer.train()
    after = dict(model.named_parameters())
    trainable = {k for k, v in after.items() if v.requires_grad}
    assert any("modules_to_save.default.weight" in k for k in trainable)
    changed = {k for k in before if not torch.equal(before[k], after[k].detach())}
    assert any("lora_B" in k for k in changed) and any("score.modules_to_save" in k for k in changed)
    assert changed <= trainable  # frozen base weights did not move
    assert torch.equal(before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"],
                       after["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"])

    model.eval()
    rows = toy_dataset(6, seed=3)
    trained = _probabilities(model, tokenizer, rows)

    adapter_dir = tmp_path / "adapter"
    trainer.save_model(str(adapter_dir))  # save_merged=False: adapter + score head
    assert (adapter_dir / "adapter_model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(tiny_model_for(tokenizer), adapter_dir).eval()
    torch.testing.assert_close(_probabilities(reloaded, tokenizer, rows), trained, atol=1e-6, rtol=0)

    merged = reloaded.merge_and_unload()
    assert type(merged) is LlamaForCLSGen
    torch.testing.assert_close(_probabilities(merged, tokenizer, rows), trained, atol=1e-5, rtol=0)

    trainer.args.save_merged = True
    merged_dir = tmp_path / "merged"
    trainer.save_model(str(merged_dir))
    assert {"model.safetensors", "modeling_clsgen.py", "configuration_clsgen.py"} <= set(os.listdir(merged_dir))
    loaded = AutoModel.from_pretrained(merged_dir, trust_remote_code=True).eval()
    torch.testing.assert_close(_probabilities(loaded, tokenizer, rows), trained, atol=1e-5, rtol=0)


def test_gradient_accumulation_does_not_change_results(smollm2_tokenizer, tmp_path):
    tokenizer = smollm2_tokenizer
    results = []
    for batch, accumulation in ((4, 1), (1, 4)):
        trainer = CLSGenTrainer(
            tiny_model_for(tokenizer),
            _config(tmp_path / f"{batch}x{accumulation}", max_steps=2, per_device_train_batch_size=batch,
                    gradient_accumulation_steps=accumulation),
            train_dataset=toy_dataset(16),
            processing_class=tokenizer,
        )
        trainer.train()
        logged = [(e["loss"], e["lm_loss"], e["cls_loss"]) for e in trainer.state.log_history if "lm_loss" in e]
        results.append((logged, trainer.model.score.weight.detach().clone()))
    (logs_a, score_a), (logs_b, score_b) = results
    assert len(logs_a) == len(logs_b) == 2
    for a, b in zip(logs_a, logs_b):
        assert a[0] == pytest.approx(b[0], rel=1e-4)  # the optimised loss is the same
        assert a[2] == pytest.approx(b[2], rel=1e-4)
    torch.testing.assert_close(score_a, score_b, atol=1e-5, rtol=1e-4)


def test_max_length_cuts_the_explanation_end_and_never_the_prompt(smollm2_tokenizer):
    """The head reads the last prompt token, so a row too long for `max_length` keeps its prompt exactly as
    inference encodes it and loses the end of its explanation (as TRL truncates); a prompt that fills `max_length`
    alone is refused."""
    tokenizer = smollm2_tokenizer
    prompt = "Did the trial lower blood pressure?"
    completion = "Because " + "the arms differed. " * 40 + "\nAnswer: Yes"
    [prompt_ids] = encode_prompts(tokenizer, [prompt])
    encoded = encode_example(tokenizer, prompt, completion, max_length=64)
    assert len(encoded.input_ids) == 64 and encoded.truncated
    assert encoded.input_ids[: encoded.cls_position + 1] == prompt_ids  # the prompt inference sees, whole
    assert encoded.labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
    assert tokenizer.decode(encoded.labels[len(prompt_ids) :]).startswith("Because the arms differed.")
    whole = encode_example(tokenizer, prompt, completion, max_length=None)
    assert not whole.truncated and whole.input_ids[:64] == encoded.input_ids
    with pytest.raises(UsageError, match="leaving none of max_length=8"):
        encode_example(tokenizer, prompt, completion, max_length=8)


class TestBadInput:
    def _trainer(self, tokenizer, tmp_path, dataset):
        return CLSGenTrainer(tiny_model_for(tokenizer), _config(tmp_path, max_steps=1), train_dataset=dataset,
                             processing_class=tokenizer)

    def test_missing_column(self, smollm2_tokenizer, tmp_path):
        dataset = toy_dataset(4).remove_columns("completion")
        with pytest.raises(ValueError, match=r"no `completion` column.*Columns present: \['prompt', 'label'\]"):
            self._trainer(smollm2_tokenizer, tmp_path, dataset)

    def test_labels_outside_label_set(self, smollm2_tokenizer, tmp_path):
        rows = toy_dataset(6).to_list()
        rows[0]["label"], rows[1]["label"], rows[2]["label"] = 2, 2, -1
        with pytest.raises(ValueError, match=r"\[0, 2\): 2 \(2 rows\), -1 \(1 rows\)"):
            self._trainer(smollm2_tokenizer, tmp_path, Dataset.from_list(rows))

    def test_empty_completions(self, smollm2_tokenizer, tmp_path):
        rows = toy_dataset(6).to_list()
        rows[1]["completion"] = [{"role": "assistant", "content": "  "}]
        rows[4]["completion"] = [{"role": "assistant", "content": ""}]
        with pytest.raises(ValueError, match=r"empty completions.*rows \[1, 4\]"):
            self._trainer(smollm2_tokenizer, tmp_path, Dataset.from_list(rows))

    def test_packing_refused(self, tmp_path):
        with pytest.raises(ValueError, match="packing"):
            _config(tmp_path, packing=True)


def test_ddp_two_processes_end_with_identical_weights(tmp_path):
    dump = tmp_path / "weights"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(TRAIN_TOY),
           str(tmp_path / "out"), "--max_steps", "3", "--dump", str(dump)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("FINISHED global_step=3 ") == 2
    rank0 = torch.load(f"{dump}.rank0.pt", weights_only=True)
    rank1 = torch.load(f"{dump}.rank1.pt", weights_only=True)
    assert any("lora_A" in k for k in rank0) and any("score" in k for k in rank0)
    for name, value in rank0.items():
        torch.testing.assert_close(rank1[name], value, atol=0, rtol=0, msg=name)


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(TRAIN_TOY), str(out), "--max_steps", "8", "--save_steps", "2"]
    last_step = kill_after_first_checkpoint(cmd + ["--step_delay", "1.0"], out)
    assert 2 <= last_step < 8

    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"FINISHED global_step=8 steps_here={8 - last_step}" in resumed.stdout  # no step was redone


def _one_sgd_step(tokenizer, tmp_path, batch, accumulation, **overrides):
    """`score` after one plain-SGD optimizer step on 4 rows (3 positive, 1 negative), split as
    `batch x accumulation`."""
    rows = Dataset.from_list([row for row in toy_dataset(8) if row["label"] == 1][:3] + [toy_dataset(2)[0]])
    trainer = CLSGenTrainer(
        tiny_model_for(tokenizer),
        _config(tmp_path / f"{batch}x{accumulation}-{len(overrides)}", max_steps=1, per_device_train_batch_size=batch,
                gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=1.0, lr_scheduler_type="constant",
                lm_loss_weight=0.0, init_head_bias_from_prior=False, **overrides),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    before = trainer.model.score.weight.detach().clone()
    trainer.train()
    return trainer.model.score.weight.detach() - before


def test_class_weights_are_normalised_over_the_accumulated_batch(smollm2_tokenizer, tmp_path):
    whole = _one_sgd_step(smollm2_tokenizer, tmp_path, 4, 1, pos_weight=5.0)
    split = _one_sgd_step(smollm2_tokenizer, tmp_path, 1, 4, pos_weight=5.0)
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=1e-4)
    unweighted = _one_sgd_step(smollm2_tokenizer, tmp_path, 1, 4)
    assert not torch.allclose(split, unweighted, atol=1e-6)  # at micro-batch 1 the weights still change the update


def test_head_learning_rate_has_its_own_group(smollm2_tokenizer, tmp_path):
    trainer = CLSGenTrainer(tiny_model_for(smollm2_tokenizer), _config(tmp_path, max_steps=1, head_learning_rate=0.5),
                            train_dataset=toy_dataset(8), processing_class=smollm2_tokenizer,
                            peft_config=lora_config())
    trainer.create_optimizer()
    head = {id(p) for n, p in trainer.model.named_parameters() if p.requires_grad and "score" in n.split(".")}
    groups = [(group["lr"], {id(p) for p in group["params"]})
              for group in trainer.optimizer.param_groups if group["params"]]
    assert head and {lr for lr, params in groups if params & head} == {0.5}
    assert all(not params & head for lr, params in groups if lr == 1e-2)
    assert sum(len(params) for _, params in groups) == sum(p.requires_grad for p in trainer.model.parameters())


def test_a_fresh_head_starts_at_the_class_prior(smollm2_tokenizer, tmp_path):
    negatives = [row for row in toy_dataset(4) if row["label"] == 0]
    rows = Dataset.from_list([row for row in toy_dataset(16) if row["label"] == 1][:6] + negatives)  # 6:2
    model = tiny_model_for(smollm2_tokenizer)
    CLSGenTrainer(model, _config(tmp_path), train_dataset=rows, processing_class=smollm2_tokenizer)
    assert model.score.bias.softmax(-1).tolist() == pytest.approx([0.3, 0.7], abs=1e-6)  # (2+1)/10, (6+1)/10
    with torch.no_grad():
        model.score.weight.zero_()
        probability = model(torch.tensor([[1, 2, 3]])).cls_probabilities[0, 1].item()
    assert probability == pytest.approx(0.7, abs=1e-6)
    trained = tiny_model_for(smollm2_tokenizer)
    with torch.no_grad():
        trained.score.bias.fill_(0.25)
    CLSGenTrainer(trained, _config(tmp_path), train_dataset=rows, processing_class=smollm2_tokenizer)
    assert trained.score.bias.tolist() == [0.25, 0.25]  # a head that has been trained is left alone


def test_verdict_word_weight_adds_its_cross_entropy(smollm2_tokenizer, tmp_path):
    """`verdict_loss_weight` w adds (w - 1) times the verdict word's cross-entropy, normalised as the LM loss is."""
    tokenizer, rows = smollm2_tokenizer, toy_dataset(4)
    model = tiny_model_for(tokenizer, id2label={0: "No", 1: "Yes"}).eval()
    losses = []
    for weight in (1.0, 3.0):
        trainer = CLSGenTrainer(model, _config(tmp_path, verdict_loss_weight=weight), train_dataset=rows,
                                processing_class=tokenizer)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        with torch.no_grad():
            losses.append(trainer.compute_loss(model, dict(batch)).item())
    with torch.no_grad():
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    verdict_ids = [tokenizer(f" {word}", add_special_tokens=False)["input_ids"][0] for word in ("No", "Yes")]
    verdict_ce = 0.0
    for row in range(4):
        position = max(t for t in range(targets.shape[1]) if targets[row, t].item() in verdict_ids)
        verdict_ce += torch.nn.functional.cross_entropy(logits[row, position], targets[row, position]).item()
    assert losses[1] - losses[0] == pytest.approx(2 * verdict_ce / (targets != -100).sum().item(), rel=1e-4)


def test_a_decision_cue_is_given_not_learned(smollm2_tokenizer, tmp_path):
    tokenizer = smollm2_tokenizer
    rows = with_decision_cues(toy_dataset(6), VerdictFormat(), 1.0)
    trainer = CLSGenTrainer(tiny_model_for(tokenizer), _config(tmp_path), train_dataset=rows,
                            processing_class=tokenizer)
    for prepared in trainer.train_dataset:
        start = prepared["cls_positions"] + 1
        cue = tokenizer(VerdictFormat().cue(prepared["cls_labels"]), add_special_tokens=False)["input_ids"]
        assert prepared["input_ids"][start : start + len(cue)] == cue  # the cue is in the sequence ...
        assert set(prepared["labels"][: start + len(cue)]) == {-100}  # ... but not in the LM loss
        assert prepared["labels"][start + len(cue)] != -100  # the explanation after it is


def test_only_public_documented_upstream_hooks_are_overridden():
    upstream = {name for cls in SFTTrainer.__mro__ for name in vars(cls)}
    overridden = {name for name, value in vars(CLSGenTrainer).items() if callable(value) and name in upstream}
    assert {"compute_loss", "prediction_step", "get_train_dataloader"} <= overridden
    assert not {name for name in overridden if name.startswith("_") and name != "__init__"}
    undocumented = {name for name in overridden - {"__init__"} if f"`{name}`" not in CLSGenTrainer.__doc__}
    assert not undocumented, f"list them in CLSGenTrainer's docstring: {undocumented}"


def test_no_private_upstream_method_or_attribute_is_used():
    """Private names of `Trainer`/`SFTTrainer` change without notice between releases."""
    upstream = "".join(inspect.getsource(module) for module in (transformers_trainer, base_trainer, sft_trainer))
    used = set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(clsgen_trainer)))
    ours = set(vars(CLSGenTrainer))
    borrowed = {name for name in used - ours if hasattr(SFTTrainer, name) or f"self.{name}" in upstream}
    assert not borrowed


def test_prepare_clsgen_dataset_gives_the_features_the_trainer_trains_on(smollm2_tokenizer, tmp_path):
    tokenizer, rows = smollm2_tokenizer, toy_dataset(4)
    args = _config(tmp_path, max_length=64)
    prepared = prepare_clsgen_dataset(rows, tokenizer, args, num_labels=2)
    assert prepared.column_names == ["input_ids", "labels", "cls_positions", "cls_labels"]
    for row, features in zip(rows, prepared):
        [prompt_ids] = encode_prompts(tokenizer, [row["prompt"]])
        assert features["input_ids"] == encode_example(tokenizer, row["prompt"], row["completion"], 64).input_ids
        assert features["input_ids"][: features["cls_positions"] + 1] == prompt_ids  # the head reads the prompt end
        assert set(features["labels"][: len(prompt_ids)]) == {-100} and features["cls_labels"] == row["label"]
    assert prepare_clsgen_dataset(prepared, tokenizer, args, num_labels=2) is prepared
    trainer = CLSGenTrainer(tiny_model_for(tokenizer), args, train_dataset=rows, eval_dataset=prepared,
                            processing_class=tokenizer)
    assert trainer.train_dataset.to_list() == trainer.eval_dataset.to_list() == prepared.to_list()
    with pytest.raises(ValueError, match=r"The eval dataset has labels outside the model's label set \[0, 1\)"):
        prepare_clsgen_dataset(rows, tokenizer, args, num_labels=1, dataset_name="eval")


def test_each_training_batch_carries_its_optimizer_steps_class_weight(smollm2_tokenizer, tmp_path):
    """6 rows one by one, 4 per step: steps of 4 and 2 rows, also after resuming past the first step."""
    trainer = CLSGenTrainer(tiny_model_for(smollm2_tokenizer),
                            _config(tmp_path, per_device_train_batch_size=1, gradient_accumulation_steps=4,
                                    pos_weight=5.0), train_dataset=toy_dataset(6), processing_class=smollm2_tokenizer)
    loader = trainer.get_train_dataloader()
    batches = list(loader)
    weights = [5.0 if batch["cls_labels"].item() else 1.0 for batch in batches]
    expected = [sum(weights[:4])] * 4 + [sum(weights[4:])] * 2
    assert [batch[clsgen_trainer.STEP_WEIGHT] for batch in batches] == expected
    resumed = list(trainer.get_resumed_dataloader(loader, 4))
    assert [batch[clsgen_trainer.STEP_WEIGHT] for batch in resumed] == expected[4:]
