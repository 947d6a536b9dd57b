"""A CLSGen model as plain transformers Llama classes (`LlamaForSequenceClassification`, `LlamaForCausalLM`) sharing
its tensors, and the check that their saved folders, reloaded with plain Auto classes, give the model's outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from .configuration_clsgen import LlamaCLSGenConfig
from .errors import UsageError


CLSGEN_ONLY = {*LlamaCLSGenConfig.__dataclass_fields__} - {*LlamaConfig.__dataclass_fields__}
_NOT_COPIED = CLSGEN_ONLY | {"auto_map", "clsgen_modeling_version", "model_type", "transformers_version"}


def plain_llama(model_class: type[PreTrainedModel], model: PreTrainedModel, exclude: tuple[str, ...],
                weights: dict | None = None, **config_changes) -> PreTrainedModel:
    """`model_class` with a plain Llama config and `model`'s tensors (shared) but those under `exclude`, plus
    `weights`; one that generates does so as `model` (its generation config)."""
    data = {k: v for k, v in model.config.to_dict().items() if k not in _NOT_COPIED}
    config = LlamaConfig(**{**data, **config_changes, "architectures": [model_class.__name__]})
    with torch.device("meta"):
        plain = model_class(config)
    kept = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith(exclude)}
    plain.load_state_dict({**kept, **(weights or {})}, assign=True)  # strict: every parameter, no other
    if plain.can_generate():
        plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def plain_classifier(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]]
                     ) -> tuple[LlamaForSequenceClassification, PreTrainedTokenizerBase, list[float] | None]:
    """(classifier, its tokenizer, `cls_logit_bias` or `None`).

    CLSGen's probabilities are `softmax(scale * (W h + b) + bias)`; transformers' `score` has no bias (nor can a
    bias-free map of the RMS-normalised `h` add one). So `score.weight = scale * W`, and `b' = scale * b + bias`,
    up to a shift common to all classes (which softmax ignores), goes to the config as `cls_logit_bias` unless zero.
    The classifier pools the rightmost non-pad token: its pad is the first of pad, unk, eos, bos no prompt ends in.
    """
    config = model.config
    weight = model.score.weight.detach().double() * config.cls_logit_scale
    bias = model.score.bias.detach().double() * config.cls_logit_scale
    if config.cls_logit_bias is not None:
        bias = bias + torch.tensor(config.cls_logit_bias, dtype=torch.float64)
    bias = bias - bias[0]  # softmax ignores a shift common to all classes
    bias = None if bool((bias == 0).all()) else bias.tolist()
    last_tokens = {ids[-1] for ids in prompts}
    candidates = (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)
    pad = next((token for token in candidates if token is not None and token not in last_tokens), None)
    if pad is None:
        raise UsageError(f"Every special token of the tokenizer ends the prompts ({sorted(last_tokens)}): the "
                         "sequence classifier could not find the last prompt token in a padded batch.")
    classifier_tokenizer = tokenizer
    if pad != tokenizer.pad_token_id:
        classifier_tokenizer = copy.deepcopy(tokenizer)
        classifier_tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad)
    classifier = plain_llama(LlamaForSequenceClassification, model, exclude=("lm_head.", "score."), pad_token_id=pad,
                             weights={"score.weight": weight.to(model.score.weight.dtype)},
                             cls_threshold=config.cls_threshold, cls_logit_bias=bias)
    return classifier, classifier_tokenizer, bias


@torch.no_grad()
def compare_plain_folders(folder: Path, model: PreTrainedModel, prompts: list[list[int]], bias: list[float] | None,
                          atol: float) -> tuple[float, str]:
    """Reload `folder`'s `classifier` and `generator` as an engine user would (plain Auto classes) and compare them
    with `model`: (max |probability - model's|, the greedy explanation both give)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    model = model.float()  # both sides in float32: what is compared is the fold and the pooled token
    load = dict(dtype=torch.float32, device_map=model.device)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder / "classifier", **load).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "classifier")
    shift = torch.tensor(bias or 0.0, device=model.device)
    worst = 0.0
    for batch, side in [*(([ids], "left") for ids in prompts), (prompts, "left"), (prompts, "right")]:
        inputs = tokenizer.pad({"input_ids": batch}, padding_side=side, return_tensors="pt").to(model.device)
        probabilities = (classifier(**inputs).logits + shift).softmax(-1)
        worst = max(worst, float((probabilities - model(**inputs).cls_probabilities).abs().max()))
    if not worst <= atol:
        raise UsageError(f"The exported classifier's probabilities differ from the source's by up to {worst:.2e} "
                          f"(tolerance {atol:.0e}).")
    generator = AutoModelForCausalLM.from_pretrained(folder / "generator", **load).eval()
    ids = torch.tensor([prompts[0]], device=model.device)
    greedy = dict(attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    expected = model.classify_and_generate(ids, **greedy).sequences
    generated = generator.generate(ids, **greedy)
    if not torch.equal(generated, expected):
        raise UsageError(f"The exported generator's greedy tokens {generated[0, ids.shape[1]:].tolist()} differ from "
                          f"the source's {expected[0, ids.shape[1]:].tolist()}.")
    return worst, tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)


__all__ = ["compare_plain_folders", "plain_classifier", "plain_llama"]
