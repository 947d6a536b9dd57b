"""Shareable CLSGen model folders, from a training checkpoint, an adapter folder or a CLSGen model folder.

`export_model` writes a folder that someone without `clsgen_hf` can use:

- merged (default): `config.json` (with `auto_map` for `AutoConfig`/`AutoModel`/`AutoModelForCausalLM`), the
  self-contained `modeling_clsgen.py`/`configuration_clsgen.py`, one `model.safetensors` (LoRA merged in);
- adapter (`merge=False`): the LoRA adapter with the trained `score` head, the CLSGen `config.json` of the base and
  the same code files (loaded with PEFT on top of the base weights);

and in both the tokenizer with its chat template, `generation_config.json`, the model card (`README.md`) and, when
the run recorded them, `clsgen_prompt.json`, `clsgen_results.json` and `clsgen_training.json`.

Then it checks the folder as its users will load it: the merged form in a fresh Python process in which `clsgen_hf`
cannot be imported (`AutoModel.from_pretrained(folder, trust_remote_code=True)`, plus the card's usage snippet run
as written), the adapter form with PEFT; the classification logits on a few prompts must match the source's.

Weights are read and written as safetensors only; pickled weights (`*.bin`, `*.pt`) are refused, never loaded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .configuration_clsgen import LlamaCLSGenConfig
from .errors import UsageError
from .model_card import (
    PROMPT_TEMPLATE_FILE,
    RESULTS_FILE,
    SYNTHESIS_FILE,
    TRAINING_FILE,
    CLSGenCardData,
    evaluation_table,
    hub_base_model,
    lora_summary,
    read_json,
    write_json,
)
from .remote_code import copy_code


logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")
AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForCausalLM")
CLSGEN_MODEL_TYPES = ("llama_clsgen", "llama")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
SERVING_FOLDERS = ("classifier", "generator")  # what `clsgen_hf.serving.export_serving` writes
_CHECKPOINT = re.compile(r"checkpoint-\d+")
# Every name an export writes: `--overwrite` replaces only a folder that holds nothing else.
_EXPORTED_NAMES = re.compile(
    r"(config|generation_config|adapter_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|vocab"
    r"|clsgen_\w+|model\.safetensors\.index)\.json|(model|adapter_model|model-\d+-of-\d+)\.safetensors"
    r"|(modeling|configuration)_clsgen\.py|README\.md|chat_template\.jinja|merges\.txt|tokenizer\.model"
)
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit

VALIDATION_TEXTS = (
    "The treatment group improved markedly by week 12, while the placebo group did not change.",
    "No difference between the two arms was observed for the primary outcome.",
    "The study was stopped early; results are reported for 40 of the 120 planned patients.",
)


class ExportError(UsageError):
    """The source cannot be exported, the output folder is not safe to write, or the exported folder does not reload
    as the source: the message says why."""


@dataclass
class SourceFolder:
    """What `inspect_source` found in a folder.

    Attributes:
        path: the folder.
        kind: `"adapter"` (adapter_config.json + adapter weights) or `"model"` (config.json + full weights).
        run_dir: the training output folder, when `path` is one of its `checkpoint-N` folders.
        final: whether `path` holds the run's final weights, which the run's evaluation numbers describe.
        weights: the tensor names and shapes of its safetensors files.
    """

    path: Path
    kind: str
    run_dir: Path | None = None
    final: bool = True
    weights: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def find(self, name: str) -> Path | None:
        """`name` in the folder, else in the run's output folder."""
        for folder in (self.path, self.run_dir):
            if folder is not None and (folder / name).is_file():
                return folder / name
        return None

    @property
    def num_labels(self) -> int:
        shapes = [shape for name, shape in self.weights.items() if name.endswith("score.weight")]
        return shapes[0][0]


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
    explanation: str | None = None
    snippet_output: str | None = None

    def __str__(self) -> str:
        lines = [f"Exported {self.source} -> {self.out_dir} ({self.form})", "files: " + ", ".join(self.files)]
        if self.validated:
            how = ("reloaded with AutoModel.from_pretrained(..., trust_remote_code=True) in a process without "
                   "clsgen_hf" if self.form == "merged" else "reloaded with PEFT on the base model")
            lines.append(f"validation: {how}; max |cls_logits - source| = {self.max_abs_diff:.2e} over "
                         f"{self.n_prompts} prompts ({self.loaded_class})")
            if self.snippet_output is not None:
                lines.append("the card's usage snippet ran on the folder; it printed:")
                lines += ["  " + line for line in self.snippet_output.strip().splitlines()[:6]]
        else:
            lines.append("validation: skipped")
        lines.append("evaluation (from the card):")
        lines.append(self.evaluation_table or "  no evaluation results recorded for this model")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- inspection


