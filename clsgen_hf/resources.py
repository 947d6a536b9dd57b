"""The repository's top-level `evaluate_metrics/` and `model_cards/` folders, wherever the package runs from."""

from __future__ import annotations

from pathlib import Path


def resource_dir(name: str) -> Path:
    """`clsgen_hf/<name>` in an installed wheel (pyproject.toml maps the top-level folder there), else the folder
    beside the package (a checkout, or an editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / name
    return installed if installed.is_dir() else package.parent / name
