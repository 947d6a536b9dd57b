"""Prediction: `predict` records, one prefill per batch, verdict probabilities, thresholds, the pipeline, the CLI."""

import csv
import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, pipeline

from clsgen_hf import CLSGenPipeline, LlamaForCLSGen, predict, tune_and_store_threshold
from clsgen_hf.calibration import DecisionRule
from clsgen_hf.commands import predict as predict_command
from clsgen_hf.inference import NoRepeatGeneratedNGramLogitsProcessor, predict_by_length
from clsgen_hf.metrics import has_loop
from clsgen_hf.modeling_clsgen import CACHE_FIELD
from clsgen_hf.prompt_template import default_prompt_template, encode_prompts
from clsgen_hf.verdicts import VerdictFormat

from .toy import tiny_model_for


PROMPTS = [
    "Does the abstract support the claim that the drug lowers blood pressure?",
    "Hi",
    [{"role": "system", "content": "Classify."},
     {"role": "user", "content": "The trial improved outcomes. Improved?"}],
    "A longer prompt about a randomised trial of a new statin in adults with high cholesterol, and its results.",
    "Short one.",
]
ROWS = [{"note": "blood pressure fell in the treated arm"}, {"note": "no change was seen"}]


@pytest.fixture
def tiny(smollm2_tokenizer):
    """A tiny random CLSGen model speaking SmolLM2's vocabulary, with its tokenizer."""
    return tiny_model_for(smollm2_tokenizer).eval(), smollm2_tokenizer


def _check_records(records, n):
    assert len(records) == n
    for record in records:
        assert set(record) == {"probability", "label", "explanation", "verdict", "agrees", "explain"}
        assert record["agrees"] == (record["verdict"] == record["label"])
        assert len(record["probability"]) == 2 and all(0 <= p <= 1 for p in record["probability"])
        assert sum(record["probability"]) == pytest.approx(1.0, abs=1e-6)
        assert record["label"] in (0, 1) and record["verdict"] in (-1, 0, 1)
        assert isinstance(record["explanation"], str)


def _probabilities(records):
    return np.array([record["probability"] for record in records])


