"""`export_serving` (the `serving` form of `clsgen-hf export`): a CLSGen model as two folders of standard transformers
architectures, for engines that run no remote code (vLLM, `transformers serve`): `classifier/`, a
`LlamaForSequenceClassification` with the calibration's scale folded into `score` (its per-class offset in
`cls_logit_bias`), and `generator/`, a `LlamaForCausalLM`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from transformers import LlamaForCausalLM

from .export import validation_prompts
from .model_folders import load_model_folder
from .output_folders import staged_output
from .plain_llama import compare_plain_folders, plain_classifier, plain_llama


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


def export_serving(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                   base_model: str | os.PathLike | None = None, overwrite: bool = False, validate: bool = True,
                   atol: float = 1e-5) -> ServingReport:
    """Write `out_dir/classifier` and `out_dir/generator` from what `export_model` takes (an adapter is merged);
    `validate` reloads both with plain Auto classes and compares probabilities and a greedy explanation."""
    with staged_output(out_dir, source, overwrite) as staging:
        model, tokenizer, template = load_model_folder(source, base_model)[:3]
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        prompts = validation_prompts(tokenizer, template)
        classifier, classifier_tokenizer, bias = plain_classifier(model, tokenizer, prompts)
        generator = plain_llama(LlamaForCausalLM, model, exclude=("score.",))
        for name, plain, plain_tokenizer in (("classifier", classifier, classifier_tokenizer),
                                             ("generator", generator, tokenizer)):
            plain.save_pretrained(staging / name)
            plain_tokenizer.save_pretrained(staging / name)
            if template is not None:
                template.save_pretrained(staging / name)
        worst, explanation = compare_plain_folders(staging, model, prompts, bias, atol) if validate else (None, None)
    return ServingReport(Path(out_dir), Path(source), bias, classifier_tokenizer.pad_token, validated=validate,
                         max_abs_diff=worst, n_prompts=len(prompts) if validate else 0, explanation=explanation)


__all__ = ["ServingReport", "export_serving"]
