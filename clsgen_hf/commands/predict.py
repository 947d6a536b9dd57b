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
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..data import read_rows
from ..errors import UsageError, run_command
from ..export import inspect_source
from ..inference import predict
from ..loading import load_model_and_tokenizer
from ..model_card import json_safe
from ..prompt_template import PromptTemplate, default_prompt_template


logger = logging.getLogger("clsgen_hf.predict")

OUTPUT_FORMATS = (".jsonl", ".csv")


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
    max_new_tokens: int = field(default=128, metadata={"help": "Explanation budget in tokens (0: probabilities only)."})
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "The token budget rows are fitted to "
                                          "(default: the template's, from training)."})
    threshold: float | None = field(default=None, metadata={"help": "Binary decision threshold (default: the model's "
                                    "config.cls_threshold)."})
    explain: str = field(default="natural", metadata={"help": "'natural' (the explanation states the LM's own "
                         "verdict) or 'decision' (the head decides, the explanation follows its decision).",
                                                      "choices": ["natural", "decision"]})


def main(argv: list[str] | None = None) -> int:
    parser = TrlParser(PredictArguments, prog="clsgen-hf predict", description=__doc__)
    return run_command("predict", lambda: run(*parser.parse_args_and_config(argv)))


def run(args: PredictArguments) -> list[dict]:
    """Check the inputs (before loading any weights), predict, write `args.output`; returns the output rows."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    model_dir, output = Path(args.model), Path(args.output)
    try:
        inspect_source(model_dir)  # a CLSGen model with a trained head and readable weights, before any weight loads
    except UsageError as error:
        raise UsageError(f"--model {args.model}: {error}") from None
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise UsageError(f"--output must end in {' or '.join(OUTPUT_FORMATS)}, got {output}.")
    if args.prompt_template:
        template = PromptTemplate.from_pretrained(args.prompt_template)
    elif args.text_fields:
        template = default_prompt_template(args.text_fields)
    else:
        template = PromptTemplate.in_folder(model_dir)
    rows = read_rows(args.input)
    inputs = [_prediction_input(row, template, args.input, number) for number, row in enumerate(rows, start=1)]

    try:
        model, tokenizer = load_model_and_tokenizer(model_dir)
    except (OSError, ValueError) as error:  # e.g. missing tokenizer files
        raise UsageError(f"--model {args.model}: {str(error).strip().splitlines()[0]}") from None
    model.eval()
    started = time.time()
    records = predict(model, tokenizer, inputs, prompt_template=template, batch_size=args.batch_size,
                      max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
                      threshold=args.threshold, explain=args.explain)
    # An input column that a prediction field would overwrite (e.g. a gold `label`) is kept as `input_<name>`.
    outputs = [{**{(f"input_{key}" if key in record else key): value for key, value in row.items()}, **record}
               for row, record in zip(rows, records)]
    write_rows(outputs, output)
    logger.info("Predicted %d rows in %.1f s; wrote %s", len(rows), time.time() - started, output)
    if args.max_new_tokens > 0:
        logger.info("%d of %d explanations do not state the head's label (agrees=false): review those rows.",
                    sum(not record["agrees"] for record in records), len(records))
    return outputs


def write_rows(rows: list[dict], path: Path) -> None:
    """Predictions as JSON Lines, or as CSV with one `probability_<i>` column per class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".jsonl":
        with path.open("w", encoding="utf-8") as file:
            file.writelines(json.dumps(json_safe(row), ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
        return
    flat = [{**{key: value for key, value in row.items() if key != "probability"},
             **{f"probability_{i}": p for i, p in enumerate(row["probability"])}} for row in rows]
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(dict.fromkeys(key for row in flat for key in row)))
        writer.writeheader()
        writer.writerows(flat)


def _prediction_input(row: dict, template, path: str, number: int) -> dict:
    """The row as `predict` takes it: its ready `prompt`, or the fields the template reads (checked here, before any
    weight loads)."""
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip() or isinstance(prompt, list) and prompt:
        return {"prompt": prompt}
    if template is None:
        raise UsageError(f"{path}: rows have no `prompt` column and the model folder has no clsgen_prompt.json; name "
                         f"the text column(s) with --text_fields, or pass --prompt_template. Columns present: "
                         f"{sorted(row)}.")
    missing = [name for name in template.fields if name not in row]
    if missing:
        raise UsageError(f"{path}, row {number}: missing the field(s) {', '.join(map(repr, missing))} the prompt "
                         f"needs; columns present: {sorted(row)}.")
    empty = [name for name in template.fields if row[name] is None or not str(row[name]).strip()]
    if empty:
        raise UsageError(f"{path}, row {number}: the field(s) {', '.join(map(repr, empty))} are empty.")
    return {name: row[name] for name in template.fields}