def check_safetensors(path: str | os.PathLike) -> dict[str, list[int]]:
    """Tensor name -> shape of a safetensors file, after checking that its header parses and that the file holds
    exactly the bytes the header describes (a truncated or padded file fails, naming the difference)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ExportError(f"{path} is not a safetensors file: it has only {size} bytes (truncated or empty).")
        header_size = int.from_bytes(prefix, "little")
        if header_size > min(size - 8, _MAX_HEADER_BYTES):
            raise ExportError(
                f"{path} is not a valid safetensors file: its header claims {header_size} bytes but the file has "
                f"{size} (truncated, or not safetensors)."
            )
        try:
            header = json.loads(file.read(header_size))
            header.pop("__metadata__", None)
            end = max((int(info["data_offsets"][1]) for info in header.values()), default=0)
            shapes = {name: list(info["shape"]) for name, info in header.items()}
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
            raise ExportError(f"{path} has a corrupted safetensors header ({type(error).__name__}: {error}).") from error
    held = size - 8 - header_size
    if held != end:
        problem = "truncated" if held < end else "corrupted (extra bytes after the tensors)"
        raise ExportError(f"{path} is {problem}: its header describes {end} bytes of tensors, the file holds {held}.")
    return shapes


def inspect_source(path: str | os.PathLike) -> SourceFolder:
    """Recognise a checkpoint, adapter or CLSGen model folder and check its weights, without loading them.

    Raises `ExportError` naming what is wrong for a missing path, a foreign model (e.g. GPT-2), a folder without
    weights or with pickled weights only, a truncated or corrupted safetensors file, or weights without a trained
    `score` head.
    """
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path} does not exist.")
    if not path.is_dir():
        raise ExportError(f"{path} is a file; give the folder of a training checkpoint, an adapter or a CLSGen model.")
    pickled = [name for name in PICKLED_WEIGHTS if (path / name).exists()]
    if (path / ADAPTER_CONFIG_FILE).is_file():
        source = SourceFolder(path, "adapter", weights=_adapter_weights(path, pickled))
        if not any(name.endswith("score.weight") for name in source.weights):
            raise ExportError(
                f"The adapter in {path} holds no `score` head: it was not trained as a CLSGen adapter (CLSGenTrainer "
                "adds `score` to the LoRA config's `modules_to_save`)."
            )
    elif (path / CONFIG_FILE).is_file():
        source = SourceFolder(path, "model", weights=_model_weights(path, pickled))
        if "score.weight" not in source.weights:
            raise ExportError(
                f"{path} holds a Llama model without a `score` head (a plain causal LM, not a trained CLSGen model); "
                "train it with `clsgen-hf train` or `CLSGenTrainer` first."
            )
    else:
        present = sorted(p.name for p in path.iterdir())
        raise ExportError(
            f"{path} is not a CLSGen checkpoint, adapter or model folder: it has no {ADAPTER_CONFIG_FILE} and no "
            f"{CONFIG_FILE} (it holds: {', '.join(present[:12]) or 'nothing'}{' ...' if len(present) > 12 else ''})."
        )
    if _CHECKPOINT.fullmatch(path.name):
        source.run_dir = path.parent
        state = read_json(path / "trainer_state.json") or {}
        best = state.get("best_model_checkpoint")
        source.final = bool(state) and state.get("global_step", 0) >= state.get("max_steps", math.inf) and (
            best is None or Path(best).name == path.name
        )
    return source


def _adapter_weights(path: Path, pickled: list[str]) -> dict[str, list[int]]:
    weights = path / ADAPTER_WEIGHTS_FILE
    if not weights.is_file():
        if pickled:
            raise ExportError(f"The adapter in {path} has pickled weights only ({', '.join(pickled)}), which export "
                              f"does not load; re-save it with `save_pretrained` (safetensors).")
        raise ExportError(f"{path} has {ADAPTER_CONFIG_FILE} but no adapter weights ({ADAPTER_WEIGHTS_FILE}).")
    return check_safetensors(weights)


def _model_weights(path: Path, pickled: list[str]) -> dict[str, list[int]]:
    config = read_json(path / CONFIG_FILE)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in CLSGEN_MODEL_TYPES:
        architectures = ", ".join(config.get("architectures") or []) if isinstance(config, dict) else ""
        raise ExportError(
            f"{path} holds a `{model_type}` model{f' ({architectures})' if architectures else ''}, not a CLSGen "
            f"model: CLSGen models are Llama models with a `score` head (model_type `llama_clsgen`)."
        )
    if (path / WEIGHTS_INDEX_FILE).is_file():
        index = read_json(path / WEIGHTS_INDEX_FILE)
        shards = sorted(set((index or {}).get("weight_map", {}).values()))
        missing = [shard for shard in shards if not (path / shard).is_file()]
        if not shards or missing:
            raise ExportError(f"{path / WEIGHTS_INDEX_FILE} names weight files that are missing: {missing or 'none listed'}.")
        files = [path / shard for shard in shards]
    elif (path / WEIGHTS_FILE).is_file():
        files = [path / WEIGHTS_FILE]
    elif pickled:
        raise ExportError(f"{path} has pickled weights only ({', '.join(pickled)}), which export does not load; "
                          "re-save the model with `save_pretrained` (safetensors).")
    else:
        raise ExportError(f"{path} has a {CONFIG_FILE} but no weights ({WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE}).")
    weights = {}
    for file in files:
        weights.update(check_safetensors(file))
    return weights


# ---------------------------------------------------------------------------------------------------- export


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

    Returns:
        An `ExportReport`; its `str` is the summary `clsgen-hf export` prints.
    """
    src = inspect_source(source)
    out = Path(out_dir)
    if src.kind == "model" and not merge:
        raise ExportError(f"{src.path} holds a full model, not an adapter: export it merged (drop --no-merge).")
    _check_out_dir(out, src.path, overwrite)
    facts = _recorded(src, TRAINING_FILE) or {}
    results = _results(src, results)
    prompt_template, template = _prompt_template(src)

    model, tokenizer, base_source = _load_source(src, base_model, template)
    prompts = _validation_prompts(template)
    reference = _cls_logits(model, tokenizer, prompts) if validate else None
    base = hub_base_model(facts.get("base_model") or base_source) or facts.get("base_model") or base_source
    card = dict(
        training_args=facts.get("training_args"), synthesis=facts.get("synthesis") or _recorded(src, SYNTHESIS_FILE),
        peft_config=read_json(src.path / ADAPTER_CONFIG_FILE) if src.kind == "adapter" else facts.get("lora"),
        results=results, prompt_template=prompt_template, repo_id=repo_id or str(out), base_model=base,
        dataset_name=dataset_name or facts.get("dataset_name"), datasets=list(datasets or []),
    )

    with _staged(out) as staging:
        if merge:
            _save_merged(model, tokenizer, staging)
        else:
            _save_adapter(model, tokenizer, staging, str(base))
        tokenizer.save_pretrained(staging)
        for name, data in ((PROMPT_TEMPLATE_FILE, prompt_template), (RESULTS_FILE, results), (TRAINING_FILE, facts)):
            if data:
                write_json(staging / name, data)
        _write_card(staging, form="merged" if merge else "adapter", **card)

    report = ExportReport(
        out_dir=out, form="merged" if merge else "adapter", source=src.path, base_model=base and str(base),
        files=sorted(p.name for p in staging.iterdir()), evaluation_table=evaluation_table(results),
    )
    if validate:
        try:
            _validate(report, staging, prompts, reference, base_source, atol, card["repo_id"])
        except ExportError as error:
            raise ExportError(f"{error}\nThe unvalidated export was left in {staging} for inspection.") from error
    _install(staging, out, src.path, overwrite)
    return report


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A new folder next to `out`, ours alone, to write the export into; deleted if the writing fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _install(staging: Path, out: Path, source: Path, overwrite: bool) -> None:
    """`staging` (written, validated) becomes `out`, after checking `out` again: it may have changed meanwhile."""
    try:
        _check_out_dir(out, source, overwrite)
    except ExportError as error:
        raise ExportError(f"{error}\nThe export was left in {staging}.") from None
    _move_into_place(staging, out)