class TestPredict:
    @pytest.mark.parametrize("probability_from", ["head", "verdict"])
    def test_records_and_batch_invariance(self, tiny, probability_from):
        model, tokenizer = tiny
        kwargs = dict(max_new_tokens=6, show_progress=False, probability_from=probability_from)
        batched = predict(model, tokenizer, PROMPTS, batch_size=3, **kwargs)
        _check_records(batched, len(PROMPTS))
        for prompt, record in zip(PROMPTS, batched):
            alone = predict(model, tokenizer, [prompt], **kwargs)[0]
            np.testing.assert_allclose(alone["probability"], record["probability"], atol=1e-5)
            assert alone["explanation"] == record["explanation"]

    @pytest.mark.parametrize("max_new_tokens", [0, 6])
    @pytest.mark.parametrize("probability_from", ["head", "verdict"])
    def test_a_row_in_a_padded_batch_gets_its_probability_alone(self, tiny, probability_from, max_new_tokens):
        """Left padding changes nothing on any path: predict, the pipeline, and `classify_and_generate`."""
        model, tokenizer = tiny
        kwargs = dict(max_new_tokens=max_new_tokens, probability_from=probability_from)
        batched = _probabilities(predict(model, tokenizer, PROMPTS, batch_size=5, show_progress=False, **kwargs))
        alone = _probabilities([predict(model, tokenizer, [p], show_progress=False, **kwargs)[0] for p in PROMPTS])
        np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0)
        texts = [prompt for prompt in PROMPTS if isinstance(prompt, str)]
        classifier = pipeline("clsgen", model=model, tokenizer=tokenizer, device="cpu")
        piped = _probabilities(classifier(texts, batch_size=4, **kwargs))
        np.testing.assert_allclose(piped, [alone[PROMPTS.index(text)] for text in texts], atol=1e-5, rtol=0)
        if probability_from == "head" and max_new_tokens:
            ids = encode_prompts(tokenizer, PROMPTS)
            padded = tokenizer.pad({"input_ids": ids}, padding_side="left", return_tensors="pt")
            generated = model.classify_and_generate(**padded, max_new_tokens=max_new_tokens, do_sample=False)
            np.testing.assert_allclose(generated.probabilities.numpy(), alone, atol=1e-5, rtol=0)

    def test_rows_through_a_template_and_max_new_tokens_zero(self, tiny):
        model, tokenizer = tiny
        template = default_prompt_template("note")
        full = predict(model, tokenizer, ROWS, prompt_template=template, max_new_tokens=4, show_progress=False)
        head_only = predict(model, tokenizer, ROWS, prompt_template=template, max_new_tokens=0, show_progress=False)
        np.testing.assert_allclose(_probabilities(head_only), _probabilities(full), atol=1e-5)
        assert all(record["explanation"] == "" and record["verdict"] == -1 for record in head_only)

    def test_one_prompt_prefill_per_batch(self, tiny):
        model, tokenizer = tiny
        lengths = []
        model.model.register_forward_hook(lambda module, args, kwargs, output: lengths.append(
            (kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]).shape[1]), with_kwargs=True)
        predict(model, tokenizer, PROMPTS, batch_size=2, max_new_tokens=5, min_new_tokens=5, show_progress=False)
        prefills = [n for n in lengths if n > 1]
        assert len(prefills) == 3  # ceil(5 / 2) batches, each prefilled once
        assert len(lengths) - len(prefills) == 3 * 4  # then one single-token step per new token after the first

    def test_verdict_mode_prefills_each_prompt_once(self, smollm2_tokenizer):
        model = LlamaForCausalLM(tiny_model_for(smollm2_tokenizer).config).eval()
        calls = []  # (tokens in, tokens already cached) of every backbone pass

        def record(module, args, kwargs):
            cache = kwargs.get(CACHE_FIELD)
            calls.append((kwargs["input_ids"].shape[1], 0 if cache is None else cache.get_seq_length()))

        model.model.register_forward_pre_hook(record, with_kwargs=True)
        predict(model, smollm2_tokenizer, PROMPTS, batch_size=2, max_new_tokens=4, probability_from="verdict",
                min_new_tokens=4, show_progress=False)
        assert sum(cached == 0 for _, cached in calls) == 3  # one prefill per batch of prompts ...
        scoring = [(n, cached) for n, cached in calls if n > 1 and cached > 0]
        assert len(scoring) == 3  # ... and the verdict scored on that prompt's cache, not on a second prefill

    def test_verdict_probability_equals_a_full_forward(self, tiny):
        model, tokenizer = tiny
        verdicts = VerdictFormat()
        records = predict(model, tokenizer, PROMPTS, batch_size=5, max_new_tokens=6, probability_from="verdict",
                          show_progress=False)
        ids = encode_prompts(tokenizer, PROMPTS)
        yes_no = [tokenizer(f"Answer: {word}", add_special_tokens=False)["input_ids"][-1] for word in ("No", "Yes")]
        for prompt_ids, record in zip(ids, records):
            reasoning = verdicts.strip(record["explanation"])
            tail = f"{reasoning}\nAnswer:" if reasoning else "Answer:"
            full = prompt_ids + tokenizer(tail, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([full])).logits[0, -1]
            expected = logits[yes_no].softmax(-1).tolist()
            np.testing.assert_allclose(record["probability"], expected, atol=1e-5)

    def test_head_mode_refuses_a_model_without_head(self, smollm2_tokenizer):
        model = LlamaForCausalLM(tiny_model_for(smollm2_tokenizer).config).eval()
        with pytest.raises(TypeError, match="no classification head"):
            predict(model, smollm2_tokenizer, ["x"], show_progress=False)

    def test_empty_and_missing_fields(self, tiny):
        model, tokenizer = tiny
        with pytest.raises(ValueError, match="empty"):
            predict(model, tokenizer, [], show_progress=False)
        with pytest.raises(ValueError, match=r"lacks the field\(s\) \['note'\]"):
            predict(model, tokenizer, [{"text": "x"}], prompt_template=default_prompt_template("note"),
                    show_progress=False)


