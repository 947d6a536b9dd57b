"""FSDP2 on two CPU processes (gloo): the float32 head trains, saves whole, matches one process, resumes.

accelerate 1.15 shards with FSDP only on accelerators; `tests/scripts/train_toy.py --fsdp` lets it pick FSDP over
gloo on CPU (see its docstring), so what runs here is accelerate's and torch's FSDP2 code path with our trainer.
The same path on a GPU, unmodified, is `examples/gpu/check_fsdp2.sh`.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clsgen_hf import LlamaForCLSGen

from .helpers import kill_after_first_checkpoint


REPO = Path(__file__).resolve().parents[1]
TRAIN_TOY = REPO / "tests" / "scripts" / "train_toy.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# 2 x 2 rows per step under FSDP2 against 1 x 4 in one process, 4 Adam steps at lr 1e-2, bf16 backbone: the two runs
# sum gradients in another order and multiply other matrix shapes, so they agree to rounding, not bit for bit.
HEAD_ATOL = 5e-4  # float32 `score`: each step moves it by up to 1e-2, 4e-2 in all
MERGED_ATOL = 2e-3  # bf16 merged weights (|w| < 0.2): two bf16 steps at that size


def _run(cmd, timeout=600):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=ENV)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow
def test_fsdp2_two_processes_save_what_one_process_saves(tmp_path):
    sharded, single = tmp_path / "fsdp2", tmp_path / "single"
    out = _run(TORCHRUN + [str(TRAIN_TOY), str(sharded), "--fsdp", "--save_steps", "4"])
    finished = "FINISHED global_step=4 steps_here=4 fsdp=True head_dtypes=torch.float32 head_params=DTensor"
    assert out.count(finished) == 2
    checkpoint = sharded / "checkpoint-4" / "pytorch_model_fsdp_0"
    # one shard per rank
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    _run([sys.executable, str(TRAIN_TOY), str(single), "--per_device_train_batch_size", "4", "--bf16_backbone"])

    a, b = load_file(sharded / "final" / "model.safetensors"), load_file(single / "final" / "model.safetensors")
    assert sorted(a) == sorted(b)
    assert a["score.weight"].dtype == torch.float32 and a["score.weight"].shape == b["score.weight"].shape
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        atol = HEAD_ATOL if name.startswith("score.") else MERGED_ATOL
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)

    model = LlamaForCLSGen.from_pretrained(sharded / "final")  # reloads whole, head in float32
    assert model.score.weight.dtype == torch.float32
    torch.testing.assert_close(model.score.weight.detach(), a["score.weight"], atol=0, rtol=0)


@pytest.mark.slow
def test_fsdp2_killed_run_resumes_from_its_sharded_checkpoint(tmp_path):
    out = tmp_path / "out"
    cmd = TORCHRUN + [str(TRAIN_TOY), str(out), "--fsdp", "--max_steps", "6", "--save_steps", "2"]
    last_step = kill_after_first_checkpoint(cmd + ["--step_delay", "1.0"], out, ENV)
    assert 2 <= last_step < 6
    assert len(list((out / f"checkpoint-{last_step}" / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2

    resumed = _run(cmd + ["--resume"])
    assert resumed.count(f"FINISHED global_step=6 steps_here={6 - last_step} fsdp=True") == 2  # no step redone
    assert load_file(out / "final" / "model.safetensors")["score.weight"].dtype == torch.float32


@pytest.mark.slow
def test_fsdp_requested_on_cpu_is_refused_not_run_as_ddp(tmp_path):
    result = subprocess.run(TORCHRUN + [str(TRAIN_TOY), str(tmp_path / "out"), "--fsdp_requested_on_cpu"],
                            capture_output=True, text=True, timeout=600, cwd=REPO, env=ENV)
    assert result.returncode != 0
    assert "UsageError: FSDP was requested but accelerate runs this job as MULTI_CPU" in result.stderr
    assert "cpu_2proc.yaml" in result.stderr


@pytest.mark.slow
def test_gpu_check_script_rehearses_on_cpu(tmp_path):
    result = subprocess.run([str(REPO / "examples" / "gpu" / "check_fsdp2.sh"), str(tmp_path / "check")],
                            capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**ENV, "CPU": "1", "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count("fsdp=True deepspeed=False head_numel=64 device=cpu head_dtype=torch.float32 "
                               "head_param=DTensor head_shard=(1, 32)") == 2
    assert "CHECK OK" in result.stdout
