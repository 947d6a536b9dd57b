"""Command-line options shared by several `clsgen-hf` commands, as dataclasses for `TrlParser` (so each option is
spelled once, with underscores, and every command also reads them from `--config file.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import UsageError
from .prompt_template import PromptTemplate, default_prompt_template
from .verdicts import DEFAULT_VERDICT_PREFIX, VerdictFormat


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

    def label_mapping(self) -> dict[str, int] | None:
        """`--label2id` parsed (see `clsgen_hf.data.parse_label2id`)."""
        from .data.classification import parse_label2id

        return parse_label2id(self.label2id) if self.label2id else None

    def build_template(self, default: PromptTemplate | None = None) -> PromptTemplate:
        """The template these options describe: `--prompt_template`, else `default` (a dataset's own template) with
        the options given, else a generic template over `--text_fields`."""
        template = PromptTemplate.from_pretrained(self.prompt_template) if self.prompt_template else default
        if template is None:
            if not self.text_fields:
                raise UsageError("--text_fields is required: name the column(s) holding the text to classify.")
            template = default_prompt_template(self.text_fields, verdict_format=self._verdict_format())
        elif self.verbalizers or self.verdict_prefix != DEFAULT_VERDICT_PREFIX:  # a ready template's verdict, changed
            words = self.verbalizers or [template.verdict_format.verbalizers[label] for label in template.labels]
            if len(words) != len(template.labels):
                raise UsageError(f"--verbalizers names {len(words)} labels; the template has {len(template.labels)} "
                                 f"({template.verdict_format.verbalizers}).")
            template = replace(template, verdict_format=VerdictFormat(dict(enumerate(words)), self.verdict_prefix))
        overrides = dict(question=self.question, system=self.system_prompt, max_prompt_tokens=self.max_prompt_tokens)
        return replace(template, **{name: value for name, value in overrides.items() if value is not None})

    def _verdict_format(self) -> VerdictFormat:
        mapping = self.label_mapping()
        words = self.verbalizers or (sorted(mapping, key=mapping.get) if mapping else ["No", "Yes"])
        if len(set(words)) != len(words):
            raise UsageError(f"--verbalizers must name each label once, in id order; got {words}.")
        return VerdictFormat(dict(enumerate(words)), prefix=self.verdict_prefix)


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
    teacher_instruction: str | None = field(default=None, metadata={"help": "The teacher's user message, with {text} "
                                            "(the row's prompt), {answer} (the gold word) and {verdict_line}; "
                                            "default: clsgen_hf.data.DEFAULT_TEACHER_INSTRUCTION."})
    retry_rejected: bool = field(default=False, metadata={"help": "Ask again for the rows whose cached answers were "
                                 "not kept (e.g. once the teacher is fixed)."})

    def __post_init__(self):
        if self.teacher and self.teacher.partition(":")[0] not in ("self", "transformers", "openai", "vllm"):
            raise UsageError(f"--teacher {self.teacher!r}: use 'self', 'transformers[:<model>]', 'openai:<url>' or "
                             "'vllm:<model>'.")
        if self.teacher_concurrency < 1:
            raise UsageError(f"--teacher_concurrency must be at least 1, got {self.teacher_concurrency}.")

    def make_teacher(self, model=None, tokenizer=None):
        """The teacher these options name; 'self' (the default) asks `model`, the model about to be trained."""
        import os

        from .data.teachers import TransformersTeacher, make_teacher

        if self.teacher in (None, "self"):
            return TransformersTeacher(model=model, tokenizer=tokenizer, name=f"self:{model.config._name_or_path}")
        if self.teacher.startswith("openai:"):
            return make_teacher(self.teacher, model=self.teacher_model, api_key=os.environ.get("OPENAI_API_KEY"),
                                concurrency=self.teacher_concurrency)
        return make_teacher(self.teacher)

    def synthesis_kwargs(self) -> dict:
        """These options as `synthesize_explanations` keyword arguments."""
        kwargs = dict(max_retries=self.teacher_retries, batch_size=self.teacher_batch_size,
                      max_new_tokens=self.teacher_max_new_tokens, temperature=self.teacher_temperature,
                      retry_rejected=self.retry_rejected)
        if self.teacher_instruction:  # a literal "\n" typed in a shell means a newline
            kwargs["teacher_instruction"] = self.teacher_instruction.replace("\\n", "\n")
        return kwargs


__all__ = ["PromptArguments", "TeacherArguments"]
