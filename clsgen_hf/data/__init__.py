"""Datasets in, label-conditioned explanations out.

- `load_classification_dataset` / `load_clinifact`: rows -> classifier prompts (`PromptTemplate`) + integer labels.
- `synthesize_explanations`: a teacher (`make_teacher`) explains each gold label; kept when its verdict matches.

Importing this package loads `datasets`, not a model: the teachers import torch, a model class or an HTTP client
only when one is made, so that a command's `--help` and option errors load no model code.
"""

from ..prompt_template import PromptTemplate, count_prompt_tokens, default_prompt_template
from .cache import AnswerCache
from .classification import fit_prompts, load_classification_dataset, parse_label2id, read_rows
from .clinifact import (
    CLINIFACT_BINARY_TEMPLATE,
    CLINIFACT_MULTICLASS_TEMPLATE,
    CLINIFACT_RATIONALE_COLUMN,
    load_clinifact,
    registry_rationale,
)
from .explanations import DEFAULT_DECISION_SHARE, training_explanations, with_decision_cues
from .stats import describe_dataset
from .synthesis import (
    DEFAULT_TEACHER_INSTRUCTION,
    SynthesisReport,
    accept_answer,
    follow_up_messages,
    synthesize_explanations,
    teacher_messages,
)
from .teachers import OpenAITeacher, Teacher, TeacherError, TransformersTeacher, VLLMTeacher, make_teacher


__all__ = [
    "PromptTemplate", "count_prompt_tokens", "default_prompt_template", "AnswerCache", "fit_prompts",
    "load_classification_dataset", "parse_label2id", "read_rows", "CLINIFACT_BINARY_TEMPLATE",
    "CLINIFACT_MULTICLASS_TEMPLATE", "CLINIFACT_RATIONALE_COLUMN", "load_clinifact", "registry_rationale",
    "DEFAULT_DECISION_SHARE", "training_explanations", "with_decision_cues", "describe_dataset",
    "DEFAULT_TEACHER_INSTRUCTION", "SynthesisReport", "accept_answer", "follow_up_messages", "synthesize_explanations",
    "teacher_messages", "OpenAITeacher", "Teacher", "TeacherError", "TransformersTeacher", "VLLMTeacher",
    "make_teacher",
]
