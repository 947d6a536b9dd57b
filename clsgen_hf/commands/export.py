"""`clsgen-hf export SOURCE OUTPUT_DIR`: a training checkpoint, an adapter or a CLSGen model folder as a shareable,
validated folder (see `clsgen_hf.export`).

Examples:
    clsgen-hf export outputs/run/checkpoint-12 exports/my-model          # merged: transformers alone loads it
    clsgen-hf export outputs/run exports/my-model --repo_id me/my-model  # the card's snippet loads me/my-model
    clsgen-hf export outputs/run/checkpoint-12 exports/my-adapter --format adapter \\
        --base_model HuggingFaceTB/SmolLM2-135M-Instruct
    clsgen-hf export outputs/run exports/my-serving --format serving    # classifier/ + generator/, no remote code
    clsgen-hf export --config export.yaml                               # the options (source, output_dir too) in YAML

The merged folder loads with AutoModel.from_pretrained(folder, trust_remote_code=True), the adapter folder with PEFT
on its base model (its README.md shows how), the serving folders in engines such as vLLM (README: Serving).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from typing import Literal

from ..errors import run_command
from .options import CommandParser, parse_options


@dataclass
class ExportArguments:
    """What to export, as which form, and what the model card says."""

    format: Literal["merged", "adapter", "serving"] = field(
        default="merged",
        metadata={"help": "merged (one model.safetensors, LoRA merged in), adapter (the LoRA adapter with its score "
                  "head), or serving (OUTPUT_DIR/classifier + OUTPUT_DIR/generator, no remote code)."},
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Base model of an adapter (Hub id, folder or .gguf file); default: adapter_config.json's "
                  "base_model_name_or_path."},
    )
    results: str | None = field(
        default=None,
        metadata={"help": "JSON file of evaluation numbers for the card (default: the run's clsgen_results.json, "
                  "for a checkpoint only when it holds the run's final weights)."},
    )
    repo_id: str | None = field(default=None, metadata={"help": "Hub id the card's usage snippet loads (default: "
                                                                "OUTPUT_DIR)."})
    dataset_name: str | None = field(default=None, metadata={"help": "The training data, in words, for the card."})
    datasets: list[str] | None = field(default=None, metadata={"help": "Hub dataset id(s) for the card."})
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace OUTPUT_DIR if an earlier export wrote it (a folder holding anything else is "
                  "refused; so is one that is, contains or lies inside SOURCE)."},
    )
    validate: bool = field(default=True, metadata={"help": "Reload the export and compare it with the source."})
    atol: float = field(default=1e-5, metadata={"help": "Tolerance on cls_logits (serving: on probabilities)."})


def make_parser() -> CommandParser:
    parser = CommandParser(ExportArguments, prog="clsgen-hf export", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="checkpoint-N folder, adapter folder or CLSGen model folder")
    parser.add_argument("output_dir", nargs="?", help="the folder to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def export() -> None:
        args, paths = parse_options(parser, argv)
        if not (paths.source and paths.output_dir):
            parser.error("give SOURCE and OUTPUT_DIR (on the command line, or as source/output_dir in --config)")
        from ..export import export_model  # after the options are checked: these load torch
        from ..output_folders import claim_output_folder
        from ..serving import export_serving

        claim_output_folder("OUTPUT_DIR", paths.output_dir, {"the source folder": paths.source})
        options = dict(base_model=args.base_model, overwrite=args.overwrite, validate=args.validate, atol=args.atol)
        if args.format == "serving":
            print(export_serving(paths.source, paths.output_dir, **options))
        else:
            print(export_model(paths.source, paths.output_dir, merge=args.format == "merged", results=args.results,
                               repo_id=args.repo_id, dataset_name=args.dataset_name, datasets=args.datasets,
                               **options))

    return run_command("export", export)
