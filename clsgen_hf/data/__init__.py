"""Datasets in, label-conditioned explanations out.

- `load_classification_dataset` / `load_clinifact`: rows -> classifier prompts (`PromptTemplate`) + integer labels.
- `synthesize_explanations`: a teacher (`make_teacher`) explains each gold label; kept when its verdict matches.

Each name imports its module when it is first used (as `clsgen_hf` does), so that a command's `--help` and option
errors need not load `datasets` or a teacher's model code.
"""

import importlib
from typing import TYPE_CHECKING


# Module (relative to this package) -> the public names it defines.
_import_structure = {
    "..prompt_template": ["PromptTemplate", "count_prompt_tokens", "default_prompt_template"],
    ".cache": ["AnswerCache"],
    ".classification": ["fit_prompts", "load_classification_dataset", "parse_label2id", "read_rows"],
    ".clinifact": [
        "CLINIFACT_BINARY_TEMPLATE", "CLINIFACT_MULTICLASS_TEMPLATE", "CLINIFACT_RATIONALE_COLUMN", "load_clinifact",
        "registry_rationale",
    ],
    ".explanations": ["DEFAULT_DECISION_SHARE", "training_explanations", "with_decision_cues"],
    ".stats": ["describe_dataset"],
    ".synthesis": [
        "DEFAULT_TEACHER_INSTRUCTION", "SynthesisReport", "accept_answer", "follow_up_messages",
        "synthesize_explanations", "teacher_messages",
    ],
    ".teachers": ["OpenAITeacher", "Teacher", "TeacherError", "TransformersTeacher", "VLLMTeacher", "make_teacher"],
}
_module_of = {name: module for module, names in _import_structure.items() for name in names}

__all__ = [name for names in _import_structure.values() for name in names]

if TYPE_CHECKING:
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


def __getattr__(name: str):
    if name not in _module_of:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_module_of[name], __name__), name)
    globals()[name] = value  # the next lookup skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
