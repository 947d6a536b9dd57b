"""The full-size benchmark on one GPU (H100/H200), in one command: CliniFact with every training row (1260), every
validation row (316, calibration and threshold) and every test row (394, all explained), the five methods, seeds 0, 1
and 2, the embedded SmolLM2-135M-Instruct in bf16; then `benchmark_speed.py --preset gpu` without and (where
liger-kernel is carried) with Liger kernels. Results: `benchmark_gpu.json` (device name, per-seed rows, per-row
predictions), `benchmark_gpu.md`, the plots and `speed_gpu*.json`, written to $OUT; `--collect` copies them into
examples/benchmark_results/ and pastes the tables into the README.

The device machine has torch, transformers 5.17 (too old), peft and accelerate, but not trl, datasets, evaluate or
gguf, no network, and takes 64 MiB per call; the GGUF model file alone is 98 MB. The plan, every step of which
`--dry_run` (or `CPU=1`) and tests/test_benchmark.py run on this CPU:

1. Here: `python examples/gpu/benchmark_gpu.py --pack` writes `.whl/` (git-ignored): `.whl/call1/` = the wheels
   the machine lacks (`pip download` for CPython 3.12, manylinux; transformers, trl, datasets, dill, multiprocess,
   gguf, evaluate, peft, liger-kernel), CliniFact as `clinifact.tar.xz` and the first 40 MiB of the GGUF file;
   `.whl/call2/` = the rest of the GGUF file; `.whl/manifest.json` = sizes and SHA-256 of the parts and the whole.
2. Device call 1 (carry `.whl/call1`, `.whl/manifest.json`): `python3 examples/gpu/benchmark_gpu.py --stage`
   installs the wheels with `pip --no-index --no-deps --target .whl/site`, unpacks the data and keeps part 1 in
   `.whl/model/`, all git-ignored, so they stay on the machine while it is warm; it prints the versions it will use.
3. Device call 2, at once (the machine stays warm 30 s after a call; carry `.whl/call2`):
   `python3 examples/gpu/benchmark_gpu.py --run` joins the parts, checks the SHA-256, runs the benchmark and the
   speed scripts with `.whl/site` first on PYTHONPATH (transformers 5.24 over the image's), each under the time left of
   `--budget_minutes` (9), and writes the results to $OUT. A method's result is saved as soon as it finishes
   (`benchmark_clinifact.py` resumes), so a run cut short continues in a third call while the machine is warm.
4. Here: `python examples/gpu/benchmark_gpu.py --collect /work/.device/<files_at>` copies the results into
   examples/benchmark_results/ and writes the README's GPU block and the speed table's GPU column.

Time on one H200, extrapolated (no GPU was lent while this was written). The CPU dry run (12 training rows, 1 step
of 2, 8 test rows, 8 new tokens, 3 seeds) took, in CPU seconds of one thread per method and seed: prompting 14
(computed once for the three seeds), SeqCls 19, SFT 22, CLSGen 16, TF-IDF 0.1; the tiny-size CPU benchmark measured
~2.2 s per trained row (SFT ~1.45x) and ~1 s per prompt prefill. The full size per seed: 1260 rows x 2 epochs x 3
trained methods, ~2,800 prefills (316 + 394 per method) and 394 x 4 explanations of <= 96 tokens. On the CPU that is
~6 hours per seed; on an H200 a 135M model is launch-bound, not FLOP-bound: at ~0.15 s per LoRA step of 16 rows
(158 steps: ~25 s per method and seed), ~2 s per 64-row batch of 96 decoded tokens (~15 s per method and seed) and
~1 s per 64-row prefill batch, the three seeds take ~4 minutes, plus ~1 minute of loading and scoring. Each speed run
(Llama-3.1-8B shape, random init) takes ~1.5-2 minutes. Total ~8 minutes; the budget guard skips the Liger run if
it would not fit. If the first run shows more, rerun with `--num_train_epochs 1` (epochs are cut, rows never).

Usage:

    python examples/gpu/benchmark_gpu.py --pack                         # here, once
    # device call 1: carry [".whl/call1", ".whl/manifest.json"]
    python3 examples/gpu/benchmark_gpu.py --stage
    # device call 2, right after: carry [".whl/call2"], timeout_s 600
    python3 examples/gpu/benchmark_gpu.py --run
    python examples/gpu/benchmark_gpu.py --collect /work/.device/...    # here, then commit
    CPU=1 python examples/gpu/benchmark_gpu.py --dry_run --results_dir /tmp/gpu-dry --readme /tmp/README.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
CARRY = REPO / ".whl"  # git-ignored: what travels to the device machine and what is staged there
WHEELS = ["transformers==5.24.0", "trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19",
          "gguf==0.19.0", "evaluate==0.4.6", "peft==0.21.2", "liger-kernel==0.8.5"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
FIRST_PART_BYTES = 40 * 2**20  # call 1 also carries ~17 MB of wheels, the data and the tree: under 64 MiB
CALL_LIMIT_BYTES, TREE_MARGIN_BYTES = 64 * 2**20, 4 * 2**20  # a call's limit; what the working tree may take of it
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
README_START, README_END = "<!-- benchmark-gpu:start -->", "<!-- benchmark-gpu:end -->"
FULL_SIZE = ["--max_train_samples", "0", "--max_validation_samples", "0", "--max_eval_samples", "0",
             "--max_explained_samples", "0", "--seeds", "0", "1", "2", "--bf16", "true", "--num_train_epochs", "2",
             "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "1", "--max_prompt_tokens", "512",
             "--max_length", "640", "--max_new_tokens", "96", "--retention_max_new_tokens", "64",
             "--predict_batch_size", "64", "--logging_steps", "20"]
DRY_RUN = ["--max_train_samples", "12", "--max_validation_samples", "6", "--max_eval_samples", "8",
           "--max_explained_samples", "0", "--seeds", "0", "1", "2", "--max_steps", "1",
           "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--max_prompt_tokens", "128",
           "--max_length", "192", "--max_new_tokens", "8", "--retention_max_new_tokens", "8",
           "--bootstrap_samples", "100"]
RESULT_FILES = ["benchmark_gpu.json", "benchmark_gpu.md", "roc_curves_gpu.png", "reliability_diagrams_gpu.png",
                "speed_gpu.json", "speed_gpu_liger.json"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_file(path: Path, first: Path, second: Path, first_bytes: int) -> None:
    """`path` as two files: its first `first_bytes` bytes and the rest."""
    data = path.read_bytes()
    first.parent.mkdir(parents=True, exist_ok=True)
    second.parent.mkdir(parents=True, exist_ok=True)
    first.write_bytes(data[:first_bytes])
    second.write_bytes(data[first_bytes:])


def join_parts(parts: list[Path], target: Path, expected_sha256: str) -> Path:
    """The parts concatenated into `target` (through a temporary file), refused unless the SHA-256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    if sha256(partial) != expected_sha256:
        partial.unlink()
        raise SystemExit(f"{target.name}: the joined parts do not match the packed file's SHA-256; pack again.")
    os.replace(partial, target)
    return target


