"""`clsgen-hf predict`: class probability, decision and explanation for every row of a CSV, JSON Lines or Parquet
file (read by the loader that training uses).

Examples:
    clsgen-hf predict --model outputs/clsgen-smollm2-clinifact --input rows.jsonl --output preds.jsonl
    clsgen-hf predict --model my-model --input notes.csv --text_fields note --output preds.csv --batch_size 16

The prompt is built as in training: by the model folder's `clsgen_prompt.json` (written by `clsgen-hf train`), by
`--prompt_template`, or from `--text_fields` columns with the generic template, and fitted to the template's token
budget. Rows with a non-empty `prompt` column (text, or chat messages in JSON Lines) are used as they are. The
decision uses the model's stored threshold (`config.cls_threshold`) unless `--threshold` is given. Every input column
is kept in the output, followed by `probability` (one per class), `label`, `explanation`, `verdict` and `agrees`.

Rows are streamed: predicted and appended to `<output>.partial` a chunk at a time; the finished file replaces
`--output` at the end. Rerun a killed run with the same options and it carries on where it stopped (options that
differ are refused, unless `--overwrite`). Several processes split the rows between them:
    accelerate launch --num_processes 4 -m clsgen_hf.cli predict --model my-model --input notes.csv --output p.csv
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..errors import run_command
from .options import CommandParser, check_option_ranges, parse_options


logger = logging.getLogger("clsgen_hf.predict")


@dataclass
class PredictArguments:
    """What to predict, with which model, and where the predictions go."""

    model: str = field(metadata={"help": "A CLSGen model folder (saved by `clsgen-hf train` or `clsgen-hf export`)."})
    input: str = field(metadata={"help": "The rows to predict: a .csv, .jsonl or .parquet file."})
    output: str = field(metadata={"help": "Where to write the predictions: a .jsonl or .csv file."})
    text_fields: list[str] | None = field(default=None, metadata={"help": "The text column(s), for the generic "
                                          "prompt template."})
    prompt_template: str | None = field(default=None, metadata={"help": "A prompt template JSON file (default: "
                                        "clsgen_prompt.json in the model folder)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per batch."})
    max_new_tokens: int = field(
        default=128, metadata={"help": "Explanation budget in tokens (0: probabilities only)."}
    )
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "The token budget rows are fitted to "
                                          "(default: the template's, from training)."})
    threshold: float | None = field(default=None, metadata={"help": "Binary decision threshold (default: the model's "
                                    "config.cls_threshold)."})
    max_batch_tokens: int = field(default=8192, metadata={"help": "Padded tokens per batch with --max_new_tokens 0 "
                                  "(prompts are then batched by tokens, not by --batch_size)."})
    chunk_size: int = field(default=256, metadata={"help": "Rows read, predicted and written at a time (per process); "
                            "a killed run loses at most this many."})
    overwrite: bool = field(default=False, metadata={"help": "Start again instead of refusing to resume an unfinished "
                            "run (<output>.partial) made with other options."})
    explain: str = field(default="natural", metadata={"help": "'natural' (the explanation states the LM's own "
                         "verdict) or 'decision' (the head decides, the explanation follows its decision).",
                                                      "choices": ["natural", "decision"]})

    def __post_init__(self):
        check_option_ranges(self)


def make_parser() -> CommandParser:
    return CommandParser(PredictArguments, prog="clsgen-hf predict", description=__doc__)


def main(argv: list[str] | None = None) -> int:
    return run_command("predict", lambda: run(*parse_options(make_parser(), argv)))


def run(args: PredictArguments) -> dict:
    """Predict every row of `args.input` into `args.output` (see `clsgen_hf.batch_prediction.predict_file`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from ..output_folders import claim_output_file

    # In a data-parallel run the main process (RANK 0) holds the claim; the others only check.
    claim_output_file("--output", args.output, {"--input": args.input, "--prompt_template": args.prompt_template},
                      lock=int(os.environ.get("RANK", "0")) == 0)
    from ..batch_prediction import predict_file  # after the checks that need no torch

    summary = predict_file(args.model, args.input, args.output, prompt_template=args.prompt_template,
                           text_fields=args.text_fields, batch_size=args.batch_size,
                           max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
                           threshold=args.threshold, max_batch_tokens=args.max_batch_tokens,
                           chunk_size=args.chunk_size, overwrite=args.overwrite, explain=args.explain)
    if summary.get("disagreeing") is not None:
        logger.info("%d of %d explanations do not state the head's label (agrees=false): review those rows.",
                    summary["disagreeing"], summary["rows"])
    return summary