@pytest.mark.parametrize("max_new_tokens", [0, 6])
def test_predict_by_length_yields_finished_records_in_order_with_the_tokens_generated(tiny, max_new_tokens):
    """Prompts of mixed lengths in batches of 2, shortest first: the yields joined are `predict`'s records in input
    order, and the tokens are the prompts' plus at most `max_new_tokens` generated per prompt."""
    model, tokenizer = tiny
    ids = encode_prompts(tokenizer, PROMPTS)
    yields = list(predict_by_length(model, tokenizer, ids, batch_size=2, max_new_tokens=max_new_tokens))
    alone = predict(model, tokenizer, PROMPTS, batch_size=1, max_new_tokens=max_new_tokens, show_progress=False)
    records = [record for finished, _ in yields for record in finished]
    assert [record["explanation"] for record in records] == [record["explanation"] for record in alone]
    np.testing.assert_allclose(_probabilities(records), _probabilities(alone), atol=1e-5)
    assert len(yields) == 3 and yields[0][0] == []  # the two shortest (rows 1 and 4) first: no prefix of rows yet
    prompt_tokens, tokens = sum(map(len, ids)), sum(tokens for _, tokens in yields)
    if max_new_tokens == 0:
        assert tokens == prompt_tokens
    else:
        assert prompt_tokens < tokens <= prompt_tokens + max_new_tokens * len(ids)


@pytest.mark.parametrize(
    ("explanation", "reasoning"),
    [
        ("It improved.\nAnswer: Yes", "It improved."),
        ("Answer: No\nBecause nothing changed.", ""),
        ("Explanation: dose mattered.\n**Answer**: Yes\nmore", "Explanation: dose mattered."),
        ("Answers differ between arms.\nAnswer:", "Answers differ between arms."),
        ("No verdict at all", "No verdict at all"),
    ],
)
def test_strip_verdict(explanation, reasoning):
    assert VerdictFormat().strip(explanation) == reasoning


class TestThreshold:
    def test_picks_the_f1_optimum_and_survives_saving(self, tiny, tmp_path):
        model, tokenizer = tiny
        # F1 of p >= t: t=0.1 -> 0.667, t=0.35 -> 0.8, t=0.4 -> 0.5, t=0.8 -> 0.667.
        threshold = tune_and_store_threshold(model, [0.1, 0.35, 0.4, 0.8], [0, 1, 0, 1])
        assert threshold == pytest.approx(0.35)
        assert model.config.cls_threshold == pytest.approx(0.35)
        model.save_pretrained(tmp_path)
        assert LlamaForCLSGen.from_pretrained(tmp_path).config.cls_threshold == pytest.approx(0.35)

    def test_accepts_per_class_rows_and_decides_with_it(self, tiny):
        model, tokenizer = tiny
        threshold = tune_and_store_threshold(model, [[0.9, 0.1], [0.65, 0.35], [0.6, 0.4], [0.2, 0.8]], [0, 1, 0, 1])
        assert threshold == pytest.approx(0.35)
        records = predict(model, tokenizer, PROMPTS, max_new_tokens=0, show_progress=False)
        assert [r["label"] for r in records] == [int(r["probability"][1] >= threshold) for r in records]