def pack(carry: Path, gguf: Path, data_dir: Path, download: bool = True) -> dict:
    """Step 1 (here): the wheels, the data and the model in two halves under `carry`, with a manifest."""
    call1, call2 = carry / "call1", carry / "call2"
    call1.mkdir(parents=True, exist_ok=True)
    if download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS],
                        "-d", str(call1 / "wheels"), *WHEELS], check=True)
    with tarfile.open(call1 / "clinifact.tar.xz", "w:xz") as archive:
        for name in ("train.csv", "validation.csv", "test.csv"):
            archive.add(data_dir / name, arcname=f"clinifact/{name}")
    split_file(gguf, call1 / f"{GGUF_NAME}.part1", call2 / f"{GGUF_NAME}.part2", FIRST_PART_BYTES)
    sizes = {str(path.relative_to(carry)): sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
             for path in (call1, call2)}
    over = {call: size for call, size in sizes.items() if size > CALL_LIMIT_BYTES - TREE_MARGIN_BYTES}
    if over:
        raise SystemExit(f"{over}: over what one device call carries beside the working tree; lower FIRST_PART_BYTES.")
    manifest = {"gguf": GGUF_NAME, "sha256": sha256(gguf), "bytes": gguf.stat().st_size, "call_bytes": sizes}
    (carry / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def install_wheels(wheels: Path, site: Path, *, target_python: str | None = None) -> None:
    """Step 2: the carried wheels into `site` (no index, no dependencies: exactly the carried set). `target_python`
    ("3.12") installs wheels built for another Python than this one (the check run here)."""
    flags = ["--python-version", target_python, "--only-binary=:all:", *[f"--platform={p}" for p in PLATFORMS]] \
        if target_python else []
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *flags,
                    *map(str, sorted(wheels.glob("*.whl")))], check=True)


