"""`export_model`: a checkpoint, adapter or CLSGen model folder as a folder someone without `clsgen_hf` can use,
merged or as the adapter, with its code files, tokenizer, prompt template, results and the run's card rebuilt; it is
reloaded as its users load it and must give the source's classification logits.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from huggingface_hub import ModelCard
from transformers import AutoModel
from transformers.dynamic_module_utils import custom_object_save

from .calibration import DecisionRule
from .errors import UsageError
from .json_files import read_json, write_json
from .model_card import RESULTS_FILE, CLSGenCardData, evaluation_table
from .model_folders import ModelFolder, inspect_model_folder, load_model_folder
from .output_folders import staged_output
from .prompt_template import PromptTemplate, default_prompt_template, encode_prompts


logger = logging.getLogger(__name__)

VALIDATION_TEXTS = (
    "The treatment group improved markedly by week 12, while the placebo group did not change.",
    "No difference between the two arms was observed for the primary outcome.",
    "The study was stopped early; results are reported for 40 of the 120 planned patients.",
)


@dataclass
class ExportReport:
    """What `export_model` wrote and how the exported folder compared with its source."""

    out_dir: Path
    form: str
    source: Path
    files: list[str]
    evaluation_table: str
    validated: bool = False
    max_abs_diff: float | None = None
    n_prompts: int = 0
    loaded_class: str | None = None

    def __str__(self) -> str:
        lines = [f"Exported {self.source} -> {self.out_dir} ({self.form})", "files: " + ", ".join(self.files)]
        lines.append(f"validation: reloaded as {self.loaded_class}; max |cls_logits - source| = "
                     f"{self.max_abs_diff:.2e} over {self.n_prompts} prompts" if self.validated
                     else "validation: skipped")
        lines += ["evaluation (from the card):", self.evaluation_table or "  no evaluation results recorded"]
        return "\n".join(lines)


def export_model(source: str | os.PathLike, out_dir: str | os.PathLike, *, merge: bool = True,
                 base_model: str | os.PathLike | None = None, results: str | os.PathLike | dict | None = None,
                 repo_id: str | None = None, dataset_name: str | None = None, datasets: list[str] | None = None,
                 overwrite: bool = False, validate: bool = True, atol: float = 1e-5) -> ExportReport:
    """Export a checkpoint, adapter or CLSGen model folder as a shareable folder, and check that it reloads.

    Args:
        out_dir: a new or empty folder, or (with `overwrite`) one an earlier export wrote; never the source, a folder
            inside it or around it.
        merge: one merged `model.safetensors` (loadable with transformers alone), else the adapter.
        base_model: the base of an adapter whose `adapter_config.json` names none or one not on this machine.
        results: evaluation numbers for the card (a dict or a JSON file); default the run's `clsgen_results.json`,
            for a checkpoint only when it holds the run's final weights.
        repo_id, dataset_name, datasets: for the card (the Hub id its snippet loads, default `out_dir`).
        validate: reload the folder and compare the classification logits with the source's (to `atol`).
    """
    src = inspect_model_folder(source)
    if src.kind == "model" and not merge:
        raise UsageError(f"{src.path} holds a full model, not an adapter: export it merged (merge=True).")
    with staged_output(out_dir, src.path, overwrite) as staging:
        results = _results(src, results)
        model, tokenizer, template, base_source = load_model_folder(src, base_model)
        prompts = validation_prompts(tokenizer, template)
        reference = _cls_logits(model, prompts) if validate else None
        card = _source_card(src, base_model=str(base_source) if base_source else None)
        repo_id = repo_id or str(out_dir)
        card = replace(
            card, model_name=repo_id.rstrip("/").split("/")[-1], repo_id=repo_id, results=results,
            form="merged" if merge else "adapter", prompt_template=template, config=model.config,
            datasets=datasets or card.datasets, dataset_name=dataset_name or card.dataset_name,
        )
        if merge:  # `save_pretrained` writes the weights, `auto_map` and the code files of the auto classes
            (model.merge_and_unload() if hasattr(model, "merge_and_unload") else model).save_pretrained(staging)
        else:
            _save_adapter(model, staging, str(base_source))
        tokenizer.save_pretrained(staging)
        if template is not None:
            template.save_pretrained(staging)
        if results:
            write_json(staging / RESULTS_FILE, results)
        card.to_model_card().save(staging / "README.md")
        report = ExportReport(Path(out_dir), card.form, src.path, sorted(p.name for p in staging.iterdir()),
                              evaluation_table(results))
        if validate:
            exported, report.loaded_class = _reload(staging, merge, base_source)
            report.max_abs_diff = float((reference - _cls_logits(exported, prompts)).abs().max())
            if not report.max_abs_diff <= atol:
                raise UsageError(f"The exported model's cls_logits differ from the source's by up to "
                                 f"{report.max_abs_diff:.2e} (tolerance {atol:.0e}).")
            report.n_prompts, report.validated = len(prompts), True
    return report


def _source_card(src: ModelFolder, base_model: str | None) -> CLSGenCardData:
    """The run's card (written by `CLSGenTrainer`) as card data, or an empty one; PEFT's own card is skipped."""
    for folder in (src.path, src.run_dir):
        if folder is not None and (folder / "README.md").is_file():
            card = ModelCard.load(folder / "README.md")
            if "clsgen" in card.data:
                return CLSGenCardData.from_card(card, base_model=card.data.get("base_model") or base_model)
    return CLSGenCardData(base_model=base_model)


def _results(src: ModelFolder, results: str | os.PathLike | dict | None) -> dict | None:
    if results is None:
        folder = src.find(RESULTS_FILE)
        if folder is None:
            return None
        if folder != src.path and not src.final:
            logger.warning("%s describes the run's final model, not %s: the card gets no evaluation numbers (pass "
                           "results to give some).", folder / RESULTS_FILE, src.path.name)
            return None
        results = folder / RESULTS_FILE
    data = results if isinstance(results, dict) else read_json(results)
    if not isinstance(data, dict):
        raise UsageError(f"{results} holds no evaluation results (a JSON object is expected).")
    return data


def _save_adapter(model, folder: Path, base_model: str) -> None:
    model.peft_config[model.active_adapter].base_model_name_or_path = base_model
    model.save_pretrained(folder)
    base = model.get_base_model()
    custom_object_save(base, folder, config=base.config)  # the code files, as the base's `save_pretrained` copies them
    base.config.save_pretrained(folder)
    base.generation_config.save_pretrained(folder)
    DecisionRule.from_config(base.config).save_pretrained(folder)


def _reload(folder: Path, merged: bool, base_source):
    """The exported folder as its users load it: `AutoModel` (merged) or PEFT on the base model (adapter)."""
    if merged:
        model = AutoModel.from_pretrained(folder).eval()
        return model, f"{type(model).__module__}.{type(model).__name__}"
    model = load_model_folder(folder, base_source)[0]
    return model, f"{type(model).__name__}({type(model.get_base_model()).__name__})"


def validation_prompts(tokenizer, template: PromptTemplate | None) -> list[list[int]]:
    """Token ids of a few prompts built as the model's own (its template, else the generic one)."""
    template = template or default_prompt_template("text")
    return encode_prompts(tokenizer, [{name: text for name in template.fields} for text in VALIDATION_TEXTS], template)


@torch.no_grad()
def _cls_logits(model, prompts: list[list[int]]) -> torch.Tensor:
    return torch.cat([model(input_ids=torch.tensor([ids], device=model.device)).cls_logits.cpu() for ids in prompts])


__all__ = ["ExportReport", "export_model"]