class TestPipeline:
    def test_pipeline_equals_predict(self, tiny):
        model, tokenizer = tiny
        classifier = pipeline("clsgen", model=model, tokenizer=tokenizer, device="cpu")
        assert isinstance(classifier, CLSGenPipeline)
        texts = [p for p in PROMPTS if isinstance(p, str)]
        expected = predict(model, tokenizer, texts, max_new_tokens=5, show_progress=False)
        batched = classifier(texts, batch_size=3, max_new_tokens=5)
        single = classifier(texts[0], max_new_tokens=5)
        _check_records(batched, len(texts))
        np.testing.assert_allclose(_probabilities(batched), _probabilities(expected), atol=1e-5)
        assert [r["explanation"] for r in batched] == [r["explanation"] for r in expected]
        np.testing.assert_allclose(single["probability"], expected[0]["probability"], atol=1e-5)
        chat = classifier(PROMPTS[2], max_new_tokens=5)  # chat messages are one input, not a batch
        np.testing.assert_allclose(chat["probability"],
                                   predict(model, tokenizer, [PROMPTS[2]], max_new_tokens=5,
                                           show_progress=False)[0]["probability"], atol=1e-5)

    def test_pipeline_from_a_saved_folder_uses_its_template_and_threshold(self, tiny, tmp_path):
        model, tokenizer = tiny
        model.config.cls_threshold = 0.0  # every row is positive
        model.save_pretrained(tmp_path)
        tokenizer.save_pretrained(tmp_path)
        default_prompt_template("note").save_pretrained(tmp_path)
        classifier = pipeline("clsgen", model=str(tmp_path), device="cpu")
        records = classifier(ROWS, batch_size=2, max_new_tokens=3)
        _check_records(records, 2)
        assert [r["label"] for r in records] == [1, 1]

    def test_pipeline_from_an_adapter_folder_says_it_cannot_read_the_rule(self, tiny, tmp_path, caplog):
        model, tokenizer = tiny
        model.save_pretrained(tmp_path / "base")
        base = LlamaForCLSGen.from_pretrained(tmp_path / "base")
        get_peft_model(base, LoraConfig(target_modules=["q_proj"], r=2)).save_pretrained(tmp_path / "adapter")
        DecisionRule(cls_logit_scale=2.0, cls_threshold=0.3).save_pretrained(tmp_path / "adapter")
        with caplog.at_level("WARNING", logger="clsgen_hf.inference"):
            pipeline("clsgen", model=str(tmp_path / "adapter"), tokenizer=tokenizer, device="cpu")
        assert "clsgen_rule.json" in caplog.text and "clsgen_hf.load_model" in caplog.text

    def test_pipeline_refuses_a_model_without_head(self, smollm2_tokenizer):
        model = LlamaForCausalLM(tiny_model_for(smollm2_tokenizer).config)
        with pytest.raises(TypeError, match="not a CLSGen model"):
            pipeline("clsgen", model=model, tokenizer=smollm2_tokenizer, device="cpu")