def stage(carry: Path) -> None:
    """Step 2 (device call 1): install the wheels, unpack the data, keep model part 1: all under `carry`."""
    install_wheels(carry / "call1" / "wheels", carry / "site")
    with tarfile.open(carry / "call1" / "clinifact.tar.xz") as archive:
        archive.extractall(carry / "data", filter="data")
    (carry / "model").mkdir(exist_ok=True)
    shutil.copy(carry / "call1" / f"{GGUF_NAME}.part1", carry / "model" / f"{GGUF_NAME}.part1")
    shutil.copy(carry / "manifest.json", carry / "model" / "manifest.json")
    subprocess.run([sys.executable, "-c", "import torch, transformers, trl, datasets, peft, gguf; "
                    "print('staged:', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() "
                    "else 'no GPU', 'transformers', transformers.__version__, 'trl', trl.__version__)"],
                   env=_env(carry / "site"), check=True)
    print("Stage done: start call 2 (--run, carry .whl/call2) now, while the machine is warm.")


def _env(site: Path | None) -> dict:
    paths = [str(site)] if site is not None else []
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(REPO), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_step(command: list[str], deadline: float, log: Path, env: dict) -> bool:
    """`command` with the time left until `deadline`; its output appended to `log`. True if it finished."""
    left = deadline - time.time()
    if left < 30:
        print(f"Skipped (budget spent): {' '.join(command)}")
        return False
    print(f"$ {' '.join(command)}  [{left:.0f} s left]", flush=True)
    with log.open("a") as output:
        try:
            finished = subprocess.run(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
                                      timeout=left).returncode == 0
        except subprocess.TimeoutExpired:
            finished = False
    print(("done" if finished else "FAILED or cut short (see the log)") + f": {command[1]}", flush=True)
    return finished


def run(model: Path, data_dir: Path, work_dir: Path, out_dir: Path, budget_minutes: float, dry_run: bool,
        site: Path | None, extra: list[str]) -> list[str]:
    """Step 3: the benchmark, then the speed runs (without, then with Liger), within the budget; results in
    `out_dir`. Returns the result files written."""
    deadline = time.time() + budget_minutes * 60
    env, log = _env(site), out_dir / "run.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    bench_dir = work_dir / "clinifact"
    sizes = DRY_RUN if dry_run else FULL_SIZE
    run_step([sys.executable, "examples/benchmark_clinifact.py", "--output_dir", str(bench_dir), "--data_dir",
              str(data_dir), "--model_name_or_path", str(model), *sizes, *extra], deadline, log, env)
    for name in ("benchmark_results.json", "benchmark_results.md", "roc_curves.png", "reliability_diagrams.png"):
        if (bench_dir / name).is_file():
            target = name.replace("benchmark_results", "benchmark").replace(".", "_gpu.")
            shutil.copy(bench_dir / name, out_dir / target)
    preset = ["--preset", "tiny"] if dry_run else ["--preset", "gpu"]
    liger = [False] if dry_run or not _importable("liger_kernel", env) else [False, True]
    for use_liger in liger:
        speed_dir = work_dir / ("speed-liger" if use_liger else "speed")
        finished = run_step([sys.executable, "examples/benchmark_speed.py", *preset, "--output_dir", str(speed_dir),
                             "--tokenizer_name_or_path", str(bench_dir / "base_model"), "--use_liger_kernel",
                             str(use_liger).lower()], deadline, log, env)
        for saved in speed_dir.glob("speed_*.json") if finished else []:
            shutil.copy(saved, out_dir / f"speed_gpu{'_liger' if use_liger else ''}.json")
    return [name for name in RESULT_FILES if (out_dir / name).is_file()]


def _importable(module: str, env: dict) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True).returncode == 0


