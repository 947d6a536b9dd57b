# /// script
# requires-python = ">=3.11"
# dependencies = ["clsgen_hf", "transformers[serving]"]
# ///
"""Teacher throughput: rows per minute of explanation synthesis through a real OpenAI-compatible server
(`transformers serve`, on 127.0.0.1) at several request concurrencies, against the local `transformers:` teacher, on
the same CliniFact rows with the same answer budget.

Each run is `synthesize_explanations` with a fresh cache, first tries only (greedy, no verdict follow-up), so every run
asks exactly one answer per row; a rate is rows answered / seconds spent asking. The local teacher runs first, alone;
its model is then saved as a plain folder (which `transformers serve` needs: it refuses a GGUF path) and served, with
nothing else of this script using the CPU while it answers. The machine's load average is recorded next to the
numbers: on a shared machine other work slows both.

Usage:

    python examples/benchmark_teacher.py                      # embedded SmolLM2-135M, 8 rows, 48 tokens
    python examples/benchmark_teacher.py --rows 32 --max_new_tokens 128 --concurrency 1 4 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trl import TrlParser


ROOT = Path(__file__).resolve().parent


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the usage examples' line breaks and shows the defaults."""


@dataclass
class BenchmarkArguments:
    """Which rows, which budget, which concurrencies."""

    data_dir: str = field(
        default=str(ROOT.parent.parent / "shared" / "data" / "clinifact"), metadata={"help": "CliniFact folder."}
    )
    split: str = field(default="validation", metadata={"help": "CliniFact split the rows come from."})
    rows: int = field(default=8, metadata={"help": "Rows explained by every run."})
    max_new_tokens: int = field(default=48, metadata={"help": "Answer budget of every teacher."})
    batch_size: int = field(default=8, metadata={"help": "Batch size of the local teacher."})
    concurrency: list[int] = field(default_factory=lambda: [1, 4], metadata={"help": "Requests in flight, per run."})
    teacher_model: str | None = field(
        default=None, metadata={"help": "A model id, folder or .gguf (default: the embedded SmolLM2-135M-Instruct)."}
    )
    serve_args: list[str] = field(default_factory=list, metadata={"help": "Extra `transformers serve` options."})
    output: str = field(
        default=str(ROOT / "benchmark_results" / "teacher_throughput.json"), metadata={"help": "The JSON to write."}
    )


def main(argv: list[str] | None = None) -> dict:
    parser = TrlParser(BenchmarkArguments, description=__doc__, formatter_class=_HelpFormatter)
    (args,) = parser.parse_args_and_config(argv)
    from clsgen_hf.data import OpenAITeacher, TransformersTeacher, load_clinifact

    rows = load_clinifact(args.data_dir, splits=args.split).select(range(args.rows))
    relative = {name: os.path.relpath(getattr(args, name), ROOT.parent) for name in ("data_dir", "output")}
    settings = {**asdict(args), **relative}
    results = {"settings": settings, "machine": _machine(), "runs": []}
    local = TransformersTeacher(args.teacher_model)
    results["runs"].append(_run("transformers (local)", local, rows, args, batch_size=args.batch_size))
    with tempfile.TemporaryDirectory() as folder:
        local.model.save_pretrained(folder)
        local.tokenizer.save_pretrained(folder)
        del local
        with _serve(Path(folder), args.serve_args) as url:
            for concurrency in args.concurrency:
                teacher = OpenAITeacher(url, concurrency=concurrency)
                results["runs"].append(_run(f"openai: transformers serve, concurrency {concurrency}", teacher, rows,
                                            args, concurrency=concurrency))
    results["machine"]["load_average_after"] = os.getloadavg()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    for run in results["runs"]:
        print(f"{run['teacher']:<45} {run['rows_per_minute']:8.1f} rows/min {run['tokens_per_second']:8.1f} tokens/s")
    print(f"load average before/after: {results['machine']['load_average_before']} / "
          f"{results['machine']['load_average_after']}; wrote {args.output}")
    return results


def _run(name: str, teacher, rows, args: BenchmarkArguments, **settings) -> dict:
    from clsgen_hf.data import CLINIFACT_BINARY_TEMPLATE, SynthesisReport, synthesize_explanations

    with tempfile.TemporaryDirectory() as folder:
        out = synthesize_explanations(
            rows, teacher, prompt_template=CLINIFACT_BINARY_TEMPLATE, cache_path=Path(folder) / "cache.jsonl",
            max_retries=0, max_new_tokens=args.max_new_tokens, verdict_follow_up=False, require_every_class=False,
            show_progress=False, batch_size=args.batch_size,
        )
    report = SynthesisReport.from_dataset(out)
    return {"teacher": name, **settings, "rows": report.generated, "seconds": round(report.seconds, 2),
            "rows_per_minute": round(60 * report.generated / report.seconds, 2),
            "tokens_per_second": round(report.generated_tokens / report.seconds, 2),
            "generated_tokens": report.generated_tokens}


class _serve:
    """`transformers serve FOLDER` on 127.0.0.1 (a free port) while in the `with` block; stopped by its PID."""

    def __init__(self, folder: Path, extra: list[str]):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        executable = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
        self.command = [executable, "serve", str(folder), "--host", "127.0.0.1", "--port", str(self.port),
                        "--log-level", "warning", *extra]

    def __enter__(self) -> str:
        self.process = subprocess.Popen(self.command)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return f"http://127.0.0.1:{self.port}/v1"
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"`{' '.join(self.command)}` did not start")

    def __exit__(self, *exc) -> None:
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _machine() -> dict:
    import torch
    import transformers

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "cuda": torch.cuda.is_available(),
            "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
            "load_average_before": os.getloadavg()}


if __name__ == "__main__":
    main()