class TestCommand:
    @pytest.fixture
    def model_dir(self, tiny, tmp_path):
        model, tokenizer = tiny
        folder = tmp_path / "model"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        default_prompt_template("note").save_pretrained(folder)
        return folder

    def _run(self, *argv):
        return predict_command.main([str(a) for a in argv])

    def test_help(self, capsys):
        with pytest.raises(SystemExit) as exit_info:
            self._run("--help")
        assert exit_info.value.code == 0
        assert "--text_fields" in capsys.readouterr().out

    @pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
    def test_predicts_every_row(self, model_dir, tmp_path, suffix, caplog):
        caplog.set_level("INFO", logger="clsgen_hf")
        source = tmp_path / f"rows{suffix}"
        rows = [{**row, "label": i} for i, row in enumerate(ROWS)]
        if suffix == ".jsonl":
            source.write_text("".join(json.dumps(row) + "\n" for row in rows))
        else:
            with source.open("w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=["note", "label"])
                writer.writeheader()
                writer.writerows(rows)
        output = tmp_path / f"preds{suffix}"
        assert self._run("--model", model_dir, "--input", source, "--output", output, "--max_new_tokens", 3) == 0
        if suffix == ".jsonl":
            written = [json.loads(line) for line in output.read_text().splitlines()]
            assert len(written[0]["probability"]) == 2
        else:
            written = list(csv.DictReader(output.open()))
            assert {"probability_0", "probability_1"} <= set(written[0])
        assert len(written) == 2 and written[0]["note"] == ROWS[0]["note"]
        assert {"label", "verdict", "explanation", "input_label", "agrees"} <= set(written[0])  # gold label kept aside
        disagreeing = sum(str(row["agrees"]).lower() == "false" for row in written)
        assert f"{disagreeing} of 2 explanations do not state the head's label" in caplog.text

    def test_long_rows_are_fitted_to_the_budget_saved_with_the_template(self, tiny, model_dir, tmp_path, capsys):
        model, tokenizer = tiny
        template = replace(default_prompt_template("note"), max_prompt_tokens=120)
        template.save_pretrained(model_dir)
        row = {"note": "The start. " + "filler words in the middle. " * 60 + "The decisive end."}
        (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
        output = tmp_path / "preds.jsonl"
        assert self._run("--model", model_dir, "--input", tmp_path / "rows.jsonl", "--output", output,
                         "--max_new_tokens", 0) == 0
        written = json.loads(output.read_text())
        fitted, was_cut = template.fit(row, tokenizer, 120)
        [expected] = predict(model, tokenizer, [fitted], max_new_tokens=0, show_progress=False)
        [api] = predict(model, tokenizer, [row], prompt_template=template, max_new_tokens=0, show_progress=False)
        [uncut] = predict(model, tokenizer, [row], prompt_template=replace(template, max_prompt_tokens=None),
                          max_new_tokens=0, show_progress=False)
        assert was_cut and not np.allclose(uncut["probability"], expected["probability"], atol=1e-4)
        np.testing.assert_allclose(api["probability"], expected["probability"], atol=1e-6)  # one budget, one meaning
        np.testing.assert_allclose(written["probability"], expected["probability"], atol=1e-5)
        too_small = ("--model", model_dir, "--input", tmp_path / "rows.jsonl", "--output", output,
                     "--max_prompt_tokens", 20)
        assert self._run(*too_small) == 2
        assert "max_prompt_tokens=20" in capsys.readouterr().err

    def test_missing_text_field_is_named(self, model_dir, tmp_path, capsys):
        source = tmp_path / "rows.jsonl"
        source.write_text(json.dumps({"text": "no note here"}) + "\n")
        assert self._run("--model", model_dir, "--input", source, "--output", tmp_path / "p.jsonl") == 2
        error = capsys.readouterr().err
        assert "'note'" in error and "row 1" in error
        assert self._run("--model", model_dir, "--input", source, "--output", tmp_path / "p.jsonl",
                         "--text_fields", "body") == 2
        assert "'body'" in capsys.readouterr().err

    @pytest.mark.parametrize("content", ["", "\n\n", "note\n"])
    def test_empty_file(self, model_dir, tmp_path, capsys, content):
        source = tmp_path / ("rows.csv" if content == "note\n" else "rows.jsonl")
        source.write_text(content)
        assert self._run("--model", model_dir, "--input", source, "--output", tmp_path / "p.jsonl") == 2
        assert "holds no rows" in capsys.readouterr().err

    def test_not_a_clsgen_folder(self, smollm2_tokenizer, tmp_path, capsys):
        from transformers import GPT2Config, GPT2LMHeadModel

        source = tmp_path / "rows.jsonl"
        source.write_text(json.dumps(ROWS[0]) + "\n")
        llama = tmp_path / "llama"
        LlamaForCausalLM(LlamaConfig(**{**tiny_model_for(smollm2_tokenizer).config.to_diff_dict(),
                                         "model_type": "llama"})).save_pretrained(llama)
        gpt2 = tmp_path / "gpt2"
        GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=50)).save_pretrained(gpt2)
        for folder, message in ((llama, "a Llama model without a `score` head"), (gpt2, "is a `gpt2` checkpoint")):
            assert self._run("--model", folder, "--input", source, "--output", tmp_path / "p.jsonl",
                             "--text_fields", "note") == 2
            assert message in capsys.readouterr().err
        assert self._run("--model", tmp_path / "missing", "--input", source, "--output", tmp_path / "p.jsonl") == 2
        assert "does not exist" in capsys.readouterr().err

    def test_csv_cells_with_line_breaks_and_200_kb_are_read_as_written(self, tiny, model_dir, tmp_path):
        """The CLI reads a CSV as training does: quoted line breaks kept, a 200 KB cell fine; its probabilities are
        the Python API's on the rows as they were written."""
        model, tokenizer = tiny
        template = replace(default_prompt_template("note"), max_prompt_tokens=160)
        template.save_pretrained(model_dir)
        rows = [{"note": "Patients with diabetes.\nMETHODS: a randomised trial,\r\nwith \"quotes\", commas.",
                 "id": "a"},
                {"note": "RESULTS " + "x" * 200_000 + " the end", "id": "b"},
                {"note": "One line.", "id": "c"}]
        source = tmp_path / "rows.csv"
        with source.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=["note", "id"])
            writer.writeheader()
            writer.writerows(rows)
        output = tmp_path / "preds.jsonl"
        assert self._run("--model", model_dir, "--input", source, "--output", output, "--max_new_tokens", 0) == 0
        written = [json.loads(line) for line in output.read_text().splitlines()]
        assert [row["note"] for row in written] == [row["note"] for row in rows]
        fitted = [template.fit(row, tokenizer, 160)[0] for row in rows]
        expected = predict(model, tokenizer, fitted, max_new_tokens=0, show_progress=False)
        assert [row["probability"] for row in written] == [record["probability"] for record in expected]

    def test_rows_with_a_prompt_are_used_as_they_are(self, tiny, model_dir, tmp_path):
        model, tokenizer = tiny
        rows = [{"prompt": [{"role": "user", "content": "Ready prompt one?"}]}, {"note": "a note to template"}]
        (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        output = tmp_path / "preds.jsonl"
        assert self._run("--model", model_dir, "--input", tmp_path / "rows.jsonl", "--output", output,
                         "--max_new_tokens", 0) == 0
        written = [json.loads(line) for line in output.read_text().splitlines()]
        template = default_prompt_template("note")
        expected = predict(model, tokenizer, [rows[0]["prompt"], template.to_messages(rows[1])], max_new_tokens=0,
                           show_progress=False)
        np.testing.assert_allclose([r["probability"] for r in written], [r["probability"] for r in expected],
                                   atol=1e-6)

    @pytest.mark.parametrize("damage, message", [
        ("config", r"config\.json.* is not a valid JSON file"),
        ("truncated", r"model\.safetensors is truncated"),
        ("no-weights", r"has a config\.json but no weights \(safetensors\)"),
        ("bad-jsonl", r"rows\.jsonl, line 2: not valid JSON"),
    ])
    def test_broken_files_are_named_before_loading(self, model_dir, tmp_path, capsys, damage, message):
        source = tmp_path / "rows.jsonl"
        source.write_text(json.dumps(ROWS[0]) + "\n" + ("{not json\n" if damage == "bad-jsonl" else ""))
        weights = model_dir / "model.safetensors"
        if damage == "config":
            (model_dir / "config.json").write_text('{"model_type": "llama_clsgen",')
        elif damage == "truncated":
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size - 100])
        elif damage == "no-weights":
            weights.unlink()
        assert self._run("--model", model_dir, "--input", source, "--output", tmp_path / "p.jsonl") == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("clsgen-hf predict: error: ") and len(error.splitlines()) == 1, error
        assert re.search(message, error), error


