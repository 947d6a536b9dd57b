"""The code files a saved CLSGen folder carries for `trust_remote_code=True` users (those of the release that wrote
it, copied by `save_pretrained`), and `refresh_code`, which replaces them without touching the weights."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers.dynamic_module_utils import custom_object_save

from .atomic import atomic_files
from .configuration_clsgen import MODELING_VERSION, LlamaCLSGenConfig
from .modeling_clsgen import LlamaForCLSGen


logger = logging.getLogger(__name__)

CODE_FILES = ("modeling_clsgen.py", "configuration_clsgen.py")


def refresh_code(folder: str | Path) -> str | None:
    """Give a saved CLSGen folder this release's code files and config stamp, the weights untouched; returns the
    `clsgen_modeling_version` it had (`None` for folders written before versions were stamped).

    `auto_map` is reset to this library's classes (a folder someone sent may point `trust_remote_code` at code of its
    own), and every file is written beside the folder's and moved in (`os.replace`): a symbolic link in the folder is
    replaced by a regular file, never followed."""
    folder = Path(folder)
    config = LlamaCLSGenConfig.from_pretrained(folder)  # the library's class: nothing in the folder is executed
    previous = getattr(config, "clsgen_modeling_version", None)
    foreign = {key: value for key, value in config.auto_map.items() if config.default_auto_map.get(key) != value}
    if foreign:
        logger.warning("%s: config.json's auto_map pointed %s elsewhere; reset to this library's classes.", folder,
                       ", ".join(f"{key} at {value}" for key, value in foreign.items()))
    config.auto_map = dict(config.default_auto_map)
    with atomic_files(folder) as staging:
        config.save_pretrained(staging)  # config.json, stamped, and configuration_clsgen.py
        custom_object_save(LlamaForCLSGen, staging)  # what the model's `save_pretrained` copies: modeling_clsgen.py
    return previous


__all__ = ["CODE_FILES", "MODELING_VERSION", "refresh_code"]
