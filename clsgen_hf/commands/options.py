"""Command-line options shared by several `clsgen-hf` commands, as dataclasses for `TrlParser` (so each option is
spelled once, with underscores, and every command also reads them from `--config file.yaml`), and `parse_options`,
which every command parses with: a bad config file or an option out of its range is a `UsageError`, before any
model loads. The library below the commands takes these values as keyword arguments."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, NoReturn

import yaml
from trl import TrlParser

from ..errors import UsageError
from ..prompt_template import PromptTemplate, build_prompt_template
from ..verdicts import DEFAULT_VERDICT_PREFIX


class CommandParser(TrlParser):
    """The `TrlParser` of a command whose argparse mistakes (an unknown option, a value of the wrong type, a missing
    argument) are one-line `UsageError`s, as every other mistake, instead of argparse's usage block (hundreds of lines
    for `train`, whose options include all of `TrainingArguments`)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message.replace('{', '{{').replace('}', '}}')} (options: {self.prog} --help)")


@dataclass
class PromptArguments:
    """How the rows of your own file become the classifier's prompt (a CliniFact run has its own template)."""

    text_fields: list[str] | None = field(default=None, metadata={"help": "The column(s) holding the text."})
    label_field: str = field(default="label", metadata={"help": "The column holding the label."})
    label2id: str | None = field(default=None, metadata={"help": "Raw label -> id, as JSON ('{\"neg\": 0, \"pos\": "
                                 "1}'), a JSON list of the raw labels in id order, or neg=0,pos=1. Without it labels "
                                 "must be ids 0..N-1."})
    verbalizers: list[str] | None = field(default=None, metadata={"help": "The verdict word of each label id, in id "
                                          "order (e.g. --verbalizers No Yes). Default: the --label2id names, else "
                                          "No Yes."})
    question: str | None = field(default=None, metadata={"help": "The task question asked after the text."})
    system_prompt: str | None = field(default=None, metadata={"help": "The system message of every prompt."})
    verdict_prefix: str = field(default=DEFAULT_VERDICT_PREFIX, metadata={"help": "What introduces the verdict line."})
    prompt_template: str | None = field(default=None, metadata={"help": "A prompt template JSON file, or a model "
                                        "folder holding one (clsgen_prompt.json), instead of the options above."})
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "Longer prompts lose the middle of their "
                                          "longest text field."})
    allow_empty_text: bool = field(default=False, metadata={"help": "Skip rows with empty text instead of failing."})

    def __post_init__(self):
        from ..data.classification import parse_label2id  # parsed once, as the options are

        self.label_ids = parse_label2id(self.label2id) if self.label2id else None

    def build_template(self, default: PromptTemplate | None = None) -> PromptTemplate:
        """The template these options describe: `--prompt_template`, else `default` (a dataset's own template) with
        the options given, else a generic template over `--text_fields` (see `build_prompt_template`)."""
        return build_prompt_template(
            self.prompt_template or default, text_fields=self.text_fields, label2id=self.label_ids,
            verbalizers=self.verbalizers, verdict_prefix=self.verdict_prefix, question=self.question,
            system=self.system_prompt, max_prompt_tokens=self.max_prompt_tokens,
        )


@dataclass
class TeacherArguments:
    """Who writes the label-conditioned explanations, and how it is asked."""

    teacher: str | None = field(default=None, metadata={"help": "'self' (the model being trained), "
                                "'transformers[:<model id, folder or .gguf>]', 'openai:<url>' (an OpenAI-compatible "
                                "server; API key from $OPENAI_API_KEY) or 'vllm:<model>'."})
    teacher_model: str | None = field(default=None, metadata={"help": "The served model name for openai:<url> "
                                      "(default: the server's first)."})
    teacher_max_new_tokens: int = field(default=128, metadata={"help": "Token budget of each teacher answer."})
    teacher_retries: int = field(default=2, metadata={"help": "Sampled re-asks for rows whose explanation did not "
                                 "state the gold verdict."})
    teacher_batch_size: int = field(default=8, metadata={"help": "Rows per generation batch (and cache flush) of a "
                                    "local teacher."})
    teacher_concurrency: int = field(default=4, metadata={"help": "Requests in flight at once to an openai:<url> "
                                     "teacher (one row each, each answer cached as it returns)."})
    teacher_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the re-asks."})
    teacher_timeout: float = field(default=300.0, metadata={"help": "Seconds an openai:<url> teacher has to send a "
                                   "whole answer (each try); a slower one is retried, then fails the run."})
    teacher_instruction: str | None = field(default=None, metadata={"help": "The teacher's user message, with {text} "
                                            "(the row's prompt), {answer} (the gold word) and {verdict_line}; "
                                            "default: clsgen_hf.data.DEFAULT_TEACHER_INSTRUCTION."})
    retry_rejected: bool = field(default=False, metadata={"help": "Ask again for the rows whose cached answers were "
                                 "not kept (e.g. once the teacher is fixed)."})

    def __post_init__(self):
        if self.teacher and self.teacher.partition(":")[0] not in ("self", "transformers", "openai", "vllm"):
            raise UsageError(f"--teacher {self.teacher!r}: use 'self', 'transformers[:<model>]', 'openai:<url>' or "
                             "'vllm:<model>'.")

    def make_teacher(self, model=None, tokenizer=None):
        """The teacher these options name; 'self' (the default) asks `model`, the model about to be trained."""
        from ..data.teachers import make_teacher

        if self.teacher and self.teacher.startswith("openai:"):
            return make_teacher(self.teacher, model=self.teacher_model, api_key=os.environ.get("OPENAI_API_KEY"),
                                concurrency=self.teacher_concurrency, timeout=self.teacher_timeout)
        if self.teacher in (None, "self"):
            return make_teacher("self", model=model, tokenizer=tokenizer)
        return make_teacher(self.teacher)

    def synthesis_kwargs(self) -> dict:
        """These options as `synthesize_explanations` keyword arguments."""
        kwargs = dict(max_retries=self.teacher_retries, batch_size=self.teacher_batch_size,
                      max_new_tokens=self.teacher_max_new_tokens, temperature=self.teacher_temperature,
                      retry_rejected=self.retry_rejected)
        if self.teacher_instruction:  # a literal "\n" typed in a shell means a newline
            kwargs["teacher_instruction"] = self.teacher_instruction.replace("\\n", "\n")
        return kwargs