@pytest.mark.slow
def test_predict_on_the_embedded_model(smollm2):
    model, tokenizer = smollm2
    template = default_prompt_template("note")
    rows = ROWS + [{"note": "mortality was lower with the new treatment (p = 0.01)"}]
    batched = predict(model, tokenizer, rows, prompt_template=template, batch_size=3, max_new_tokens=12,
                      show_progress=False)
    _check_records(batched, 3)
    assert all(record["explanation"] for record in batched)
    for row, record in zip(rows, batched):
        alone = predict(model, tokenizer, [row], prompt_template=template, max_new_tokens=12, show_progress=False)[0]
        np.testing.assert_allclose(alone["probability"], record["probability"], atol=1e-5)


class _Scripted(LogitsProcessor):
    """Makes greedy decoding write `tokens` (then end-of-turn), whatever the model would say."""

    def __init__(self, tokens, start, eos):
        self.tokens, self.start, self.eos = [*tokens, eos], start, eos

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.start
        forced = self.tokens[step] if step < len(self.tokens) else self.eos
        scores[:, forced] = scores.max() + 100.0
        return scores


class TestExplanationsEnd:
    def _explain(self, tiny, prompt, script, **kwargs):
        model, tokenizer = tiny
        start = len(encode_prompts(tokenizer, [prompt])[0])
        tokens = tokenizer(script, add_special_tokens=False)["input_ids"]
        return predict(model, tokenizer, [prompt], max_new_tokens=len(tokens) + 2, show_progress=False,
                       logits_processor=[_Scripted(tokens, start, tokenizer.eos_token_id)], **kwargs)[0]

    def test_generation_stops_at_the_verdict_line(self, tiny):
        record = self._explain(tiny, "Is it?", "Because it is.\nAnswer: Yes\nAnd then some more text.")
        assert record["explanation"] == "Because it is.\nAnswer: Yes"
        assert record["verdict"] == 1 and record["explain"] == "natural"

    def test_copied_prompt_text_is_free_but_a_generated_loop_is_blocked(self, tiny):
        quote = "the pain score fell with drug A versus placebo in the trial"
        copied = self._explain(tiny, f"Abstract: {quote}.", f'It says "{quote}".\nAnswer: Yes')
        assert copied["explanation"] == f'It says "{quote}".\nAnswer: Yes'  # `no_repeat_ngram_size` would ban it
        loop = "on the abstract " * 6
        looped = self._explain(tiny, "Is it?", loop)
        assert looped["explanation"] != loop.strip()
        assert not has_loop(looped["explanation"], n=6, repeats=2)

    def test_the_block_bans_generated_ngrams_only(self):
        block = NoRepeatGeneratedNGramLogitsProcessor(3, start=4)
        ids = torch.tensor([[1, 2, 3, 1, 1, 2, 5, 1, 2]])  # prompt 1 2 3 1 | generated 1 2 5 1 2
        scores = block(ids, torch.zeros(1, 8))
        assert scores[0].isinf().nonzero().flatten().tolist() == [5]  # "1 2 5" again, not the prompt's "1 2 3"


