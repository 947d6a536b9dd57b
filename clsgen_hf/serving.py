"""`export_serving` (the `serving` form of `clsgen-hf export`): a CLSGen model as two folders of standard transformers
architectures, for engines that run no remote code (vLLM, `transformers serve`): `classifier/`, a
`LlamaForSequenceClassification` with the calibration's scale folded into `score` (its per-class offset in
`cls_logit_bias`), and `generator/`, a `LlamaForCausalLM`.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from .configuration_clsgen import LlamaCLSGenConfig
from .errors import UsageError
from .export import validation_prompts
from .loading import load_model_folder
from .output_folders import staged_output


CLSGEN_ONLY = {*LlamaCLSGenConfig.__dataclass_fields__} - {*LlamaConfig.__dataclass_fields__}
_NOT_COPIED = {"auto_map", "clsgen_modeling_version", "model_type", "transformers_version"}


@dataclass
class ServingReport:
    """What `export_serving` wrote and how the reloaded folders compared with the source."""

    out_dir: Path
    source: Path
    cls_logit_bias: list[float] | None
    pad_token: str
    validated: bool = False
    max_abs_diff: float | None = None
    n_prompts: int = 0
    explanation: str | None = None

    def __str__(self) -> str:
        lines = [f"Exported {self.source} -> {self.out_dir}/classifier (LlamaForSequenceClassification), "
                 f"{self.out_dir}/generator (LlamaForCausalLM); no remote code; classifier pad token "
                 f"{self.pad_token!r}",
                 "calibration folded into score: softmax(classifier logits) is the calibrated probability"
                 if self.cls_logit_bias is None else "score holds no bias: calibrated probability = softmax(logits + "
                 f"cls_logit_bias), cls_logit_bias = {[round(b, 6) for b in self.cls_logit_bias]} (classifier/"
                 "config.json): ask the engine for raw logits"]
        lines.append(f"validation: reloaded with AutoModelForSequenceClassification / AutoModelForCausalLM (float32); "
                     f"max |probability - source| = {self.max_abs_diff:.2e} over {self.n_prompts} prompts (alone, "
                     f"left- and right-padded); greedy explanation as the source's: {self.explanation!r}"
                     if self.validated else "validation: skipped")
        return "\n".join(lines)


def export_serving(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    base_model: str | os.PathLike | None = None,
    overwrite: bool = False,
    validate: bool = True,
    atol: float = 1e-5,
) -> ServingReport:
    """Write `out_dir/classifier` and `out_dir/generator` from what `export_model` takes (an adapter is merged);
    `validate` reloads both with plain Auto classes and compares probabilities and a greedy explanation."""
    with staged_output(out_dir, source, overwrite) as staging:
        model, tokenizer, template = load_model_folder(source, base_model)[:3]
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        prompts = validation_prompts(tokenizer, template)
        classifier, classifier_tokenizer, bias = _classifier(model, tokenizer, prompts)
        generator = _plain(LlamaForCausalLM, model, exclude=("score.",))
        generator.generation_config = copy.deepcopy(model.generation_config)
        report = ServingReport(Path(out_dir), Path(source), bias, classifier_tokenizer.pad_token)
        for name, plain, plain_tokenizer in (("classifier", classifier, classifier_tokenizer),
                                             ("generator", generator, tokenizer)):
            plain.save_pretrained(staging / name)
            plain_tokenizer.save_pretrained(staging / name)
            if template is not None:
                template.save_pretrained(staging / name)
        if validate:
            _validate(report, staging, model, prompts, atol)
    return report


def _plain(model_class, model, exclude: tuple[str, ...], weights: dict | None = None, **config_changes):
    """`model_class` with a plain Llama config and `model`'s tensors (shared) but those under `exclude`, plus
    `weights`."""
    data = {k: v for k, v in model.config.to_dict().items() if k not in CLSGEN_ONLY | _NOT_COPIED}
    config = LlamaConfig(**{**data, **config_changes, "architectures": [model_class.__name__]})
    with torch.device("meta"):
        plain = model_class(config)
    kept = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith(exclude)}
    plain.load_state_dict({**kept, **(weights or {})}, assign=True)  # strict: every parameter, no other
    return plain.eval()


def _classifier(model, tokenizer, prompts: list[list[int]]):
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
    classifier = _plain(
        LlamaForSequenceClassification, model, exclude=("lm_head.", "score."),
        weights={"score.weight": weight.to(model.score.weight.dtype)}, pad_token_id=pad,
        cls_threshold=config.cls_threshold, cls_logit_bias=bias,
    )
    return classifier, classifier_tokenizer, bias


@torch.no_grad()
def _validate(report: ServingReport, folder: Path, model, prompts: list[list[int]], atol: float) -> None:
    """Reload both folders as an engine user would (plain Auto classes) and compare them with `model`."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    model = model.float()  # both sides in float32: what is compared is the fold and the pooled token
    load = dict(dtype=torch.float32, device_map=model.device)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder / "classifier", **load).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "classifier")
    bias = torch.tensor(report.cls_logit_bias or 0.0, device=model.device)
    worst = 0.0
    for batch, side in [*(([ids], "left") for ids in prompts), (prompts, "left"), (prompts, "right")]:
        inputs = tokenizer.pad({"input_ids": batch}, padding_side=side, return_tensors="pt").to(model.device)
        probabilities = (classifier(**inputs).logits + bias).softmax(-1)
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
    report.explanation = tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)
    report.max_abs_diff, report.n_prompts, report.validated = worst, len(prompts), True


__all__ = ["ServingReport", "export_serving"]