def _write_card(folder: Path, *, form: str, peft_config, repo_id: str, base_model, **facts) -> None:
    CLSGenCardData(
        LlamaCLSGenConfig.from_pretrained(folder), peft_config=lora_summary(peft_config), form=form, repo_id=repo_id,
        model_name=repo_id.rstrip("/").split("/")[-1], base_model=base_model and str(base_model),
        adapter_base=base_model and str(base_model), **facts,
    ).to_model_card().save(folder / "README.md")


def _check_out_dir(out: Path, source: Path, overwrite: bool) -> None:
    """Refuse an output folder whose replacement could delete what the export did not write: the source, a folder
    around or inside it (symbolic links resolved, whatever `overwrite` says), a file, a link, a non-empty folder
    without `overwrite`, and with it any folder holding more than an earlier export wrote."""
    target, src = out.resolve(), source.resolve()
    if target == src:
        raise ExportError(f"{out} is the source folder {source}: write the export to another folder.")
    if src in target.parents:
        raise ExportError(f"{out} lies inside the source folder {source}: write the export outside it.")
    if target in src.parents:
        raise ExportError(f"{out} contains the source folder {source}: replacing it would delete the source; write "
                          "the export to a folder outside it (--overwrite does not change this).")
    if out.is_symlink():
        raise ExportError(f"{out} is a symbolic link: give the folder itself.")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise ExportError(f"{out} is a file: choose a folder.")
    if not overwrite:
        raise ExportError(f"{out} exists and is not empty; choose another folder or pass --overwrite.")
    what = _not_an_export(out)
    if what:
        raise ExportError(f"--overwrite replaces only a folder written by an export, and {out} {what}: move what you "
                          "want to keep, or choose another folder.")


