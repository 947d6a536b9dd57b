# /// script
# requires-python = ">=3.11"
# dependencies = ["clsgen_hf"]
# ///
"""Speed, measured side by side: what CLSGen's second head costs, and how close it runs to what the machine allows.

One run measures, on the same weights, rows, batch and precision (so that the machine's noise cancels in the ratios):

1. Training: median optimizer-step time, tokens/s and peak memory of `CLSGenTrainer`, of TRL's `SFTTrainer` (its
   default loss) and of transformers' `Trainer` with `LlamaForSequenceClassification` + LoRA (+ `score`), over
   `--measured_steps` steps after `--warmup_steps`. Rows are `--prompt_tokens` + `--completion_tokens` ids, the LM
   loss on the completion. Peak memory: resident set (CPU) or `torch.cuda.max_memory_allocated` (GPU).
2. Prediction: `clsgen_hf.predict` (probability + explanation from one prefill) against plain `generate` of the same
   prompts and new-token count, and against `generate` followed by a second forward through a sequence classifier.
3. Predicting a file: rows/s of `predict_file` (what `clsgen-hf predict` runs) over `--file_rows` rows of shuffled
   lengths, probabilities only (`max_new_tokens=0`, batched by tokens) and with explanations.
4. Synthesis: rows/s of `synthesize_explanations` with the local teacher against plain batched `generate` of the same
   teacher conversations.
5. Start-up: median wall time (of 3, fresh processes) of `clsgen-hf --help`, `clsgen-hf train --help` (without and
   with its help cache) and `python -c "import clsgen_hf"`, beside `trl --help`.
6. The roofline: the machine's matmul rate (float32 on CPU, bf16 on GPU) and memory bandwidth. Training tokens/s is
   reported as a share of the FLOP limit and decode time per token as a multiple of the bandwidth floor; the JSON
   states both formulas.

Outputs: `speed_<cpu|gpu>.json` (every figure, the settings, versions, device, load) and `speed.md` (the table of
every `speed_*.json` in `--results_dir`; a column without its JSON reads "unmeasured"); `--readme` pastes the table
between `<!-- speed:start -->` and `<!-- speed:end -->`.

Usage:

    # CPU (the committed run): embedded SmolLM2-135M, float32, one thread
    OMP_NUM_THREADS=1 python examples/benchmark_speed.py --preset cpu --results_dir examples/benchmark_results \\
        --readme README.md

    # GPU: the Llama-3.1-8B shape from a random init, bf16, seq 2048 (LM labels on the last 256 tokens). The
    # tokenizer folder is written by a CPU run (no GGUF reader needed there); a machine without trl, datasets or
    # liger-kernel installs them first (pip install -c constraints.txt trl datasets liger-kernel, or from wheels).
    python examples/benchmark_speed.py --preset gpu --tokenizer_name_or_path outputs/benchmark-speed/tokenizer \
        --results_dir examples/benchmark_results --readme README.md --use_liger_kernel true

    # Seconds-long smoke run on a tiny random Llama (what the test runs)
    python examples/benchmark_speed.py --preset tiny --output_dir /tmp/speed
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, LlamaConfig, LlamaForCausalLM


sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed.measure import matmul_rate, memory_bandwidth, shaped_matmul_rate  # noqa: E402
from speed.workloads import (  # noqa: E402
    LORA_TARGETS,
    ModelSource,
    file_prediction_speed,
    prediction_speed,
    sized_prompts,
    synthesis_speed,
    token_rows,
    train_speed,
)

import clsgen_hf  # noqa: E402
from clsgen_hf import load_model, load_tokenizer  # noqa: E402
from clsgen_hf.json_files import json_safe  # noqa: E402


README_START, README_END = "<!-- speed:start -->", "<!-- speed:end -->"
TRAINERS = {"clsgen": "CLSGen", "sft": "TRL SFT", "seqcls": "SeqCls + LoRA"}
SHAPES = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, rms_norm_eps=1e-5),
}
PRESETS = {
    "cpu": dict(shape="smollm2", precision="float32", threads=1, prompt_tokens=320, completion_tokens=64,
                batch_size=4, warmup_steps=2, measured_steps=5, new_tokens=64, predict_batch_size=4,
                predict_repeats=4, file_rows=64, synthesis_rows=8, synthesis_batch_size=4, repeats=2, matmul_size=2048,
                bandwidth_gib=1.0),
    "gpu": dict(shape="llama-3.1-8b", precision="bf16", threads=0, prompt_tokens=1792, completion_tokens=256,
                batch_size=4, warmup_steps=3, measured_steps=5, new_tokens=64, predict_batch_size=1,
                predict_repeats=3, file_rows=1024, synthesis_rows=16, synthesis_batch_size=8, repeats=2,
                matmul_size=8192, bandwidth_gib=4.0),
    "tiny": dict(shape="tiny", precision="float32", threads=1, prompt_tokens=64, completion_tokens=8, batch_size=2,
                 warmup_steps=1, measured_steps=5, new_tokens=4, predict_batch_size=2, predict_repeats=1,
                 file_rows=16, synthesis_rows=4, synthesis_batch_size=2, repeats=1, matmul_size=256,
                 bandwidth_gib=0.05),
}
GOALS = {  # (figure, comparison, target): what the issue asks of the CPU run
    "clsgen_flop_fraction": (">=", 0.85),
    "predict_vs_generate": ("<=", 1.03),
    "synthesis_vs_generate": (">=", 0.9),
}


@dataclass
class SpeedArguments:
    """Options of the speed benchmark; those left unset come from `--preset`."""

    preset: str = field(default="cpu", metadata={"help": f"Sizes and model: one of {list(PRESETS)}."})
    shape: str | None = field(default=None, metadata={
        "help": f"'smollm2' (the embedded model, or --model_name_or_path) or a random init of {list(SHAPES)}."})
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "A Llama causal LM (folder, id or .gguf) for shape 'smollm2'; default the embedded SmolLM2-135M."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={
        "help": "Tokenizer of the random-init shapes (default the embedded SmolLM2's)."})
    output_dir: str = field(default="outputs/benchmark-speed", metadata={
        "help": "Scratch folder: the converted base model, trainer folders."})
    results_dir: str | None = field(default=None, metadata={
        "help": "Where speed_<device>.json and speed.md go (default --output_dir)."})
    readme: str | None = field(default=None, metadata={
        "help": f"Paste the table into this file, between {README_START!r} and {README_END!r}."})
    sections: list[str] = field(default_factory=lambda: ["roofline", "training", "prediction", "files", "synthesis",
                                                        "startup"],
                                metadata={"help": "Sections to run."})
    precision: str | None = field(default=None, metadata={"help": "'float32' or 'bf16'."})
    threads: int | None = field(default=None, metadata={"help": "torch threads on CPU (0: leave torch's default)."})
    prompt_tokens: int | None = field(default=None, metadata={"help": "Prompt tokens per row (training, prediction)."})
    completion_tokens: int | None = field(default=None, metadata={"help": "Completion tokens per row (LM labels)."})
    batch_size: int | None = field(default=None, metadata={"help": "Training micro-batch (no accumulation)."})
    lora_r: int = field(default=16, metadata={"help": f"LoRA rank on {LORA_TARGETS}; alpha = 2r."})
    warmup_steps: int | None = field(default=None, metadata={"help": "Training steps not measured."})
    measured_steps: int | None = field(default=None, metadata={"help": "Training steps measured (median)."})
    new_tokens: int | None = field(default=None, metadata={"help": "Tokens generated per prompt (exactly)."})
    predict_batch_size: int | None = field(default=None, metadata={"help": "Prompts per prediction batch."})
    predict_repeats: int | None = field(default=None, metadata={"help": "Interleaved repeats of each prediction."})
    file_rows: int | None = field(default=None, metadata={"help": "Rows of the file that `predict_file` predicts."})
    synthesis_rows: int | None = field(default=None, metadata={"help": "Rows explained per synthesis run."})
    synthesis_batch_size: int | None = field(default=None, metadata={"help": "Conversations per teacher call."})
    repeats: int | None = field(default=None, metadata={"help": "Interleaved repeats of each synthesis run."})
    matmul_size: int | None = field(default=None, metadata={"help": "Side of the square matmul of the roofline."})
    bandwidth_gib: float | None = field(default=None, metadata={"help": "GiB summed to measure memory bandwidth."})
    use_liger_kernel: bool = field(default=False, metadata={
        "help": "Pass use_liger_kernel to every trainer (needs liger-kernel; GPU)."})

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {list(PRESETS)}, got {self.preset!r}.")
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.measured_steps < 5 and self.preset != "tiny":
            raise ValueError("--measured_steps must be >= 5: a median of fewer steps is noise.")


def source_for(args: SpeedArguments, device: torch.device):
    """The weights every workload loads (and their config), and the tokenizer."""
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    if args.shape == "smollm2":
        folder = Path(args.model_name_or_path or Path(args.output_dir) / "base_model")
        if args.model_name_or_path is None and not (folder / "config.json").is_file():
            lm = load_model(None, model_class=LlamaForCausalLM)  # the embedded GGUF, de-quantized once
            lm.save_pretrained(folder)
            load_tokenizer(None, eos_token_id=lm.config.eos_token_id).save_pretrained(folder)
        tokenizer = load_tokenizer(str(folder))
        tokenizer.save_pretrained(Path(args.output_dir) / "tokenizer")  # for --preset gpu: a few MB, no GGUF reader
        return ModelSource(device, dtype, folder=str(folder)), LlamaConfig.from_pretrained(folder), tokenizer
    tokenizer = load_tokenizer(args.tokenizer_name_or_path)
    config = dict(vocab_size=len(tokenizer), **SHAPES[args.shape])
    config.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=1)
    return ModelSource(device, dtype, config=config), LlamaConfig(**config), tokenizer


def flops_per_token(config: LlamaConfig, seq: int, lm_tokens: int, lora_r: int) -> dict:
    """Model FLOPs per trained token of LoRA training, and the terms of the formula."""
    d, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, ffn), (d, ffn), (ffn, d)]
    frozen = layers * sum(i * o for i, o in shapes)
    lora = layers * sum(lora_r * (i + o) for i, o in shapes)
    head = config.vocab_size * d * lm_tokens / seq  # per token, averaged over the row
    attention = 6 * layers * q * (seq + 1)  # 12 * layers * q * mean causal context (seq + 1) / 2
    return {"flops_per_token": 4 * (frozen + head) + 6 * lora + attention, "frozen_matmul_parameters": frozen,
            "lora_parameters": lora, "lm_head_parameters_per_token": head, "attention_flops_per_token": attention,
            "formula": "4 * (N_frozen + V*d * lm_tokens/seq) + 6 * N_lora + 6 * L * (heads*head_dim) * (seq + 1): "
                       "forward 2N and input gradients 2N through the frozen base, weight gradients (2N more) for "
                       "LoRA only, the LM head on the labelled positions only, causal attention (QK^T and AV, "
                       "backward twice the forward); embeddings and norms uncounted"}


def run(args: SpeedArguments, command: str = "") -> dict:
    """Run the sections; returns the payload written to `<results_dir>/speed_<device>.json`."""
    started, load_before = time.time(), os.getloadavg()
    device = torch.device("cuda" if torch.cuda.is_available() and args.preset != "tiny" else "cpu")
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    source, config, tokenizer = source_for(args, device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    seq = args.prompt_tokens + args.completion_tokens
    payload = {"roofline": {}, "training": {}, "prediction": {}, "files": {}, "synthesis": {}, "startup": {}}

    if "roofline" in args.sections:
        roof = payload["roofline"]
        roof["matmul_flops_per_s"] = matmul_rate(device, dtype, args.matmul_size)
        roof["layer_matmul_flops_per_s"] = shaped_matmul_rate(device, dtype, args.batch_size * seq,
                                                              config.hidden_size, config.intermediate_size)
        roof["memory_bytes_per_s"] = memory_bandwidth(device, args.bandwidth_gib)
    if "training" in args.sections:
        rows = token_rows(len(tokenizer), args.batch_size * (args.warmup_steps + args.measured_steps),
                          args.prompt_tokens, args.completion_tokens)
        settings = dict(per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                        max_steps=args.warmup_steps + args.measured_steps, logging_steps=10**6,
                        activation_checkpointing=False, bf16=args.precision == "bf16",
                        use_cpu=device.type == "cpu", **({"use_liger_kernel": True} if args.use_liger_kernel else {}))
        for kind in TRAINERS:
            payload["training"][kind] = train_speed(kind, source, rows, tokenizer, settings, args.lora_r,
                                                    args.warmup_steps, output_dir)
        payload["flops"] = {
            kind: flops_per_token(config, seq, 0 if kind == "seqcls" else args.completion_tokens, args.lora_r)
            for kind in TRAINERS}
    if "prediction" in args.sections:
        prompts = sized_prompts(tokenizer, args.predict_batch_size, args.prompt_tokens)
        payload["prediction"] = prediction_speed(source, tokenizer, prompts, args.new_tokens, args.predict_repeats)
    if "files" in args.sections:
        payload["files"] = file_prediction_speed(source, tokenizer, args.file_rows, args.prompt_tokens,
                                                 args.new_tokens, args.predict_batch_size, output_dir)
    if "synthesis" in args.sections:
        prompts = sized_prompts(tokenizer, args.synthesis_rows, args.prompt_tokens, seed=1)
        payload["synthesis"] = synthesis_speed(source, tokenizer, prompts, args.synthesis_batch_size, args.new_tokens,
                                               args.repeats)

    if "startup" in args.sections:
        payload["startup"] = startup_speed(repeats=1 if args.preset == "tiny" else 3)

    payload["ratios"] = ratios(payload)
    payload["goals"] = {name: {"value": payload["ratios"].get(name), "target": f"{op} {target}",
                               "met": _meets(payload["ratios"].get(name), op, target)}
                        for name, (op, target) in GOALS.items()}
    payload["config"] = configuration(args, device, command, started, load_before)
    results_dir = Path(args.results_dir or output_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"speed_{device.type.replace('cuda', 'gpu')}.json").write_text(
        json.dumps(json_safe(payload), indent=2, default=str) + "\n")
    table = report(results_dir)
    (results_dir / "speed.md").write_text(table)
    if args.readme:
        paste_into_readme(Path(args.readme), table)
    print("\n" + table)
    return payload


def startup_speed(repeats: int) -> dict:
    """Median seconds from process start to exit of each start-up command (the console scripts beside this Python);
    `train --help` without its help cache (the live parser, which fills the cache) and with it."""
    scripts = Path(sys.executable).parent
    commands = {
        "clsgen-hf --help": [str(scripts / "clsgen-hf"), "--help"],
        "clsgen-hf train --help (no cache)": [str(scripts / "clsgen-hf"), "train", "--help"],
        "clsgen-hf train --help (cached)": [str(scripts / "clsgen-hf"), "train", "--help"],
        "import clsgen_hf": [sys.executable, "-c", "import clsgen_hf"],
        "trl --help": [str(scripts / "trl"), "--help"],
    }
    seconds = {}
    with tempfile.TemporaryDirectory() as hf_home:  # holds the help cache, emptied before each "no cache" run
        for name, command in commands.items():
            times = []
            for _ in range(repeats):
                if name.endswith("(no cache)"):
                    shutil.rmtree(Path(hf_home) / "clsgen_hf", ignore_errors=True)
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, env={**os.environ, "HF_HOME": hf_home})
                times.append(time.perf_counter() - start)
            seconds[name] = sorted(times)[len(times) // 2]
    return seconds


def ratios(payload: dict) -> dict:
    """The figures the goals and the table read, derived from the measurements."""
    out, train, roof = {}, payload["training"], payload["roofline"]
    if train:
        out["clsgen_vs_sft_step"] = train["clsgen"]["median_step_s"] / train["sft"]["median_step_s"]
        out["clsgen_vs_sft_memory"] = train["clsgen"]["peak_memory_gib"] / train["sft"]["peak_memory_gib"]
        out["clsgen_vs_seqcls_step"] = train["clsgen"]["median_step_s"] / train["seqcls"]["median_step_s"]
        if roof:
            for kind in TRAINERS:
                flops = payload["flops"][kind]["flops_per_token"]
                out[f"{kind}_flop_fraction"] = train[kind]["tokens_per_s"] * flops / roof["matmul_flops_per_s"]
    pred = payload["prediction"]
    if pred:
        out["predict_vs_generate"] = pred["predict_s"] / pred["generate_s"]
        out["generate_then_forward_vs_generate"] = pred["generate_then_forward_s"] / pred["generate_s"]
        if roof:
            floor = (pred["weight_bytes"] + pred["mean_cache_bytes"]) / roof["memory_bytes_per_s"]
            out["decode_floor_s_per_token"] = floor
            out["generate_decode_vs_floor"] = pred["generate_decode_s_per_token"] / floor
            out["predict_decode_vs_floor"] = pred["predict_decode_s_per_token"] / floor
    if payload["synthesis"]:
        synth = payload["synthesis"]
        out["synthesis_vs_generate"] = synth["synthesize_rows_per_s"] / synth["generate_rows_per_s"]
    return out


def _meets(value, op: str, target: float) -> bool | None:
    return None if value is None else (value >= target if op == ">=" else value <= target)


def configuration(args: SpeedArguments, device: torch.device, command: str, started: float, load_before) -> dict:
    import peft
    import transformers
    import trl

    if device.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").is_file() else ""
        name = f"cpu: {cpu} ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"
    return {"command": command, "date": time.strftime("%Y-%m-%d"), "device": name,
            "model": args.model_name_or_path or ("SmolLM2-135M-Instruct (embedded GGUF)" if args.shape == "smollm2"
                                                 else f"{args.shape} shape, random init"),
            "arguments": asdict(args), "seconds": round(time.time() - started, 1),
            "load_average": {"before": list(load_before), "after": list(os.getloadavg()), "cpus": os.cpu_count()},
            "versions": {"python": platform.python_version(), "clsgen_hf": clsgen_hf.__version__,
                         "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                         "peft": peft.__version__}}


# ------------------------------------------------------------------------------------------------------ report
def _cells(payload: dict | None) -> dict[str, str]:
    """Table row label -> this run's cell."""
    if payload is None:
        return {}
    t, r, p, s, roof = (payload[k] for k in ("training", "ratios", "prediction", "synthesis", "roofline"))
    cells = {}
    join = lambda fmt, key: " / ".join(format(t[k][key], fmt) for k in TRAINERS)  # noqa: E731
    if t:
        cells["Train step s (CLSGen / TRL SFT / SeqCls)"] = join(".2f", "median_step_s")
        cells["Train tokens/s"] = join(".0f", "tokens_per_s")
        cells["Peak memory GiB"] = join(".2f", "peak_memory_gib")
        cells["CLSGen / TRL SFT: step time, peak memory"] = (
            f"{r['clsgen_vs_sft_step']:.2f}x, {r['clsgen_vs_sft_memory']:.2f}x")
    if "clsgen_flop_fraction" in r:
        cells["Share of the FLOP limit"] = " / ".join(f"{r[f'{k}_flop_fraction']:.2f}" for k in TRAINERS)
    if p:
        cells["Predict s per batch (predict / generate / generate + forward)"] = (
            f"{p['predict_s']:.2f} / {p['generate_s']:.2f} / {p['generate_then_forward_s']:.2f}")
        cells["predict, generate + forward vs generate"] = (
            f"{r['predict_vs_generate']:.2f}x, {r['generate_then_forward_vs_generate']:.2f}x")
    if "decode_floor_s_per_token" in r:
        cells["Decode ms/token (generate / predict), bandwidth floor"] = (
            f"{p['generate_decode_s_per_token'] * 1e3:.1f} / {p['predict_decode_s_per_token'] * 1e3:.1f}, "
            f"{r['decode_floor_s_per_token'] * 1e3:.1f} ({r['generate_decode_vs_floor']:.2f}x / "
            f"{r['predict_decode_vs_floor']:.2f}x)")
    if files := payload.get("files"):
        cells["Predict a file, rows/s (probabilities only / explanations)"] = (
            f"{files['probabilities_rows_per_s']:.1f} / {files['explanations_rows_per_s']:.2f}")
    if s:
        cells["Synthesis rows/s (synthesize / generate)"] = (
            f"{s['synthesize_rows_per_s']:.3f} / {s['generate_rows_per_s']:.3f} ({r['synthesis_vs_generate']:.2f}x)")
    if payload.get("startup"):
        cells["Start-up s (" + " / ".join(payload["startup"]) + ")"] = " / ".join(
            f"{seconds:.2f}" for seconds in payload["startup"].values())
    if roof:
        cells["Matmul GFLOP/s (square / layer shape), bandwidth GB/s"] = (
            f"{roof['matmul_flops_per_s'] / 1e9:.1f} / {roof['layer_matmul_flops_per_s'] / 1e9:.1f}, "
            f"{roof['memory_bytes_per_s'] / 1e9:.1f}")
    return cells


