"""Datasets in, label-conditioned explanations out.

- `load_classification_dataset` / `load_clinifact`: rows -> classifier prompts (`PromptTemplate`) + integer labels.
"""

from .classification import load_classification_dataset
from .clinifact import CLINIFACT_BINARY_TEMPLATE, CLINIFACT_MULTICLASS_TEMPLATE, load_clinifact
from .stats import describe_dataset
from .templates import PromptTemplate, default_prompt_template
from .truncation import count_prompt_tokens, fit_prompt


__all__ = [
    "load_classification_dataset",
    "load_clinifact",
    "CLINIFACT_BINARY_TEMPLATE",
    "CLINIFACT_MULTICLASS_TEMPLATE",
    "describe_dataset",
    "PromptTemplate",
    "default_prompt_template",
    "count_prompt_tokens",
    "fit_prompt",
]