def _not_an_export(folder: Path, model_type: str = "llama_clsgen") -> str | None:
    """What in `folder` an export did not write (`None`: nothing): a merged or adapter export holds only exported
    names and a `model_type` config; a serving export holds `SERVING_FOLDERS`, each such a folder of a plain Llama."""
    entries = sorted(folder.iterdir())
    if model_type == "llama_clsgen" and [p.name for p in entries] == sorted(SERVING_FOLDERS) and all(
        p.is_dir() and not p.is_symlink() for p in entries
    ):
        return next((f"has {p.name}/, which {why}" for p in entries if (why := _not_an_export(p, "llama"))), None)
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in entries
                     if p.is_symlink() or not p.is_file() or not _EXPORTED_NAMES.fullmatch(p.name))
    if foreign:
        return f"holds {', '.join(foreign[:8])}{' ...' if len(foreign) > 8 else ''}"
    try:
        config = read_json(folder / CONFIG_FILE)
    except ValueError:  # not JSON: not an export either
        config = None
    if not isinstance(config, dict) or config.get("model_type") != model_type:
        return f"has no {'CLSGen' if model_type == 'llama_clsgen' else 'Llama'} {CONFIG_FILE}"
    return None


def _move_into_place(staging: Path, out: Path) -> None:
    """`staging` becomes `out`; a previous `out` (empty, or checked by `_check_out_dir`) is deleted only after."""
    if not out.exists():
        staging.rename(out)
    elif not any(out.iterdir()):
        out.rmdir()
        staging.rename(out)
    else:
        old = Path(tempfile.mkdtemp(prefix=f"{out.name}.", suffix=".old", dir=out.parent))
        out.rename(old / out.name)
        staging.rename(out)
        shutil.rmtree(old)