def markdown_table(runs: dict[str, dict | None]) -> str:
    """Rows: the figures; columns: CPU and GPU (a run absent from `runs` is unmeasured)."""
    cells = {name: _cells(payload) for name, payload in runs.items()}
    labels = list(dict.fromkeys(label for column in cells.values() for label in column))
    lines = ["| | " + " | ".join(runs) + " |", "|---|" + "---:|" * len(runs)]
    for label in labels:
        row = [cells[name].get(label, "unmeasured" if runs[name] is None else "n/a") for name in runs]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def report(results_dir: Path) -> str:
    """The Markdown of `speed.md`: the table of the runs saved in `results_dir`, and how each was made."""
    runs = {}
    for name in ("cpu", "gpu"):
        path = results_dir / f"speed_{name}.json"
        runs[name.upper()] = json.loads(path.read_text()) if path.is_file() else None
    notes = []
    for name, payload in runs.items():
        if payload is None:
            notes.append(f"{name}: unmeasured.")
            continue
        c, a = payload["config"], payload["config"]["arguments"]
        load = c["load_average"]
        clock = ("times are the process's CPU seconds (one thread: other programs on the shared cores stretch wall "
                 "time, which the JSON also holds, far more than the work)" if c["device"].startswith("cpu")
                 else "times are wall seconds")
        goals = ", ".join(f"{k} {v['value']:.2f} ({v['target']}: {'met' if v['met'] else 'missed'})"
                          for k, v in payload["goals"].items() if v["value"] is not None)
        notes.append(
            f"{name}: {c['model']}, {a['precision']}, seq {a['prompt_tokens']} + {a['completion_tokens']}, "
            f"micro-batch {a['batch_size']}, LoRA r{a['lora_r']} all-linear, median of {a['measured_steps']} steps "
            f"after {a['warmup_steps']}; {a['new_tokens']} new tokens per prompt, {a['predict_batch_size']} prompts "
            f"per prediction batch; {clock}. {c['device']}, {c['date']}, load average {load['before'][0]:.2f} before "
            f"and {load['after'][0]:.2f} after ({load['cpus']} cores), {c['seconds'] / 60:.0f} minutes, clsgen_hf "
            f"{c['versions']['clsgen_hf']}, transformers {c['versions']['transformers']}, TRL {c['versions']['trl']}. "
            f"Goals: {goals}. Command: `{c['command']}`")
    return ("<!-- Written by examples/benchmark_speed.py; do not edit by hand. -->\n" + markdown_table(runs) + "\n\n"
            + "\n\n".join(notes) + "\n")


def paste_into_readme(readme: Path, report: str) -> None:
    """Replace what lies between `README_START` and `README_END` in `readme` by `report`."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block to paste the table into.")
    head, rest = text.split(README_START, 1)
    readme.write_text(f"{head}{README_START}\n{report.strip()}\n{README_END}{rest.split(README_END, 1)[1]}",
                      encoding="utf-8")


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(SpeedArguments, prog="benchmark_speed.py", description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(argv)
    return run(args, command=" ".join(["python examples/benchmark_speed.py", *argv]))


if __name__ == "__main__":
    main()
