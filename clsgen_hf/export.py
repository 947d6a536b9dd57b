"""`export_model`: a checkpoint, adapter or CLSGen model folder as a folder someone without `clsgen_hf` can use,
merged or as the adapter, with its code files, tokenizer, prompt template, results and the run's card rebuilt; it is
reloaded as its users load it and must give the source's classification logits.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from huggingface_hub import ModelCard
from peft import PeftConfig, PeftModel
from safetensors import SafetensorError, safe_open
from transformers import AutoModel
from transformers.dynamic_module_utils import custom_object_save

from .calibration import DecisionRule, restore_rule
from .configuration_clsgen import LlamaCLSGenConfig
from .errors import UsageError
from .json_files import read_json, write_json
from .loading import load_model, load_tokenizer
from .model_card import RESULTS_FILE, CLSGenCardData, evaluation_table
from .output_folders import check_output_dir, staged_output
from .prompt_template import PromptTemplate, default_prompt_template, encode_prompts


logger = logging.getLogger(__name__)

VALIDATION_TEXTS = (
    "The treatment group improved markedly by week 12, while the placebo group did not change.",
    "No difference between the two arms was observed for the primary outcome.",
    "The study was stopped early; results are reported for 40 of the 120 planned patients.",
)


@dataclass
class SourceFolder:
    """A folder of `kind` `"adapter"` or `"model"` with a `score` head, and for a `checkpoint-N` folder the run's
    folder and whether it holds the run's `final` weights (which the run's numbers describe)."""

    path: Path
    kind: str
    num_labels: int
    run_dir: Path | None = None
    final: bool = True

    def find(self, *names: str) -> Path | None:
        """The folder (else the run's output folder) if it holds one of `names`."""
        return next((f for f in (self.path, self.run_dir) if f and any((f / n).is_file() for n in names)), None)


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


def inspect_source(path: str | os.PathLike) -> SourceFolder:
    """Recognise a checkpoint, adapter or CLSGen model folder from its files and safetensors headers (no weights are
    loaded); any other folder raises a `UsageError` saying what is wrong with it."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path} {'is a file' if path.exists() else 'does not exist'}: give the folder of a training "
                         "checkpoint, an adapter or a CLSGen model.")
    if (path / "adapter_config.json").is_file():
        kind = "adapter"
    elif (path / "config.json").is_file():
        kind = "model"
        _load_config(path)  # a foreign architecture fails here, naming it
    else:
        present = sorted(p.name for p in path.iterdir())
        raise UsageError(f"{path} is not a CLSGen checkpoint, adapter or model folder: it has no adapter_config.json "
                         f"and no config.json (it holds: {', '.join(present[:12]) or 'nothing'}).")
    files = sorted(path.glob("adapter_model.safetensors" if kind == "adapter" else "model*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in path.glob("*.bin"))
        config = "adapter_config.json" if kind == "adapter" else "a config.json"
        raise UsageError(f"{path} has pickled weights only ({', '.join(pickled)}), which export does not load; "
                         "re-save it with `save_pretrained` (safetensors)." if pickled else f"{path} has {config} "
                         "but no weights (safetensors).")
    heads = []  # the rows of each `score` head, read from the safetensors headers
    for file in files:
        try:
            with safe_open(file, framework="pt") as weights:
                names = [name for name in weights.keys() if name.endswith("score.weight")]
                heads += [weights.get_slice(name).get_shape()[0] for name in names]
        except SafetensorError as error:
            raise UsageError(f"{file} is truncated or corrupted (safetensors: {error}).") from None
    if not heads:
        raise UsageError(f"{path} holds no `score` head: " + (
            "it was not trained as a CLSGen adapter (CLSGenTrainer adds `score` to the LoRA config's "
            "`modules_to_save`)." if kind == "adapter" else "it is a Llama model without a `score` head (a plain "
            "causal LM, not a trained CLSGen model); train it with `clsgen-hf train` or `CLSGenTrainer` first."))
    source = SourceFolder(path, kind, heads[0])
    if re.fullmatch(r"checkpoint-\d+", path.name):
        state = read_json(path / "trainer_state.json") or {}
        best = state.get("best_model_checkpoint")
        source.run_dir = path.parent
        source.final = bool(state) and state.get("global_step", 0) >= state.get("max_steps", math.inf) and (
            best is None or Path(best).name == path.name)
    return source


def _load_config(folder: Path) -> LlamaCLSGenConfig:
    try:
        return LlamaCLSGenConfig.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise UsageError(f"{folder} holds no CLSGen model: {error}") from None


def export_model(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    merge: bool = True,
    base_model: str | os.PathLike | None = None,
    results: str | os.PathLike | dict | None = None,
    repo_id: str | None = None,
    dataset_name: str | None = None,
    datasets: list[str] | None = None,
    overwrite: bool = False,
    validate: bool = True,
    atol: float = 1e-5,
) -> ExportReport:
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
    src = inspect_source(source)
    out = Path(out_dir)
    if src.kind == "model" and not merge:
        raise UsageError(f"{src.path} holds a full model, not an adapter: export it merged (--format merged).")
    check_output_dir(out, src.path, overwrite)
    results = _results(src, results)
    model, tokenizer, template, base_source = load_source(src, base_model)
    prompts = validation_prompts(tokenizer, template)
    reference = _cls_logits(model, prompts) if validate else None
    card = _source_card(src, base_model=str(base_source) if base_source else None)
    repo_id = repo_id or str(out)
    card = replace(
        card, model_name=repo_id.rstrip("/").split("/")[-1], repo_id=repo_id, form="merged" if merge else "adapter",
        results=results, prompt_template=template, config=model.config, datasets=datasets or card.datasets,
        dataset_name=dataset_name or card.dataset_name,
    )
    with staged_output(out, src.path, overwrite) as staging:
        if merge:  # `save_pretrained` writes the weights, `auto_map` and the code files of the auto classes
            merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
            set_generation_tokens(merged, tokenizer)
            merged.save_pretrained(staging)
        else:
            _save_adapter(model, tokenizer, staging, str(base_source))
        tokenizer.save_pretrained(staging)
        if template is not None:
            template.save_pretrained(staging)
        if results:
            write_json(staging / RESULTS_FILE, results)
        card.to_model_card().save(staging / "README.md")
        report = ExportReport(out, card.form, src.path, sorted(p.name for p in staging.iterdir()),
                              evaluation_table(results))
        if validate:
            exported, report.loaded_class = _reload(staging, merge, base_source)
            report.max_abs_diff = float((reference - _cls_logits(exported, prompts)).abs().max())
            if not report.max_abs_diff <= atol:
                raise UsageError(f"The exported model's cls_logits differ from the source's by up to "
                                 f"{report.max_abs_diff:.2e} (tolerance {atol:.0e}).")
            report.n_prompts, report.validated = len(prompts), True
    return report


def load_source(src: SourceFolder, base_model: str | os.PathLike | None = None):
    """(model, tokenizer, prompt template or `None`, base source or `None`): the CLSGen model of a model folder, or
    the base model with the adapter on it (a `PeftModel`); loading failures become a `UsageError`."""
    template = PromptTemplate.in_folder(src.path) or PromptTemplate.in_folder(src.run_dir)
    if src.kind == "model":
        try:
            model = load_model(src.path, use_safetensors=True).eval()
        except (OSError, ValueError) as error:
            raise UsageError(f"Could not load the model in {src.path}: {error}") from None
        return model, load_tokenizer(src.path), template, None
    base_source = _resolve_base(base_model or PeftConfig.from_pretrained(src.path).base_model_name_or_path, src.path)
    labels = {"id2label": dict(template.verdict_format.verbalizers)} if template else {"num_labels": src.num_labels}
    try:
        model = PeftModel.from_pretrained(load_model(base_source, **labels), src.path).eval()
    except (OSError, ValueError, RuntimeError) as error:
        raise UsageError(f"Could not load the adapter {src.path} on the base model {base_source!r}: {error}\n"
                         "Pass its folder, Hub id or .gguf file with --base_model.") from None
    # The rule beside the adapter; a checkpoint of an earlier version has none: its run's, if it holds the final one
    restore_rule(model, src.path, src.run_dir if src.final else None)
    tokenizer = load_tokenizer(src.find("tokenizer.json", "tokenizer_config.json", "tokenizer.model") or base_source)
    return model, tokenizer, template, base_source


def _resolve_base(base: str | os.PathLike | None, adapter_dir: Path) -> str:
    if not base:
        raise UsageError(f"{adapter_dir / 'adapter_config.json'} names no base model (`base_model_name_or_path`); "
                         "pass it with --base_model.")
    path = Path(base)
    if path.is_dir() and not (path / "config.json").is_file():  # a model loaded from a GGUF file records its folder
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise UsageError(f"The base model folder {path} has no config.json and {len(ggufs)} .gguf files; pass "
                             "the base model with --base_model.")
        return str(ggufs[0])
    return str(base)


def _source_card(src: SourceFolder, base_model: str | None) -> CLSGenCardData:
    """The run's card (written by `CLSGenTrainer`) as card data, or an empty one; PEFT's own card is skipped."""
    for folder in (src.path, src.run_dir):
        if folder is not None and (folder / "README.md").is_file():
            card = ModelCard.load(folder / "README.md")
            if "clsgen" in card.data:
                return CLSGenCardData.from_card(card, base_model=card.data.get("base_model") or base_model)
    return CLSGenCardData(base_model=base_model)


def _results(src: SourceFolder, results: str | os.PathLike | dict | None) -> dict | None:
    if results is None:
        folder = src.find(RESULTS_FILE)
        if folder is None:
            return None
        if folder != src.path and not src.final:
            logger.warning("%s describes the run's final model, not %s: the card gets no evaluation numbers (pass "
                           "--results to give some).", folder / RESULTS_FILE, src.path.name)
            return None
        results = folder / RESULTS_FILE
    data = results if isinstance(results, dict) else read_json(results)
    if not isinstance(data, dict):
        raise UsageError(f"{results} holds no evaluation results (a JSON object is expected).")
    return data


def _save_adapter(model, tokenizer, folder: Path, base_model: str) -> None:
    model.peft_config[model.active_adapter].base_model_name_or_path = base_model
    model.save_pretrained(folder)
    base = model.get_base_model()
    set_generation_tokens(base, tokenizer)
    custom_object_save(base, folder, config=base.config)  # the code files, as the base's `save_pretrained` copies them
    base.config.save_pretrained(folder)
    base.generation_config.save_pretrained(folder)
    DecisionRule.from_config(base.config).save_pretrained(folder)


def set_generation_tokens(model, tokenizer) -> None:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id


def _reload(folder: Path, merged: bool, base_source):
    """The exported folder as its users load it: `AutoModel` (merged) or PEFT on the base model (adapter)."""
    if merged:
        model = AutoModel.from_pretrained(folder).eval()
        return model, f"{type(model).__module__}.{type(model).__name__}"
    model = load_source(inspect_source(folder), base_source)[0]
    return model, f"{type(model).__name__}({type(model.get_base_model()).__name__})"


def validation_prompts(tokenizer, template: PromptTemplate | None) -> list[list[int]]:
    """Token ids of a few prompts built as the model's own (its template, else the generic one)."""
    template = template or default_prompt_template("text")
    return encode_prompts(tokenizer, [{name: text for name in template.fields} for text in VALIDATION_TEXTS], template)


@torch.no_grad()
def _cls_logits(model, prompts: list[list[int]]) -> torch.Tensor:
    return torch.cat([model(input_ids=torch.tensor([ids], device=model.device)).cls_logits.cpu() for ids in prompts])


__all__ = ["ExportReport", "SourceFolder", "export_model", "inspect_source", "load_source"]
