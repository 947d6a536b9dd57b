"""The code files a saved CLSGen folder carries for `trust_remote_code=True` users, and their refresh.

A folder's consumer without `clsgen_hf` runs the `configuration_clsgen.py`/`modeling_clsgen.py` copied into it, so a
folder keeps the code of the release that wrote it. `refresh_code` replaces that code (and re-saves `config.json`,
stamped with the new `clsgen_modeling_version`) without touching the weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .configuration_clsgen import MODELING_VERSION, LlamaCLSGenConfig


CODE_FILES = ("modeling_clsgen.py", "configuration_clsgen.py")


def copy_code(folder: str | Path) -> None:
    """Copy this release's modeling and configuration files into `folder`."""
    here = Path(__file__).resolve().parent
    for name in CODE_FILES:
        shutil.copyfile(here / name, Path(folder) / name)


def refresh_code(folder: str | Path) -> str | None:
    """Give a saved CLSGen folder this release's code files and config stamp; the weights are not opened.

    Returns:
        The `clsgen_modeling_version` the folder had before (`None` for folders written before versions were stamped).
    """
    folder = Path(folder)
    config = LlamaCLSGenConfig.from_pretrained(folder)  # the library's class: nothing in the folder is executed
    previous = getattr(config, "clsgen_modeling_version", None)
    config.save_pretrained(folder)
    copy_code(folder)
    return previous


__all__ = ["CODE_FILES", "MODELING_VERSION", "copy_code", "refresh_code"]
