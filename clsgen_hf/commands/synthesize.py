"""`clsgen-hf synthesize`: label-conditioned explanations from a teacher LLM, written as JSON Lines.

Examples:
    clsgen-hf synthesize clinifact:../shared/data/clinifact --output outputs/clinifact_train.jsonl --max-rows 64
    clsgen-hf synthesize reviews.csv --text-fields title,body --label-field stars --label2id "1=0,5=1" \\
        --teacher openai:http://localhost:8000/v1 --teacher-model meta-llama/Llama-3.1-8B-Instruct --output out.jsonl

An interrupted run restarted with the same arguments reuses every answer already in the cache; a changed teacher,
instruction, answer budget or temperature is asked afresh, and --retry-rejected asks again for the rows whose cached
answers were not kept. A class that keeps no explanation fails the run (exit status 1); bad input exits with 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from transformers import set_seed

from clsgen_hf.data.classification import parse_label2id
from clsgen_hf.data.synthesis import MIN_WORDS
from clsgen_hf.errors import UsageError, report_usage_error


def _pairs(text: str) -> dict[str, str]:
    """`"a=1,b=2"` -> `{"a": "1", "b": "2"}`."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,KEY=VALUE...], got {text!r}")
    return {key.strip(): value.strip() for key, value in pairs}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except empty ones, and keeps the examples' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        empty = action.default is None or action.default is False
        return action.help if empty else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clsgen-hf synthesize",
        description="Ask a teacher LLM to explain the gold label of each row; keep the answers whose verdict line "
        "matches the label (re-asking with sampling), and write prompt/completion/label rows as JSON Lines.",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=_HelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("input", help="a .csv, .jsonl or .parquet file, or clinifact:<folder with the CliniFact CSVs>")
    data.add_argument("--split", default="train", help="CliniFact split to use")
    data.add_argument("--view", choices=["binary", "multiclass"], default="binary", help="CliniFact label view")
    data.add_argument("--text-fields", help="comma-separated text columns (files only), e.g. title,body")
    data.add_argument("--label-field", default="label", help="label column (files only)")
    data.add_argument("--label2id", type=parse_label2id,
                      help="raw label -> id: 'negative=0,positive=1', or JSON ('{\"negative\": 0, \"positive\": 1}')")
    data.add_argument("--verbalizers", type=_pairs, help="id -> verdict word (files only), e.g. '0=No,1=Yes'")
    data.add_argument("--question", help="task question asked after the text (files only)")
    data.add_argument("--prompt-template", type=Path, help="a PromptTemplate JSON file (overrides the options above)")
    data.add_argument("--max-rows", type=int, help="use only the first N rows")
    data.add_argument("--allow-empty-text", action="store_true", help="skip rows with empty text instead of failing")
    data.add_argument("--max-prompt-tokens", type=int,
                      help="cut the middle of the longest text field of longer prompts (counted with --tokenizer)")
    data.add_argument("--tokenizer", help="classifier tokenizer for --max-prompt-tokens (default: embedded SmolLM2)")

    teacher = parser.add_argument_group("teacher")
    teacher.add_argument("--teacher", default="transformers",
                         help="transformers[:<model id, folder or .gguf>] | openai:<url> (API key from "
                         "$OPENAI_API_KEY) | vllm:<model>")
    teacher.add_argument("--teacher-model", help="served model name for openai:<url> (default: the server's first)")
    teacher.add_argument("--max-retries", type=int, default=2, help="sampled re-asks for answers not kept")
    teacher.add_argument("--batch-size", type=int, default=8, help="conversations per teacher call and cache flush")
    teacher.add_argument("--max-new-tokens", type=int, default=128, help="answer budget in tokens")
    teacher.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of retries")
    teacher.add_argument("--teacher-instruction",
                         help="the teacher's user message, with {text} (the row's prompt), {answer} (the gold word) "
                         "and {verdict_line}; default: clsgen_hf.data.DEFAULT_TEACHER_INSTRUCTION")
    teacher.add_argument("--no-verdict-follow-up", action="store_true",
                         help="drop answers stating no verdict instead of asking the teacher for its final answer")
    teacher.add_argument("--min-words", type=int, default=MIN_WORDS,
                         help="keep only explanations with at least this many words besides the verdict line")
    teacher.add_argument("--seed", type=int, default=0, help="random seed for sampled retries")
    teacher.add_argument("--retry-rejected", "--retry_rejected", dest="retry_rejected", action="store_true",
                         help="ask again for the rows whose cached answers were not kept (e.g. once the teacher is "
                         "fixed) instead of reusing them")

    output = parser.add_argument_group("output")
    output.add_argument("--output", type=Path, required=True, help="JSON Lines file to write (plus <stem>.meta.json)")
    output.add_argument("--cache", type=Path, help="answer cache (default: <output stem>.cache.jsonl)")
    output.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def load_input(args: argparse.Namespace):
    """(dataset, prompt template) for the input named on the command line."""
    from clsgen_hf.data import (
        CLINIFACT_BINARY_TEMPLATE, CLINIFACT_MULTICLASS_TEMPLATE, PromptTemplate, default_prompt_template,
        load_classification_dataset, load_clinifact,
    )
    from clsgen_hf.loading import load_tokenizer
    from clsgen_hf.verdicts import VerdictFormat

    tokenizer = load_tokenizer(args.tokenizer) if args.max_prompt_tokens else None
    common = dict(allow_empty_text=args.allow_empty_text, tokenizer=tokenizer, max_prompt_tokens=args.max_prompt_tokens)
    template = PromptTemplate.from_json_file(args.prompt_template) if args.prompt_template else None
    if args.input.startswith("clinifact:"):
        template = template or (CLINIFACT_BINARY_TEMPLATE if args.view == "binary" else CLINIFACT_MULTICLASS_TEMPLATE)
        ds = load_clinifact(args.input.removeprefix("clinifact:"), view=args.view, splits=args.split,
                            prompt_template=template, **common)
    else:
        if not args.text_fields:
            raise UsageError("--text-fields is required for a file input.")
        fields = [name.strip() for name in args.text_fields.split(",")]
        if template is None:
            verbalizers = {int(k): v for k, v in (args.verbalizers or {"0": "No", "1": "Yes"}).items()}
            extra = {"question": args.question} if args.question else {}
            template = default_prompt_template(fields, verdict_format=VerdictFormat(verbalizers), **extra)
        ds = load_classification_dataset(args.input, text_fields=fields, label_field=args.label_field,
                                         label2id=args.label2id, prompt_template=template, **common)
    if args.max_rows is not None:
        ds = ds.select(range(min(args.max_rows, len(ds))))
    return ds, template


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from clsgen_hf.data import TeacherError, describe_dataset, make_teacher, synthesize_explanations

    set_seed(args.seed)
    try:
        dataset, template = load_input(args)
        print(describe_dataset(dataset), flush=True)
        endpoint = {"model": args.teacher_model, "api_key": os.environ.get("OPENAI_API_KEY")}
        teacher = make_teacher(args.teacher, **(endpoint if args.teacher.startswith("openai:") else {}))
        instruction = {}
        if args.teacher_instruction:  # a literal "\n" typed in a shell means a newline
            instruction = {"teacher_instruction": args.teacher_instruction.replace("\\n", "\n")}
        result = synthesize_explanations(
            dataset, teacher, prompt_template=template,
            cache_path=args.cache or args.output.with_suffix(".cache.jsonl"),
            max_retries=args.max_retries, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, verdict_follow_up=not args.no_verdict_follow_up, min_words=args.min_words,
            retry_rejected=args.retry_rejected, save_to=args.output,
            show_progress=not args.no_progress, **instruction,
        )
    except UsageError as error:
        return report_usage_error("synthesize", error)
    except (ValueError, FileNotFoundError, TeacherError) as error:  # a teacher that failed, or kept nothing
        print(f"clsgen-hf synthesize: error: {error}", file=sys.stderr)
        return 1
    from clsgen_hf.data import SynthesisReport

    print(SynthesisReport.from_dataset(result))
    print(f"Wrote {len(result)} rows to {args.output} (metadata: {args.output.with_suffix('.meta.json')}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
