"""examples/benchmark_speed.py: the tiny preset end to end (every figure in the JSON), and the README's Speed table."""

import json
import math
from pathlib import Path

import pytest
import torch

from .helpers import example_module


REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "examples" / "benchmark_results"


@pytest.fixture(scope="module")
def speed():
    with example_module("benchmark_speed") as module:
        yield module


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tiny_run_writes_every_figure(speed, smollm2_tokenizer, tmp_path):
    smollm2_tokenizer.save_pretrained(tmp_path / "tokenizer")  # the session's copy: no second read of the GGUF file
    threads = torch.get_num_threads()
    try:
        speed.main(["--preset", "tiny", "--output_dir", str(tmp_path / "out"), "--results_dir", str(tmp_path),
                    "--tokenizer_name_or_path", str(tmp_path / "tokenizer")])
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "speed_cpu.json").read_text())

    assert set(saved["training"]) == set(speed.TRAINERS)
    for kind, result in saved["training"].items():
        assert len(result["step_seconds"]) == 5 and len(result["warmup_seconds"]) == 1, kind
        for key in ("median_step_s", "tokens_per_s", "peak_memory_gib", "start_memory_gib", "trainable_parameters"):
            assert _finite(result[key]), (kind, key)
        assert _finite(saved["flops"][kind]["flops_per_token"]) and saved["flops"][kind]["formula"]
    assert saved["flops"]["seqcls"]["lm_head_parameters_per_token"] == 0
    for key in ("predict_s", "generate_s", "generate_then_forward_s", "prefill_s", "generate_decode_s_per_token",
                "predict_decode_s_per_token", "weight_bytes", "mean_cache_bytes"):
        assert _finite(saved["prediction"][key]), key
    assert saved["prediction"]["new_tokens"] == 4 and 60 <= saved["prediction"]["prompt_tokens"] <= 64
    for key in ("probabilities_rows_per_s", "explanations_rows_per_s"):
        assert _finite(saved["files"][key]), key
    for key in ("synthesize_rows_per_s", "generate_rows_per_s"):
        assert _finite(saved["synthesis"][key]), key
    assert set(saved["startup"]) == {"clsgen-hf --help", "clsgen-hf train --help (no cache)",
                                     "clsgen-hf train --help (cached)", "import clsgen_hf", "trl --help"}
    assert all(_finite(seconds) and seconds > 0 for seconds in saved["startup"].values())
    for key in ("matmul_flops_per_s", "layer_matmul_flops_per_s", "memory_bytes_per_s"):
        assert _finite(saved["roofline"][key]), key
    expected = {"clsgen_vs_sft_step", "clsgen_vs_sft_memory", "clsgen_vs_seqcls_step", "predict_vs_generate",
                "generate_then_forward_vs_generate", "decode_floor_s_per_token", "generate_decode_vs_floor",
                "predict_decode_vs_floor", "synthesis_vs_generate"} | {f"{k}_flop_fraction" for k in speed.TRAINERS}
    assert set(saved["ratios"]) == expected and all(_finite(v) for v in saved["ratios"].values())
    assert set(saved["goals"]) == set(speed.GOALS) and all(g["met"] in (True, False) for g in saved["goals"].values())
    config = saved["config"]
    assert {"torch", "transformers", "trl", "peft", "clsgen_hf"} <= set(config["versions"])
    assert config["device"].startswith("cpu") and "load_average" in config

    table = (tmp_path / "speed.md").read_text()
    assert table == speed.report(tmp_path)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == "| | CPU | GPU |" and len(rows) == 13
    assert all(line.endswith("| unmeasured |") for line in rows[1:]) and "GPU: unmeasured." in table

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{speed.README_START}\nold\n{speed.README_END}\n\nMore.\n")
    speed.paste_into_readme(readme, table)
    assert readme.read_text() == f"# Title\n\n{speed.README_START}\n{table.strip()}\n{speed.README_END}\n\nMore.\n"


def test_preset_fills_unset_options_only(speed):
    args = speed.SpeedArguments(preset="cpu", batch_size=2)
    assert (args.batch_size, args.prompt_tokens, args.completion_tokens, args.threads) == (2, 320, 64, 1)
    assert speed.SpeedArguments(preset="gpu").shape == "llama-3.1-8b"
    with pytest.raises(ValueError, match="measured_steps must be >= 5"):
        speed.SpeedArguments(preset="cpu", measured_steps=3)


def test_readme_speed_table_is_the_committed_run_unedited(speed):
    text = speed.report(COMMITTED)
    assert text == (COMMITTED / "speed.md").read_text()
    block = (REPO / "README.md").read_text().split(speed.README_START, 1)[1].split(speed.README_END, 1)[0]
    assert block.strip() == text.strip()
