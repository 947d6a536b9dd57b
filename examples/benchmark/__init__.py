"""Parts of `examples/benchmark_clinifact.py`: the methods it compares (`methods`) and what it writes (`report`)."""
