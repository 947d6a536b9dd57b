"""CLSGen: one fine-tuned LLM that gives a calibrated class probability and a readable explanation of it.

Importing the package is cheap (the `clsgen-hf` command starts from it): each public name imports its module when it
is first used, as transformers' `_LazyModule` does. `LlamaCLSGenConfig`/`LlamaForCLSGen` are registered with
`AutoConfig`, `AutoModel` and `AutoModelForCausalLM` once transformers loads those (see `auto_registration`).
"""

import importlib
from typing import TYPE_CHECKING

from . import auto_registration


__version__ = "0.2.0"

# Module -> the public names it defines (transformers' `_import_structure` layout).
_import_structure = {
    "batch_prediction": ["predict_file"],
    "calibration": ["Calibration", "fit_calibration"],
    "clsgen_config": ["CLSGenConfig"],
    "clsgen_data": ["DataCollatorForCLSGen", "prepare_clsgen_dataset"],
    "clsgen_trainer": ["CLSGenTrainer"],
    "configuration_clsgen": ["LlamaCLSGenConfig"],
    "evaluation": ["evaluate_predictions", "fit_decision_rule"],
    "export": ["export_model"],
    "inference": ["CLSGenPipeline", "predict", "tune_and_store_threshold"],
    "loading": ["default_model_path", "load_model", "load_model_and_tokenizer", "load_tokenizer", "prepare_tokenizer"],
    "metrics": ["alignment_report", "classification_report", "tune_threshold"],
    "model_card": ["CLSGenCardData", "build_model_card"],
    "modeling_clsgen": ["CLSGenGenerateOutput", "CLSGenOutput", "LlamaForCLSGen"],
    "verdicts": ["NO_VERDICT", "VerdictFormat", "read_verdict"],
}
_module_of = {name: module for module, names in _import_structure.items() for name in names}

__all__ = [name for names in _import_structure.values() for name in names]

if TYPE_CHECKING:
    from .batch_prediction import predict_file
    from .calibration import Calibration, fit_calibration
    from .clsgen_config import CLSGenConfig
    from .clsgen_data import DataCollatorForCLSGen, prepare_clsgen_dataset
    from .clsgen_trainer import CLSGenTrainer
    from .configuration_clsgen import LlamaCLSGenConfig
    from .evaluation import evaluate_predictions, fit_decision_rule
    from .export import export_model
    from .inference import CLSGenPipeline, predict, tune_and_store_threshold
    from .loading import default_model_path, load_model, load_model_and_tokenizer, load_tokenizer, prepare_tokenizer
    from .metrics import alignment_report, classification_report, tune_threshold
    from .model_card import CLSGenCardData, build_model_card
    from .modeling_clsgen import CLSGenGenerateOutput, CLSGenOutput, LlamaForCLSGen
    from .verdicts import NO_VERDICT, VerdictFormat, read_verdict


def __getattr__(name: str):
    if name not in _module_of:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_module_of[name]}", __name__), name)
    globals()[name] = value  # the next lookup skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


auto_registration.install()
