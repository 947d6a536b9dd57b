"""CLSGen: one fine-tuned LLM that gives a calibrated class probability and a readable explanation of it. Importing
the package registers `LlamaCLSGenConfig`/`LlamaForCLSGen` with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .batch_prediction import predict_file
from .calibration import Calibration, fit_calibration
from .clsgen_config import CLSGenConfig
from .clsgen_trainer import CLSGenTrainer, DataCollatorForCLSGen
from .configuration_clsgen import LlamaCLSGenConfig
from .export import export_model
from .evaluation import evaluate_predictions, fit_decision_rule
from .inference import CLSGenPipeline, predict, tune_and_store_threshold
from .loading import default_model_path, load_model, load_model_and_tokenizer, load_tokenizer, prepare_tokenizer
from .modeling_clsgen import CLSGenGenerateOutput, CLSGenOutput, LlamaForCLSGen
from .metrics import alignment_report, classification_report, tune_threshold
from .model_card import CLSGenCardData, build_model_card
from .verdicts import NO_VERDICT, VerdictFormat, read_verdict


AutoConfig.register(LlamaCLSGenConfig.model_type, LlamaCLSGenConfig)
AutoModel.register(LlamaCLSGenConfig, LlamaForCLSGen)
AutoModelForCausalLM.register(LlamaCLSGenConfig, LlamaForCLSGen)
# Saving copies the configuration/modeling files next to the weights (`trust_remote_code=True` loading).
LlamaCLSGenConfig.register_for_auto_class("AutoConfig")
LlamaForCLSGen.register_for_auto_class("AutoModelForCausalLM")

__version__ = "0.2.0"

__all__ = [
    "LlamaCLSGenConfig", "CLSGenConfig", "CLSGenTrainer", "DataCollatorForCLSGen", "LlamaForCLSGen", "CLSGenOutput",
    "CLSGenGenerateOutput", "predict", "predict_file", "tune_and_store_threshold", "Calibration", "fit_calibration",
    "fit_decision_rule", "evaluate_predictions", "CLSGenPipeline", "classification_report", "alignment_report",
    "tune_threshold", "VerdictFormat", "read_verdict", "NO_VERDICT", "default_model_path", "load_model",
    "load_tokenizer", "load_model_and_tokenizer", "prepare_tokenizer", "export_model", "CLSGenCardData",
    "build_model_card",
]
