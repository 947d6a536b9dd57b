"""Helpers of `examples/benchmark_speed.py` (clocks and roofline in `measure`, the workloads in `workloads`)."""