def collect(files_at: Path, results_dir: Path, readme: Path) -> None:
    """Step 4 (here): the results into `results_dir`; the README's GPU benchmark block and the speed table."""
    sys.path.insert(0, str(REPO / "examples"))
    import benchmark_speed
    from benchmark.report import paste_into_readme

    results_dir.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        if (files_at / name).is_file():
            shutil.copy(files_at / name, results_dir / name)
    text = (results_dir / "benchmark_gpu.md").read_text(encoding="utf-8")
    saved = json.loads((results_dir / "benchmark_gpu.json").read_text(encoding="utf-8"))
    device = saved["config"]["device"]
    size = "tiny-size dry run" if device.startswith("cpu") else "full-size run"
    heading = f"GPU ({device}): {size} of `examples/gpu/benchmark_gpu.py`."
    liger = results_dir / "speed_gpu_liger.json"
    if liger.is_file():
        steps = json.loads(liger.read_text())["training"]
        heading += " With Liger kernels, train step s (CLSGen / TRL SFT / SeqCls): " + " / ".join(
            f"{steps[kind]['median_step_s']:.3f}" for kind in benchmark_speed.TRAINERS) + "."
    paste_into_readme(readme, f"{heading}\n\n{text}", README_START, README_END)
    if (results_dir / "speed_gpu.json").is_file():
        table = benchmark_speed.report(results_dir)
        (results_dir / "speed.md").write_text(table)
        benchmark_speed.paste_into_readme(readme, table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument("--pack", action="store_true", help="Here: write .whl/call1, .whl/call2 and the manifest.")
    steps.add_argument("--stage", action="store_true", help="Device call 1: install wheels, unpack data, keep part 1.")
    steps.add_argument("--run", action="store_true", help="Device call 2: join the model, run, write $OUT.")
    steps.add_argument("--collect", metavar="FILES_AT", help="Here: copy the results back, paste the README tables.")
    steps.add_argument("--dry_run", action="store_true", help="Here: every step at tiny size on the CPU (CPU=1).")
    parser.add_argument("--budget_minutes", type=float, default=9.0, help="Time for --run (both parts).")
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "clinifact"))
    parser.add_argument("--work_dir", default=str(CARRY / "work"), help="Scratch folder of the runs.")
    parser.add_argument("--results_dir", help="Default: examples/benchmark_results (dry run: in --work_dir).")
    parser.add_argument("--readme", help="Default: README.md (dry run: a copy in --work_dir).")
    args, extra = parser.parse_known_args(argv)  # anything else goes to benchmark_clinifact.py
    if args.pack:
        from clsgen_hf.loading import default_model_path

        print(json.dumps(pack(CARRY, default_model_path(), Path(args.data_dir)), indent=2))
    elif args.stage:
        stage(CARRY)
    elif args.run:
        manifest = json.loads((CARRY / "model" / "manifest.json").read_text())
        parts = [CARRY / "model" / f"{GGUF_NAME}.part1", CARRY / "call2" / f"{GGUF_NAME}.part2"]
        model = join_parts(parts, CARRY / "model" / GGUF_NAME, manifest["sha256"])
        out_dir = Path(os.environ.get("OUT", CARRY / "out"))
        print(run(model, CARRY / "data" / "clinifact", Path(args.work_dir), out_dir, args.budget_minutes, False,
                  CARRY / "site", extra))
    elif args.collect:
        collect(Path(args.collect), Path(args.results_dir or REPO / "examples" / "benchmark_results"),
                Path(args.readme or REPO / "README.md"))
    elif args.dry_run or os.environ.get("CPU") == "1":
        dry_run(args, extra)
    else:
        parser.print_help()


def dry_run(args: argparse.Namespace, extra: list[str]) -> None:
    """Every step here, at tiny size, inside `--work_dir`: pack (wheels already in .whl/ are reused, none downloaded),
    install them into a fresh folder, split and join the model, run on the CPU, collect (into `--results_dir` and
    `--readme` if given: never the committed results by default)."""
    from clsgen_hf.loading import default_model_path

    work = Path(args.work_dir)
    carry = work / "carry"
    if (CARRY / "call1" / "wheels").is_dir():
        shutil.copytree(CARRY / "call1" / "wheels", carry / "call1" / "wheels", dirs_exist_ok=True)
    manifest = pack(carry, default_model_path(), Path(args.data_dir), download=False)
    if any((carry / "call1" / "wheels").glob("*.whl")):
        install_wheels(carry / "call1" / "wheels", work / "site", target_python="3.12")
    model = join_parts([carry / "call1" / f"{GGUF_NAME}.part1", carry / "call2" / f"{GGUF_NAME}.part2"],
                       work / "model" / GGUF_NAME, manifest["sha256"])
    written = run(model, Path(args.data_dir), work, work / "out", args.budget_minutes * 6, True, None,
                  ["--use_cpu", "true", "--bf16", "false", *extra])
    print(f"{written}; call bytes: {manifest['call_bytes']}")
    readme = Path(args.readme or work / "README.md")
    if args.readme is None:
        shutil.copy(REPO / "README.md", readme)
    collect(work / "out", Path(args.results_dir or work / "results"), readme)


if __name__ == "__main__":
    main()
