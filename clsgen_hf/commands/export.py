"""`clsgen-hf export`: turn a training checkpoint, an adapter or a CLSGen model folder into a shareable, validated
folder (see `clsgen_hf.export`)."""

from __future__ import annotations

import argparse
import logging


EPILOG = """examples:
  clsgen-hf export outputs/run/checkpoint-12 exports/my-model          # merged: transformers alone loads it
  clsgen-hf export outputs/run exports/my-model --repo_id me/my-model  # the card's snippet loads me/my-model
  clsgen-hf export outputs/run/checkpoint-12 exports/my-adapter --no-merge --base_model HuggingFaceTB/SmolLM2-135M-Instruct
  clsgen-hf export outputs/run exports/my-serving --format serving    # classifier/ + generator/ for vLLM, no remote code

The merged folder loads with AutoModel.from_pretrained(folder, trust_remote_code=True); the adapter folder with
PEFT on top of its base model (its README.md shows how). Upload either with `hf upload <repo_id> <folder>`.
--format serving writes OUT_DIR/classifier (LlamaForSequenceClassification, calibration folded into `score`) and
OUT_DIR/generator (LlamaForCausalLM), standard architectures that engines such as vLLM serve (README: Serving); the
card options do not apply to it.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clsgen-hf export",
        description=(
            "Write a checkpoint-N folder, an adapter folder or a CLSGen model folder as a folder anyone can load: "
            "config with auto_map, the model code, safetensors weights (merged, or the adapter with its score head), "
            "tokenizer with chat template, generation config, prompt template, results and a model card (README.md). "
            "Then reload it (merged: in a process without clsgen_hf, with trust_remote_code; adapter: with PEFT) and "
            "check that its classification logits match the source's."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="checkpoint-N folder, adapter folder or CLSGen model folder")
    parser.add_argument("out_dir", help="the folder to write")
    parser.add_argument(
        "--merge", action=argparse.BooleanOptionalAction, default=True,
        help="merge the LoRA adapter into one model.safetensors (default), or keep the adapter (--no-merge)",
    )
    parser.add_argument(
        "--format", choices=("merged", "adapter", "serving"),
        help="merged (default; --no-merge: adapter), adapter, or serving: two folders of standard transformers "
        "architectures (OUT_DIR/classifier, OUT_DIR/generator) that need no remote code",
    )
    parser.add_argument(
        "--base_model",
        help="base model of an adapter (Hub id, folder or .gguf file); default: adapter_config.json's "
        "base_model_name_or_path",
    )
    parser.add_argument(
        "--results",
        help="JSON file of evaluation numbers for the card (default: the run's clsgen_results.json, for a checkpoint "
        "only when it holds the run's final weights)",
    )
    parser.add_argument("--repo_id", help="Hub id the card's usage snippet loads (default: OUT_DIR)")
    parser.add_argument("--dataset_name", help="the training data, in words, for the card (e.g. CliniFact)")
    parser.add_argument("--dataset", action="append", dest="datasets", help="Hub dataset id for the card (repeatable)")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace OUT_DIR if an earlier export wrote it (a folder holding anything else is refused; so is one that "
        "is, contains or lies inside SOURCE)",
    )
    parser.add_argument("--no-validate", dest="validate", action="store_false", help="skip reloading the export")
    parser.add_argument("--atol", type=float, default=1e-5, help="tolerance on cls_logits (default 1e-5)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ..errors import UsageError, report_usage_error
    from ..export import export_model  # the heavy imports, after --help
    from ..serving import export_serving

    try:
        if args.format == "serving":
            report = export_serving(args.source, args.out_dir, base_model=args.base_model, overwrite=args.overwrite,
                                    validate=args.validate, atol=args.atol)
        else:
            report = export_model(
                args.source, args.out_dir, merge=args.merge and args.format != "adapter", base_model=args.base_model,
                results=args.results, repo_id=args.repo_id, dataset_name=args.dataset_name, datasets=args.datasets,
                overwrite=args.overwrite, validate=args.validate, atol=args.atol,
            )
    except UsageError as error:  # ExportError included
        return report_usage_error("export", error)
    print(report)
    return 0