def _load_source(src: SourceFolder, base_model, template):
    """(model, tokenizer, base source): the CLSGen model of a model folder, or the base + adapter (a PeftModel)."""
    from peft import PeftModel

    from .loading import load_model, load_tokenizer

    if src.kind == "model":
        model = load_model(src.path, use_safetensors=True).eval()
        return model, _tokenizer(src, None, load_tokenizer), None
    adapter_config = read_json(src.path / ADAPTER_CONFIG_FILE) or {}
    base_source = _resolve_base(base_model or adapter_config.get("base_model_name_or_path"), src.path)
    overrides = _label_overrides(src, template)
    try:
        base = load_model(base_source, **overrides)
    except (OSError, ValueError) as error:
        raise ExportError(f"Could not load the base model {str(base_source)!r} of {src.path}: {error}\n"
                          "Pass its folder, Hub id or .gguf file with --base_model.") from error
    if base.config.num_labels != src.num_labels:
        raise ExportError(f"The adapter's `score` head has {src.num_labels} classes but the base config gives "
                          f"{base.config.num_labels} ({base.config.id2label}).")
    model = PeftModel.from_pretrained(base, src.path).eval()
    return model, _tokenizer(src, base_source, load_tokenizer), base_source


def _resolve_base(base: str | os.PathLike | None, adapter_dir: Path) -> str:
    if not base:
        raise ExportError(f"{adapter_dir / ADAPTER_CONFIG_FILE} names no base model (`base_model_name_or_path`); "
                          "pass it with --base_model.")
    path = Path(base)
    if path.is_dir() and not (path / CONFIG_FILE).is_file():  # a model loaded from a GGUF file records its folder
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise ExportError(f"The base model folder {path} has no {CONFIG_FILE} and {len(ggufs)} .gguf files; "
                              "pass the base model with --base_model.")
        return str(ggufs[0])
    if path.is_absolute() and not path.exists():
        raise ExportError(f"The base model {path} (from {adapter_dir / ADAPTER_CONFIG_FILE}) is not on this machine; "
                          "pass it with --base_model.")
    return str(base)


def _label_overrides(src: SourceFolder, template) -> dict[str, Any]:
    """Labels and threshold of the trained model, which an adapter does not save: from a CLSGen config.json next to
    it (an adapter export, the run's merged save), else from the prompt template's verbalizers."""
    for folder in (src.path, src.run_dir):
        config = read_json(folder / CONFIG_FILE) if folder is not None else None
        if isinstance(config, dict) and config.get("model_type") == "llama_clsgen" and config.get("id2label"):
            id2label = {int(k): v for k, v in config["id2label"].items()}
            return {"id2label": id2label, "cls_threshold": config.get("cls_threshold", 0.5)}
    if template is not None:
        return {"id2label": dict(template.verdict_format.verbalizers)}
    return {"num_labels": src.num_labels}


def _tokenizer(src: SourceFolder, base_source, load_tokenizer):
    for folder in (src.path, src.run_dir):
        if folder is not None and any((folder / name).is_file() for name in TOKENIZER_FILES):
            return load_tokenizer(folder)
    if base_source is None:
        raise ExportError(f"{src.path} holds no tokenizer files ({', '.join(TOKENIZER_FILES)}).")
    return load_tokenizer(base_source)


