"""Shareable CLSGen model folders, from a training checkpoint, an adapter folder or a CLSGen model folder.

`export_model` writes a folder that someone without `clsgen_hf` can use:

merged (one `model.safetensors`, LoRA merged in) or adapter (the LoRA adapter with its `score` head), with
`config.json` (`auto_map`) and the code files that `save_pretrained` copies for the registered auto classes, the
tokenizer, generation config, prompt template, results and the model card rebuilt from the run's (`ModelCard.load`).
Sources load through `from_pretrained` / `PeftModel.from_pretrained`, their failures becoming one `UsageError`; the
export reloads the same way and must give the source's classification logits. Weights are safetensors only.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import ModelCard
from safetensors import SafetensorError, safe_open

from .configuration_clsgen import LlamaCLSGenConfig
from .errors import UsageError
from .model_card import RESULTS_FILE, CLSGenCardData, evaluation_table, hub_base_model, read_json, write_json
from .output_folders import check_output_dir, install_output, staged_output
from .prompt_template import PromptTemplate, default_prompt_template, encode_prompts


logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"checkpoint-\d+")
VALIDATION_TEXTS = (
    "The treatment group improved markedly by week 12, while the placebo group did not change.",
    "No difference between the two arms was observed for the primary outcome.",
    "The study was stopped early; results are reported for 40 of the 120 planned patients.",
)


@dataclass
class SourceFolder:
    """What `inspect_source` found: the folder, its `kind` (`"adapter"` or `"model"`), the run's output folder when
    it is one of its `checkpoint-N` folders, whether it holds the run's `final` weights (which the run's numbers
    describe), and the tensor names -> shapes of its safetensors files."""

    path: Path
    kind: str
    tensors: dict[str, list[int]]
    run_dir: Path | None = None
    final: bool = True

    def find(self, *names: str) -> Path | None:
        """The folder (else the run's output folder) if it holds one of `names`."""
        return next((f for f in (self.path, self.run_dir) if f and any((f / n).is_file() for n in names)), None)

    @property
    def num_labels(self) -> int:
        return next(shape[0] for name, shape in self.tensors.items() if name.endswith("score.weight"))


@dataclass
class ExportReport:
    """What `export_model` wrote and how the exported folder compared with its source."""

    out_dir: Path
    form: str
    source: Path
    base_model: str | None
    files: list[str]
    evaluation_table: str
    validated: bool = False
    max_abs_diff: float | None = None
    n_prompts: int = 0
    loaded_class: str | None = None

    def __str__(self) -> str:
        lines = [f"Exported {self.source} -> {self.out_dir} ({self.form})", "files: " + ", ".join(self.files)]
        lines.append(f"validation: reloaded as {self.loaded_class}; max |cls_logits - source| = {self.max_abs_diff:.2e} "
                     f"over {self.n_prompts} prompts" if self.validated else "validation: skipped")
        lines += ["evaluation (from the card):", self.evaluation_table or "  no evaluation results recorded"]
        return "\n".join(lines)


def inspect_source(path: str | os.PathLike) -> SourceFolder:
    """Recognise a checkpoint, adapter or CLSGen model folder and open its safetensors files (`safe_open`), without
    loading the weights: a missing path, a folder of neither kind, no or pickled-only weights, a truncated or corrupted
    file, or weights without a trained `score` head raise a `UsageError` saying so."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path} {'is a file' if path.exists() else 'does not exist'}: give the folder of a training "
                         "checkpoint, an adapter or a CLSGen model.")
    kind = "adapter" if (path / "adapter_config.json").is_file() else "model" if (path / "config.json").is_file() else None
    if kind is None:
        present = sorted(p.name for p in path.iterdir())
        raise UsageError(f"{path} is not a CLSGen checkpoint, adapter or model folder: it has no adapter_config.json "
                         f"and no config.json (it holds: {', '.join(present[:12]) or 'nothing'}).")
    if kind == "model":
        _load_config(path)  # a foreign architecture fails here, naming it
    files = sorted(path.glob("adapter_model.safetensors" if kind == "adapter" else "model*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in path.glob("*.bin"))
        raise UsageError(f"{path} has pickled weights only ({', '.join(pickled)}), which export does not load; re-save "
                         "it with `save_pretrained` (safetensors)." if pickled else f"{path} has "
                         f"{'adapter_config.json' if kind == 'adapter' else 'a config.json'} but no weights (safetensors).")
    source = SourceFolder(path, kind, _tensors(files))
    if not any(name.endswith("score.weight") for name in source.tensors):
        raise UsageError(f"{path} holds no `score` head: " + (
            "it was not trained as a CLSGen adapter (CLSGenTrainer adds `score` to the LoRA config's `modules_to_save`)."
            if kind == "adapter" else "it is a Llama model without a `score` head (a plain causal LM, not a trained "
            "CLSGen model); train it with `clsgen-hf train` or `CLSGenTrainer` first."))
    if _CHECKPOINT.fullmatch(path.name):
        state = read_json(path / "trainer_state.json") or {}
        best = state.get("best_model_checkpoint")
        source.run_dir = path.parent
        source.final = bool(state) and state.get("global_step", 0) >= state.get("max_steps", math.inf) and (
            best is None or Path(best).name == path.name)
    return source


def _tensors(files: list[Path]) -> dict[str, list[int]]:
    shapes = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as weights:
                shapes.update({name: weights.get_slice(name).get_shape() for name in weights.keys()})
        except SafetensorError as error:
            raise UsageError(f"{file} is truncated or corrupted (safetensors: {error}).") from None
    return shapes


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
        source: a `checkpoint-N` folder of a LoRA run, an adapter folder, or a CLSGen model folder.
        out_dir: the folder to write: new, empty, or (with `overwrite`) a folder an earlier export wrote. It may not
            be, contain or lie inside the source, whatever `overwrite` says.
        merge: write one merged `model.safetensors` (loadable with transformers alone); `False` writes the adapter.
        base_model: the base of an adapter, when its `adapter_config.json` names none or one not on this machine
            (a Hub id, a folder or a `.gguf` file).
        results: evaluation numbers for the card (a dict or a JSON file). By default the run's `clsgen_results.json`,
            used for a checkpoint only when it holds the run's final weights.
        repo_id: the Hub id the card's usage snippet loads (default: `out_dir`).
        dataset_name, datasets: the training data, in words and as Hub dataset ids, for the card.
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

    with staged_output(out) as staging:
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
        repo_id = repo_id or str(out)
        card.model_name, card.repo_id, card.form, card.results, card.prompt_template = (
            repo_id.rstrip("/").split("/")[-1], repo_id, "merged" if merge else "adapter", results, template)
        card.config, card.datasets = LlamaCLSGenConfig.from_pretrained(staging), datasets or card.datasets
        card.dataset_name = dataset_name or card.dataset_name
        card.to_model_card().save(staging / "README.md")

    report = ExportReport(out, card.form, src.path, card.base_model, sorted(p.name for p in staging.iterdir()),
                          evaluation_table(results))
    if validate:
        try:
            exported, report.loaded_class = _reload(staging, merge, base_source)
            report.max_abs_diff, report.n_prompts = _compare(reference, _cls_logits(exported, prompts), atol), len(prompts)
            report.validated = True
        except UsageError as error:
            raise UsageError(f"{error}\nThe unvalidated export was left in {staging} for inspection.") from None
    install_output(staging, out, src.path, overwrite)
    return report


def load_source(src: SourceFolder, base_model: str | os.PathLike | None = None):
    """(model, tokenizer, prompt template or `None`, base source or `None`): the CLSGen model of a model folder, or
    the base model with the adapter on it (a `PeftModel`); loading failures become a `UsageError`."""
    from peft import PeftConfig, PeftModel

    from .loading import load_model, load_tokenizer

    template = PromptTemplate.in_folder(src.path) or PromptTemplate.in_folder(src.run_dir)
    if src.kind == "model":
        try:
            model = load_model(src.path, use_safetensors=True).eval()
        except (OSError, ValueError) as error:
            raise UsageError(f"Could not load the model in {src.path}: {error}") from None
        return model, load_tokenizer(src.path), template, None
    base_source = _resolve_base(base_model or PeftConfig.from_pretrained(src.path).base_model_name_or_path, src.path)
    labels = {"id2label": dict(template.verdict_format.verbalizers)} if template else {"num_labels": src.num_labels}
    if src.find("config.json"):  # a CLSGen config next to the adapter (an adapter export, the run's merged save)
        config = _load_config(src.find("config.json"))
        labels = {"id2label": config.id2label, "cls_threshold": config.cls_threshold}
    try:
        model = PeftModel.from_pretrained(load_model(base_source, **labels), src.path).eval()
    except (OSError, ValueError, RuntimeError) as error:
        raise UsageError(f"Could not load the adapter {src.path} on the base model {base_source!r}: {error}\n"
                         "Pass its folder, Hub id or .gguf file with --base_model.") from None
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
                data = CLSGenCardData.from_card(card)
                data.base_model = hub_base_model(data.base_model or base_model) or data.base_model or base_model
                return data
    return CLSGenCardData(base_model=hub_base_model(base_model) or base_model)


def _results(src: SourceFolder, results) -> dict | None:
    if isinstance(results, dict):
        return results
    if results is not None:
        data = read_json(results)
        if not isinstance(data, dict):
            raise UsageError(f"{results} holds no evaluation results (a JSON object is expected).")
        return data
    folder = src.find(RESULTS_FILE)
    if folder is not None and folder != src.path and not src.final:
        logger.warning("%s describes the run's final model, not %s: the card gets no evaluation numbers (pass "
                       "--results to give some).", folder / RESULTS_FILE, src.path.name)
        return None
    return read_json(folder / RESULTS_FILE) if folder is not None else None


def _save_adapter(model, tokenizer, folder: Path, base_model: str) -> None:
    from transformers.dynamic_module_utils import custom_object_save

    model.peft_config[model.active_adapter].base_model_name_or_path = base_model
    model.save_pretrained(folder)
    base = model.get_base_model()
    set_generation_tokens(base, tokenizer)
    custom_object_save(base, folder, config=base.config)  # the code files, as the base's `save_pretrained` copies them
    base.config.save_pretrained(folder)
    base.generation_config.save_pretrained(folder)


def set_generation_tokens(model, tokenizer) -> None:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id


def _reload(folder: Path, merged: bool, base_source):
    """The exported folder as its users load it: `AutoModel` (merged) or PEFT on the base model (adapter)."""
    from peft import PeftModel
    from transformers import AutoModel

    from .loading import load_model

    if merged:
        model = AutoModel.from_pretrained(folder).eval()
        return model, f"{type(model).__module__}.{type(model).__name__}"
    config = LlamaCLSGenConfig.from_pretrained(folder)
    base = load_model(base_source, id2label=config.id2label, cls_threshold=config.cls_threshold)
    model = PeftModel.from_pretrained(base, folder).eval()
    return model, f"{type(model).__name__}({type(base).__name__})"


def validation_prompts(tokenizer, template: PromptTemplate | None) -> list[list[int]]:
    """Token ids of a few prompts built as the model's own (its template, else the generic one)."""
    template = template or default_prompt_template("text")
    return encode_prompts(tokenizer, [{name: text for name in template.fields} for text in VALIDATION_TEXTS], template)


@torch.no_grad()
def _cls_logits(model, prompts: list[list[int]]) -> list[list[float]]:
    return [model(input_ids=torch.tensor([ids], device=model.device)).cls_logits[0].tolist() for ids in prompts]


def _compare(reference: list[list[float]], exported: list[list[float]], atol: float) -> float:
    worst = max(abs(a - b) for ref, got in zip(reference, exported) for a, b in zip(ref, got))
    if not worst <= atol:
        raise UsageError(f"The exported model's cls_logits differ from the source's by up to {worst:.2e} "
                         f"(tolerance {atol:.0e}).")
    return worst


__all__ = ["ExportReport", "SourceFolder", "export_model", "inspect_source", "load_source"]
