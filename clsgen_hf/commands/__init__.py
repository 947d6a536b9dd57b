"""Subcommands of `clsgen-hf`; see `clsgen_hf.cli`."""
