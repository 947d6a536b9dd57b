"""`clsgen-hf predict`: class probability, decision and explanation for every row of a CSV, JSON Lines or Parquet
file (read by the loader that training uses).

Examples:
    clsgen-hf predict --model outputs/clsgen-smollm2-clinifact --input rows.jsonl --output preds.jsonl
    clsgen-hf predict --model my-model --input notes.csv --text_field note --output preds.csv --batch_size 16

The prompt is built as in training: by the model folder's `clsgen_prompt.json` (written by `clsgen-hf train`), by
`--prompt_template`, or from `--text_field` columns with the generic template. Rows with a non-empty `prompt` column
(text, or chat messages in JSON Lines) are used as they are, neither rebuilt nor cut. The decision uses the model's stored threshold (`config.cls_threshold`) unless `--threshold` is given.
Every input column is kept in the output, followed by `probability` (one per class), `label`, `verdict` and
`explanation`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

from ..errors import UsageError, report_usage_error


logger = logging.getLogger("clsgen_hf.predict")

FORMATS = (".jsonl", ".csv")
INPUT_FORMATS = (".jsonl", ".json", ".csv", ".parquet")


class PredictError(UsageError):
    """Bad command-line input: reported as one line, without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clsgen-hf predict", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a CLSGen model folder (saved by `clsgen-hf train`)")
    parser.add_argument("--input", required=True, type=Path, help="rows to predict: a .jsonl, .csv or .parquet file")
    parser.add_argument("--output", required=True, type=Path, help="where to write the predictions: .jsonl or .csv")
    parser.add_argument("--text_field", "--text-field", nargs="+", dest="text_field",
                        help="column(s) holding the text, for the generic prompt template")
    parser.add_argument("--prompt_template", "--prompt-template", type=Path, dest="prompt_template",
                        help="a PromptTemplate JSON file (default: clsgen_prompt.json in the model folder)")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=8, dest="batch_size",
                        help="prompts per batch")
    parser.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=128, dest="max_new_tokens",
                        help="explanation budget in tokens (0: probabilities only)")
    parser.add_argument("--max_prompt_tokens", "--max-prompt-tokens", type=int, default=None, dest="max_prompt_tokens",
                        help="cut the middle of the longest text fields of longer prompts (default: the "
                             "training value saved in the prompt template)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="binary decision threshold (default: the model's stored config.cls_threshold)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        run(args)
    except UsageError as error:  # PredictError and the loader's errors
        return report_usage_error("predict", error)
    return 0


def run(args: argparse.Namespace) -> list[dict]:
    """Check the inputs (before loading any weights), predict, write `args.output`; returns the output rows."""
    model_dir = check_model_folder(args.model)
    if args.output.suffix.lower() not in FORMATS:
        raise PredictError(f"--output must end in {' or '.join(FORMATS)}, got {args.output}.")
    template = _prompt_template(args, model_dir)
    rows = read_rows(args.input)
    _check_fields(rows, template, args.input)

    from ..data import fit_prompt
    from ..inference import predict
    from ..loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_dir)
    model.eval()
    # A file's rows share its columns: a row without a prompt has `prompt: None`, built by the template instead.
    inputs = [{"prompt": row["prompt"]} if _has_prompt(row) else {k: v for k, v in row.items() if k != "prompt"}
              for row in rows]
    max_prompt_tokens = args.max_prompt_tokens or (template and template.max_prompt_tokens)
    if template is not None and max_prompt_tokens:
        try:
            inputs = [item if _has_prompt(item) else {"prompt": fit_prompt(template, item, tokenizer,
                                                                            max_prompt_tokens)[0]} for item in inputs]
        except ValueError as error:
            raise PredictError(f"--max_prompt_tokens {max_prompt_tokens}: {error}") from None
    started = time.time()
    records = predict(
        model, tokenizer, inputs, prompt_template=template, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, threshold=args.threshold,
    )
    outputs = [{**_keep_clear_of(row, record), **record} for row, record in zip(rows, records)]
    write_rows(outputs, args.output, num_labels=model.config.num_labels)
    logger.info("Predicted %d rows in %.1f s; wrote %s", len(rows), time.time() - started, args.output)
    if args.max_new_tokens > 0:
        disagreements = sum(not record["agrees"] for record in records)
        logger.info("%d of %d explanations do not state the head's label (agrees=false): review those rows.",
                    disagreements, len(records))
    return outputs


def check_model_folder(path: str | Path) -> Path:
    """`path` as a folder holding a CLSGen model with complete weights, or a `PredictError` naming the file at fault
    (checked before any weight is loaded: the config parses, the safetensors headers describe the files' bytes)."""
    folder = Path(path)
    if not folder.is_dir():
        raise PredictError(f"--model {path}: no such folder.")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise PredictError(f"--model {path}: no config.json, so not a saved model folder.")
    from ..configuration_clsgen import LlamaCLSGenConfig
    from ..export import inspect_source
    from ..model_card import read_json

    config = read_json(config_file)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != LlamaCLSGenConfig.model_type:
        raise PredictError(
            f"--model {path} holds a `{model_type}` model, not a CLSGen model (model_type "
            f"`{LlamaCLSGenConfig.model_type}`): it has no trained classification head. Train one with "
            "`clsgen-hf train` and pass its output folder."
        )
    try:
        inspect_source(folder)
    except UsageError as error:
        raise PredictError(f"--model {path}: {error}") from None
    return folder


def read_rows(path: Path) -> list[dict]:
    """The rows of a .jsonl, .csv or .parquet file, through `clsgen_hf.data.read_rows` (as training reads them)."""
    if not path.is_file():
        raise PredictError(f"--input {path}: no such file.")
    if path.suffix.lower() not in INPUT_FORMATS:
        raise PredictError(f"--input must be a {', '.join(INPUT_FORMATS)} file, got {path}.")
    from ..data import read_rows as read_data_rows

    return read_data_rows(path)


def write_rows(rows: list[dict], path: Path, num_labels: int) -> None:
    from ..model_card import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".jsonl":
        with path.open("w", encoding="utf-8") as file:
            file.writelines(json.dumps(json_safe(row), ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
        return
    flat = []
    for row in rows:
        row = dict(row)
        probabilities = row.pop("probability")
        flat.append({**row, **{f"probability_{i}": probabilities[i] for i in range(num_labels)}})
    columns = list(dict.fromkeys(key for row in flat for key in row))
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)


def _keep_clear_of(row: dict, record: dict) -> dict:
    """`row` with the columns that a prediction field would overwrite (e.g. a gold `label`) renamed `input_<name>`."""
    return {(f"input_{key}" if key in record else key): value for key, value in row.items()}


def _prompt_template(args: argparse.Namespace, model_dir: Path):
    from ..data import PromptTemplate, default_prompt_template
    from ..inference import load_prompt_template

    if args.prompt_template is not None:
        if not args.prompt_template.is_file():
            raise PredictError(f"--prompt_template {args.prompt_template}: no such file.")
        return PromptTemplate.from_json_file(args.prompt_template)
    if args.text_field:
        return default_prompt_template(args.text_field)
    return load_prompt_template(model_dir)


def _has_prompt(row: dict) -> bool:
    prompt = row.get("prompt")
    return bool(prompt.strip()) if isinstance(prompt, str) else bool(prompt)


def _check_fields(rows: list[dict], template, path: Path) -> None:
    """Every row must hold a ready `prompt` or the fields the template reads."""
    if template is None:
        if all(_has_prompt(row) for row in rows):
            return
        raise PredictError(
            f"{path}: rows have no `prompt` column and the model folder has no clsgen_prompt.json; name the text "
            f"column(s) with --text_field, or pass --prompt_template. Columns present: {sorted(rows[0])}."
        )
    for number, row in enumerate(rows, start=1):
        if _has_prompt(row):
            continue
        missing = [name for name in template.fields if name not in row]
        if missing:
            raise PredictError(
                f"{path}, row {number}: missing the field(s) {', '.join(repr(m) for m in missing)} the prompt needs; "
                f"columns present: {sorted(row)}."
            )
        empty = [name for name in template.fields if row[name] is None or not str(row[name]).strip()]
        if empty:
            raise PredictError(f"{path}, row {number}: the field(s) {', '.join(map(repr, empty))} are empty.")
