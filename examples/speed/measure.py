"""Clocks, memory and the machine's roofline, for `examples/benchmark_speed.py`.

Peak memory is the process's resident set (CPU) or `torch.cuda.max_memory_allocated` (GPU), reset before each
measured section: on Linux, writing 5 to `/proc/self/clear_refs` resets the kernel's peak RSS (`VmHWM`), and
`malloc_trim` first hands back what earlier sections freed, so that one process can measure several trainers.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


GIB = 2**30


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def basis(device: torch.device) -> str:
    """The clock the figures are read from: the process's CPU time on a CPU, where other programs sharing the cores
    stretch wall time but barely the work done (one thread); wall time on a GPU."""
    return "cpu" if device.type == "cpu" else "wall"


def now(device: torch.device) -> dict[str, float]:
    """Both clocks, after the device's queue is drained."""
    synchronize(device)
    return {"wall": time.perf_counter(), "cpu": time.process_time()}


def since(start: dict[str, float], device: torch.device) -> dict[str, float]:
    end = now(device)
    return {clock: end[clock] - start[clock] for clock in start}


def timed(fn: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Wall and CPU seconds of one call of `fn`."""
    start = now(device)
    fn()
    return since(start, device)


def release_memory(device: torch.device) -> None:
    """Free what earlier sections left: Python garbage, the CUDA cache, glibc's free heap."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_memory_gib(device: torch.device) -> float | None:
    """Resident set (CPU) or allocated tensors (GPU) now."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / GIB
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 2**20


def reset_peak_memory(device: torch.device) -> None:
    release_memory(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: the peak then spans the whole process
        pass


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak since `reset_peak_memory`: RSS high-water mark (CPU) or `max_memory_allocated` (GPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    kib = _status_kib("VmHWM")
    return None if kib is None else kib / 2**20


def median(values: list[float]) -> float:
    return statistics.median(values)


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """FLOP/s of a square `size` x `size` matmul: the compute roof (median of `repeats` after one warm-up)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    seconds = median([timed(lambda: a @ b, device)[basis(device)] for _ in range(repeats)])
    return 2 * size**3 / seconds


def shaped_matmul_rate(device: torch.device, dtype: torch.dtype, m: int, k: int, n: int, repeats: int = 5) -> float:
    """FLOP/s of one `(m, k) @ (k, n)` matmul: what the model's own layer shapes get."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    a @ b
    seconds = median([timed(lambda: a @ b, device)[basis(device)] for _ in range(repeats)])
    return 2 * m * k * n / seconds


def memory_bandwidth(device: torch.device, gib: float, repeats: int = 5) -> float:
    """Bytes/s read by a sum over `gib` GiB of float32: decoding reads every weight once per step, as this does."""
    x = torch.ones(int(gib * GIB) // 4, device=device, dtype=torch.float32)
    x.sum()
    seconds = median([timed(lambda: x.sum(), device)[basis(device)] for _ in range(repeats)])
    return x.numel() * 4 / seconds


__all__ = ["GIB", "basis", "current_memory_gib", "matmul_rate", "median", "memory_bandwidth", "peak_memory_gib",
           "now", "release_memory", "reset_peak_memory", "shaped_matmul_rate", "since", "synchronize", "timed"]
