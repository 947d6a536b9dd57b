"""`clsgen-hf synthesize`: label-conditioned explanations from a teacher LLM, written as JSON Lines.

Examples:
    clsgen-hf synthesize --input clinifact:../shared/data/clinifact --output outputs/clinifact_train.jsonl \
        --max_rows 64
    clsgen-hf synthesize --input reviews.csv --text_fields title body --label_field stars --label2id 1=0,5=1 \\
        --teacher openai:http://localhost:8000/v1 --teacher_model meta-llama/Llama-3.1-8B-Instruct --output out.jsonl
    clsgen-hf synthesize --config synthesize.yaml

An interrupted run restarted with the same arguments reuses every answer already in the cache; a changed teacher,
instruction, answer budget or temperature is asked afresh, and --retry_rejected asks again for the rows whose cached
answers were not kept. A failing teacher, or a class that keeps no explanation, fails the run (exit status 1); bad
input exits with 2.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..data.synthesis import MIN_WORDS
from ..errors import TeacherError, UsageError, run_command
from .options import CommandParser, PromptArguments, TeacherArguments, parse_options


CLINIFACT_PREFIX = "clinifact:"


@dataclass
class SynthesizeArguments:
    """What to explain and where the explanations go."""

    input: str = field(metadata={"help": "A .csv, .jsonl or .parquet file (with --text_fields), or "
                                 "clinifact:<folder with the CliniFact CSVs>."})
    output: str = field(metadata={"help": "The JSON Lines file to write (its metadata goes to <stem>.meta.json)."})
    clinifact_split: str = field(default="train", metadata={"help": "With clinifact:<folder>: the split to explain."})
    clinifact_view: str = field(default="binary", metadata={"help": "With clinifact:<folder>: 'binary' (evidence vs "
                                "rest) or 'multiclass'."})
    max_rows: int | None = field(default=None, metadata={"help": "Explain only the first N rows."})
    cache: str | None = field(default=None, metadata={"help": "The teacher's answer cache (default: <output "
                              "stem>.cache.jsonl)."})
    tokenizer: str | None = field(default=None, metadata={"help": "The classifier's tokenizer, counting "
                                  "--max_prompt_tokens (default: the embedded SmolLM2)."})
    verdict_follow_up: bool = field(default=True, metadata={"help": "When an answer states no verdict, ask the "
                                    "teacher for its final answer (else drop it)."})
    min_words: int = field(default=MIN_WORDS, metadata={"help": "Keep only explanations with this many words besides "
                           "the verdict line."})
    seed: int = field(default=0, metadata={"help": "Random seed of the sampled re-asks (a local teacher)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self):
        if self.clinifact_view not in ("binary", "multiclass"):
            raise UsageError(f"--clinifact_view must be 'binary' or 'multiclass', got {self.clinifact_view!r}.")


def make_parser() -> CommandParser:
    return CommandParser((SynthesizeArguments, PromptArguments, TeacherArguments), prog="clsgen-hf synthesize",
                     description=__doc__)


def main(argv: list[str] | None = None) -> int:
    # ValueError/FileNotFoundError: a UsageError, or input the loaders reject (exit 2); TeacherError: the teacher
    # failed, or kept no explanation for a class (exit 1).
    return run_command("synthesize", lambda: run(*parse_options(make_parser(), argv)),
                       usage_errors=(ValueError, FileNotFoundError), failures=(TeacherError,))


def run(args: SynthesizeArguments, prompt_args: PromptArguments, teacher_args: TeacherArguments):
    """Load the rows, ask the teacher, write `args.output` and print its report; returns the synthesized dataset."""
    from transformers import set_seed

    from ..data import SynthesisReport, describe_dataset, synthesize_explanations
    from ..output_folders import claim_output_file

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # the openai client logs every request at INFO
    if teacher_args.teacher == "self":
        raise UsageError("--teacher self names the model being trained, which synthesize has none of: use "
                         "transformers[:<model>], openai:<url> or vllm:<model>.")
    teacher_args = replace(teacher_args, teacher=teacher_args.teacher or "transformers")
    output = claim_output_file("--output", args.output, {"--input": args.input, "--cache": args.cache})
    cache = claim_output_file("--cache", args.cache or output.with_suffix(".cache.jsonl"), {"--input": args.input})
    set_seed(args.seed)
    dataset, template = load_input(args, prompt_args)
    print(describe_dataset(dataset), flush=True)
    result = synthesize_explanations(
        dataset, teacher_args.make_teacher(), prompt_template=template, cache_path=cache,
        verdict_follow_up=args.verdict_follow_up, min_words=args.min_words, save_to=output,
        show_progress=args.progress, **teacher_args.synthesis_kwargs(),
    )
    print(SynthesisReport.from_dataset(result))
    print(f"Wrote {len(result)} rows to {output} (metadata: {output.with_suffix('.meta.json')}).")
    return result


def load_input(args: SynthesizeArguments, prompt_args: PromptArguments):
    """(dataset, prompt template) for `--input`."""
    from ..data import (
        CLINIFACT_BINARY_TEMPLATE,
        CLINIFACT_MULTICLASS_TEMPLATE,
        load_classification_dataset,
        load_clinifact,
    )
    from ..loading import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer) if prompt_args.max_prompt_tokens else None
    common = dict(allow_empty_text=prompt_args.allow_empty_text, tokenizer=tokenizer,
                  max_prompt_tokens=prompt_args.max_prompt_tokens)
    if args.input.startswith(CLINIFACT_PREFIX):
        default = CLINIFACT_BINARY_TEMPLATE if args.clinifact_view == "binary" else CLINIFACT_MULTICLASS_TEMPLATE
        template = prompt_args.build_template(default)
        dataset = load_clinifact(args.input.removeprefix(CLINIFACT_PREFIX), view=args.clinifact_view,
                                 splits=args.clinifact_split, prompt_template=template, **common)
    else:
        if not Path(args.input).is_file():
            raise UsageError(f"--input {args.input}: no such file (or name a CliniFact folder as clinifact:<folder>).")
        template = prompt_args.build_template()
        dataset = load_classification_dataset(
            args.input, text_fields=prompt_args.text_fields or list(template.fields),
            label_field=prompt_args.label_field, label2id=prompt_args.label_ids, prompt_template=template,
            **common,
        )
    if args.max_rows is not None:
        dataset = dataset.select(range(min(args.max_rows, len(dataset))))
    return dataset, template