_AT_LEAST_1 = (lambda value: value >= 1, "at least 1")
_AT_LEAST_0 = (lambda value: value >= 0, "at least 0")
_POSITIVE = (lambda value: value > 0, "above 0")
_FRACTION = (lambda value: 0 < value < 1, "between 0 and 1 (exclusive)")
# The range of every numeric option any command has, by name (`None`, where allowed, means "all" or "default").
OPTION_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(("batch_size", "predict_batch_size", "teacher_batch_size", "teacher_concurrency",
                     "teacher_max_new_tokens", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "max_train_samples", "max_validation_samples", "max_eval_samples",
                     "max_rows", "max_prompt_tokens", "max_length", "lora_r"), _AT_LEAST_1),
    **dict.fromkeys(("max_new_tokens", "teacher_retries", "teacher_temperature", "min_words", "atol",
                     "learning_rate", "num_train_epochs"), _AT_LEAST_0),
    **dict.fromkeys(("teacher_timeout",), _POSITIVE),
    **dict.fromkeys(("threshold", "validation_fraction"), _FRACTION),
}


def check_option_ranges(*options: Any) -> None:
    """Refuse, naming the flag, the first option of the `options` dataclasses outside its `OPTION_RANGES` range."""
    for dataclass_ in options:
        for option in fields(dataclass_) if is_dataclass(dataclass_) else ():
            value, allowed = getattr(dataclass_, option.name, None), OPTION_RANGES.get(option.name)
            if allowed is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not allowed[0](value):
                raise UsageError(f"--{option.name} must be {allowed[1]}, got {value}.")


def read_config(path: str, parser: TrlParser) -> dict:
    """The options of a `--config` YAML file, checked: a mapping, every key an option of `parser`."""
    try:
        with open(path, encoding="utf-8") as file:
            config = yaml.safe_load(file)
    except OSError as error:
        raise UsageError(f"--config {path}: {error.strerror or error}.") from None
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())
        raise UsageError(f"--config {path} is not a YAML file ({reason[:200]}).") from None
    if not isinstance(config, dict):
        raise UsageError(f"--config {path} must hold a YAML mapping (option: value lines), not a "
                         f"{type(config).__name__}.")
    known = {action.dest for action in parser._actions} | {"env"}
    unknown = [str(key) for key in config if key not in known]
    if unknown:
        raise UsageError(f"--config {path}: unknown option(s) {', '.join(unknown)}; `--help` lists the options.")
    return config


def parse_options(parser: TrlParser, argv: Sequence[str] | None = None) -> tuple:
    """`parser.parse_args_and_config(argv)`, with every mistake a one-line `UsageError`: an unreadable, non-mapping or
    unknown-key `--config` file, a combination a dataclass rejects, an option out of its range (`OPTION_RANGES`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 == len(argv):
            raise UsageError("--config needs the path of a YAML file.")
        read_config(argv[position + 1], parser)
    try:
        parsed = parser.parse_args_and_config(argv)
    except UsageError:
        raise
    except ValueError as error:  # e.g. TrainingArguments.__post_init__ refusing a combination
        raise UsageError(" ".join(str(error).split())) from None
    check_option_ranges(*parsed)
    return parsed


__all__ = ["OPTION_RANGES", "CommandParser", "PromptArguments", "TeacherArguments", "check_option_ranges",
           "parse_options", "read_config"]