def _save_merged(model, tokenizer, folder: Path) -> None:
    from peft import PeftModel

    merged = model.merge_and_unload() if isinstance(model, PeftModel) else model
    _set_generation_tokens(merged, tokenizer)
    merged.save_pretrained(folder)
    config = read_json(folder / CONFIG_FILE)
    missing = [name for name in AUTO_CLASSES if name not in (config.get("auto_map") or {})]
    if missing:
        raise ExportError(f"The saved config.json lacks `auto_map` entries for {missing}.")
    copy_code(folder)


def _save_adapter(model, tokenizer, folder: Path, base_model: str) -> None:
    adapter = model.active_adapter
    model.peft_config[adapter].base_model_name_or_path = base_model
    model.save_pretrained(folder)
    base = model.get_base_model()
    _set_generation_tokens(base, tokenizer)
    base.config.save_pretrained(folder)
    base.generation_config.save_pretrained(folder)
    copy_code(folder)


def _set_generation_tokens(model, tokenizer) -> None:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id


def _prompt_template(src: SourceFolder):
    """(the recorded `clsgen_prompt.json` data, its `PromptTemplate`), or `(None, None)`."""
    data = _recorded(src, PROMPT_TEMPLATE_FILE)
    if not data:
        return None, None
    from .data.templates import PromptTemplate

    return data, PromptTemplate.from_dict(data)


def _recorded(src: SourceFolder, name: str) -> Any:
    """A JSON file the run wrote next to the weights (or into its output folder), or `None`."""
    path = src.find(name)
    return read_json(path) if path is not None else None


def _results(src: SourceFolder, results) -> dict | None:
    if isinstance(results, dict):
        return results
    if results is not None:
        data = read_json(results)
        if not isinstance(data, dict):
            raise ExportError(f"{results} holds no evaluation results (a JSON object is expected).")
        return data
    if (src.path / RESULTS_FILE).is_file():
        return read_json(src.path / RESULTS_FILE)
    if src.run_dir is not None and (src.run_dir / RESULTS_FILE).is_file():
        if src.final:
            return read_json(src.run_dir / RESULTS_FILE)
        logger.warning("%s describes the run's final model, not %s: the card gets no evaluation numbers (pass "
                       "--results to give some).", src.run_dir / RESULTS_FILE, src.path.name)
    return None


# ---------------------------------------------------------------------------------------------------- validation


def _validation_prompts(template) -> list[list[dict[str, str]]]:
    if template is not None:
        return [template.to_messages({name: text for name in template.fields}) for text in VALIDATION_TEXTS]
    system = "You are a careful expert. Read the text, reason briefly, then give your verdict."
    return [[{"role": "system", "content": system}, {"role": "user", "content": f"{text}\n\nClassify the text above."}]
            for text in VALIDATION_TEXTS]


def _encode(tokenizer, messages) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])


@torch.no_grad()
def _cls_logits(model, tokenizer, prompts) -> list[tuple[list[int], list[float]]]:
    rows = []
    for messages in prompts:
        ids = _encode(tokenizer, messages)
        rows.append((ids, model(input_ids=torch.tensor([ids], device=model.device)).cls_logits[0].tolist()))
    return rows


def _compare(reference, exported, atol: float) -> float:
    worst = 0.0
    for i, ((ref_ids, ref_logits), (ids, logits)) in enumerate(zip(reference, exported)):
        if ids != ref_ids:
            raise ExportError(f"The exported tokenizer encodes validation prompt {i} differently from the source's.")
        worst = max(worst, max(abs(a - b) for a, b in zip(ref_logits, logits)))
    if not worst <= atol:
        raise ExportError(f"The exported model's cls_logits differ from the source's by up to {worst:.2e} "
                          f"(tolerance {atol:.0e}).")
    return worst


