"""Reliability diagrams (matplotlib, the `plots` extra): skipped with a message where matplotlib is missing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from .atomic import atomic_path


logger = logging.getLogger(__name__)


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend, or `None` (with a warning) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plots. Install it with `pip install 'clsgen_hf[plots]'`.")
        return None
    return plt


def reliability_diagrams(panels: Mapping[str, Mapping], path: str | Path) -> Path | None:
    """One reliability diagram per panel title, side by side, saved as PNG at `path`.

    Args:
        panels: title -> `{"reliability": <metrics.reliability_curve rows>, "ece": float}`.
    """
    plt = pyplot()
    if plt is None:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, panel) in zip(axes[0], panels.items()):
        bins = [b for b in panel["reliability"] if b["count"]]
        centers = [(b["bin_lower"] + b["bin_upper"]) / 2 for b in bins]
        axis.bar(centers, [b["frequency"] for b in bins], width=0.09, alpha=0.6, label="observed")
        axis.plot([b["confidence"] for b in bins], [b["frequency"] for b in bins], "o", color="black", markersize=3)
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", title=f"{title}\nECE {panel['ece']:.3f}")
        axis.title.set_fontsize(8)
    axes[0][0].set_ylabel("observed frequency")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120)
    plt.close(figure)
    return Path(path)


__all__ = ["pyplot", "reliability_diagrams"]
