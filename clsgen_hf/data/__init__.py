"""Datasets in, label-conditioned explanations out.

- `load_classification_dataset` / `load_clinifact`: rows -> classifier prompts (`PromptTemplate`) + integer labels.
- `synthesize_explanations`: a teacher (`make_teacher`) explains each gold label; kept when its verdict matches.
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
    "AnswerCache", "load_classification_dataset", "fit_prompts", "parse_label2id", "read_rows", "load_clinifact",
    "CLINIFACT_BINARY_TEMPLATE", "CLINIFACT_MULTICLASS_TEMPLATE", "CLINIFACT_RATIONALE_COLUMN", "registry_rationale",
    "describe_dataset", "DEFAULT_TEACHER_INSTRUCTION", "SynthesisReport", "accept_answer", "follow_up_messages",
    "synthesize_explanations", "teacher_messages", "Teacher", "TeacherError", "TransformersTeacher", "OpenAITeacher",
    "VLLMTeacher", "make_teacher", "PromptTemplate", "default_prompt_template", "count_prompt_tokens",
    "training_explanations", "with_decision_cues", "DEFAULT_DECISION_SHARE",
]