class TestDecisionMode:
    def test_the_head_decides_and_the_explanation_follows_its_cue(self, tiny):
        model, tokenizer = tiny
        kwargs = dict(max_new_tokens=5, show_progress=False, blocked_ngram_size=0)
        natural = predict(model, tokenizer, PROMPTS, batch_size=5, **kwargs)
        decided = predict(model, tokenizer, PROMPTS, batch_size=5, explain="decision", **kwargs)
        np.testing.assert_allclose(_probabilities(decided), _probabilities(natural), atol=1e-5)
        for prompt, record in zip(PROMPTS, decided):
            assert record["explain"] == "decision" and record["label"] in (0, 1)
            cue = tokenizer(VerdictFormat().cue(record["label"]), add_special_tokens=False)["input_ids"]
            ids = torch.tensor([encode_prompts(tokenizer, [prompt])[0] + cue])
            expected = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            generated = tokenizer.decode(expected[0, ids.shape[1] :], skip_special_tokens=True)
            assert record["explanation"] == generated.strip()
            alone = predict(model, tokenizer, [prompt], explain="decision", **kwargs)[0]
            assert alone["explanation"] == record["explanation"]

    def test_pipeline_and_refusals(self, tiny):
        model, tokenizer = tiny
        classifier = pipeline("clsgen", model=model, tokenizer=tokenizer, device="cpu")
        texts = [p for p in PROMPTS if isinstance(p, str)]
        expected = predict(model, tokenizer, texts, max_new_tokens=4, explain="decision", show_progress=False)
        assert [r["explanation"] for r in classifier(texts, max_new_tokens=4, explain="decision")] == [
            r["explanation"] for r in expected]
        with pytest.raises(ValueError, match="probability_from='head'"):
            predict(model, tokenizer, texts, explain="decision", probability_from="verdict", show_progress=False)
        with pytest.raises(ValueError, match="`explain`"):
            predict(model, tokenizer, texts, explain="both", show_progress=False)
