"""The code files a saved CLSGen folder carries for `trust_remote_code=True` users (those of the release that wrote
it, copied by `save_pretrained`), and `refresh_code`, which replaces them without touching the weights."""

from __future__ import annotations

from pathlib import Path

from transformers.dynamic_module_utils import custom_object_save

from .configuration_clsgen import MODELING_VERSION, LlamaCLSGenConfig
from .modeling_clsgen import LlamaForCLSGen


CODE_FILES = ("modeling_clsgen.py", "configuration_clsgen.py")


def refresh_code(folder: str | Path) -> str | None:
    """Give a saved CLSGen folder this release's code files and config stamp, the weights untouched; returns the
    `clsgen_modeling_version` it had (`None` for folders written before versions were stamped)."""
    config = LlamaCLSGenConfig.from_pretrained(folder)  # the library's class: nothing in the folder is executed
    previous = getattr(config, "clsgen_modeling_version", None)
    config.save_pretrained(folder)  # config.json, stamped, and configuration_clsgen.py
    custom_object_save(LlamaForCLSGen, folder)  # what the model's `save_pretrained` copies: modeling_clsgen.py
    return previous


__all__ = ["CODE_FILES", "MODELING_VERSION", "refresh_code"]
