"""Recognising a training checkpoint, adapter or CLSGen model folder from its files before any weight of it loads
(`inspect_model_folder`), and loading one whole (`load_model_folder`): the model (an adapter on its base model), its
tokenizer, prompt template and decision rule."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from peft import PeftModel
from safetensors import SafetensorError, safe_open

from .calibration import restore_rule
from .configuration_clsgen import LlamaCLSGenConfig
from .errors import UsageError
from .json_files import read_json
from .loading import load_model, load_tokenizer, resolve_adapter_base
from .prompt_template import PromptTemplate


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

    @property
    def tokenizer_dir(self) -> Path | None:
        """Where the tokenizer was saved: the folder, else the run's output folder (`None`: the base model's)."""
        return self.find("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def inspect_model_folder(path: str | os.PathLike) -> ModelFolder:
    """Recognise a checkpoint, adapter or CLSGen model folder from its files and safetensors headers (no weights are
    loaded); any other folder raises a `UsageError` saying what is wrong with it."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path} {'is a file' if path.exists() else 'does not exist'}: give the folder of a training "
                         "checkpoint, an adapter or a CLSGen model.")
    run_dir, final = None, True  # a checkpoint-N folder: its run's folder, and whether it holds the final weights
    if re.fullmatch(r"checkpoint-\d+", path.name):
        state = read_json(path / "trainer_state.json") or {}
        best = state.get("best_model_checkpoint")
        run_dir = path.parent
        final = bool(state) and state.get("global_step", 0) >= state.get("max_steps", math.inf) and (
            best is None or Path(best).name == path.name)
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
    return ModelFolder(path, kind, heads[0], run_dir, final)


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
        base = resolve_adapter_base(folder.path, base_model)
        labels = {"id2label": dict(template.verdict_format.verbalizers)} if template else {
            "num_labels": folder.num_labels}
        try:
            model = PeftModel.from_pretrained(load_model(base, **labels), folder.path).eval()
        except (OSError, ValueError, RuntimeError) as error:
            raise UsageError(f"Could not load the adapter {folder.path} on the base model {base!r}: {error}\n"
                             "Pass its folder, Hub id or .gguf file as base_model.") from None
        tokenizer = load_tokenizer(folder.tokenizer_dir or base)
        # The rule beside the adapter; a checkpoint of an earlier version has none: its run's, if it holds the final
        restore_rule(model, folder.path, folder.run_dir if folder.final else None)
    generation = (model.get_base_model() if base else model).generation_config
    generation.pad_token_id, generation.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    return model, tokenizer, template, base
