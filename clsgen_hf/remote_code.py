"""The code files a saved CLSGen folder carries for `trust_remote_code=True` users, and their refresh.

A folder's consumer without `clsgen_hf` runs the `configuration_clsgen.py`/`modeling_clsgen.py` that `save_pretrained`
copied into it (the classes are registered with `register_for_auto_class`), so a folder keeps the code of the release
that wrote it. `refresh_code` replaces that code and re-saves `config.json` without touching the weights.
"""

from __future__ import annotations

from pathlib import Path

from transformers.dynamic_module_utils import custom_object_save

from .configuration_clsgen import MODELING_VERSION, LlamaCLSGenConfig
from .modeling_clsgen import LlamaForCLSGen


CODE_FILES = ("modeling_clsgen.py", "configuration_clsgen.py")


def refresh_code(folder: str | Path) -> str | None:
    """Give a saved CLSGen folder this release's code files and config stamp; the weights are not opened.

    Returns:
        The `clsgen_modeling_version` the folder had before (`None` for folders written before versions were stamped).
    """
    config = LlamaCLSGenConfig.from_pretrained(folder)  # the library's class: nothing in the folder is executed
    previous = getattr(config, "clsgen_modeling_version", None)
    config.save_pretrained(folder)  # config.json, stamped, and configuration_clsgen.py
    custom_object_save(LlamaForCLSGen, folder)  # what the model's `save_pretrained` copies: modeling_clsgen.py
    return previous


__all__ = ["CODE_FILES", "MODELING_VERSION", "refresh_code"]