def _validate(report: ExportReport, folder: Path, prompts, reference, base_source, atol: float, repo_id: str) -> None:
    if report.form == "merged":
        exported = _reload_without_clsgen_hf(folder, prompts, repo_id)
        rows = [(row["input_ids"], row["cls_logits"]) for row in exported["rows"]]
        report.loaded_class = exported["loaded_class"]
        report.explanation = exported["rows"][0]["explanation"]
        report.snippet_output = exported["snippet_output"]
    else:
        rows, report.loaded_class = _reload_with_peft(folder, prompts, base_source)
    report.max_abs_diff = _compare(reference, rows, atol)
    report.n_prompts = len(prompts)
    report.validated = True


def _reload_with_peft(folder: Path, prompts, base_source):
    from peft import PeftModel
    from transformers import AutoTokenizer

    from .loading import load_model

    config = LlamaCLSGenConfig.from_pretrained(folder)
    base = load_model(base_source, id2label=config.id2label, cls_threshold=config.cls_threshold)
    model = PeftModel.from_pretrained(base, folder).eval()
    rows = _cls_logits(model, AutoTokenizer.from_pretrained(folder), prompts)
    return rows, f"{type(model).__name__}({type(base).__name__})"


# Runs in a fresh interpreter, where `import clsgen_hf` fails: loads the folder as a user without the package would.
_RELOAD_SCRIPT = r'''
import contextlib, io, json, re, sys

class BlockClsgenHf:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "clsgen_hf":
            raise ImportError("clsgen_hf is blocked in this process")

sys.meta_path.insert(0, BlockClsgenHf())
import torch
from transformers import AutoModel, AutoTokenizer

spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
tokenizer = AutoTokenizer.from_pretrained(spec["folder"], trust_remote_code=True)
model = AutoModel.from_pretrained(spec["folder"], trust_remote_code=True).eval()
cls = type(model)
assert not cls.__module__.startswith("clsgen_hf"), cls.__module__
rows = []
for messages in spec["prompts"]:
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.classify_and_generate(**inputs, max_new_tokens=spec["max_new_tokens"], do_sample=False)
    new_tokens = out.sequences[0, inputs["input_ids"].shape[1]:]
    rows.append({"input_ids": inputs["input_ids"][0].tolist(), "cls_logits": out.cls_logits[0].tolist(),
                 "explanation": tokenizer.decode(new_tokens, skip_special_tokens=True)})

readme = open(spec["readme"], encoding="utf-8").read()
snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
snippet = snippet.replace("repo = " + spec["repo_id_py"], "repo = " + json.dumps(spec["folder"]), 1)
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    exec(compile(snippet, "README.md snippet", "exec"), {"__name__": "__snippet__"})
result = {"rows": rows, "loaded_class": f"{cls.__module__}.{cls.__name__}", "snippet_output": printed.getvalue()}
open(spec["result"], "w", encoding="utf-8").write(json.dumps(result))
'''


def _reload_without_clsgen_hf(folder: Path, prompts, repo_id: str, max_new_tokens: int = 8) -> dict:
    with tempfile.TemporaryDirectory(prefix="clsgen-export-") as scratch:
        spec = {"folder": str(folder.resolve()), "prompts": prompts, "max_new_tokens": max_new_tokens,
                "readme": str(folder / "README.md"), "repo_id_py": json.dumps(repo_id),
                "result": str(Path(scratch) / "result.json")}
        spec_file = Path(scratch) / "spec.json"
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(Path(scratch) / "modules"),
                   TRANSFORMERS_VERBOSITY="error")
        done = subprocess.run([sys.executable, "-c", _RELOAD_SCRIPT, str(spec_file)], cwd=scratch, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            raise ExportError(f"Loading {folder} with transformers alone (trust_remote_code, no clsgen_hf) failed:\n"
                              f"{done.stderr[-3000:]}")
        return json.loads(Path(spec["result"]).read_text(encoding="utf-8"))


__all__ = ["ExportError", "ExportReport", "SourceFolder", "check_safetensors", "export_model", "inspect_source"]
