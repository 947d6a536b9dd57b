"""`clsgen-hf refresh-code FOLDER`: give a saved CLSGen model folder this release's remote code, weights untouched.

Folders carry the `modeling_clsgen.py`/`configuration_clsgen.py` of the release that wrote them, which is what
`AutoModel.from_pretrained(folder, trust_remote_code=True)` runs. When a transformers release breaks old code
(transformers 5.24 renamed `past_key_values` to `cache` in model outputs), this rewrites the two files and
`config.json` in place; the weights and every other file stay as they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clsgen-hf refresh-code", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="saved CLSGen model folder(s)")
    args = parser.parse_args(argv)
    from ..remote_code import MODELING_VERSION, refresh_code

    for folder in args.folders:
        if not (folder / "config.json").is_file():
            print(f"clsgen-hf refresh-code: error: {folder}: no config.json, so not a saved model folder.", file=sys.stderr)
            return 2
        try:
            previous = refresh_code(folder)
        except ValueError as error:
            print(f"clsgen-hf refresh-code: error: {folder}: {error}", file=sys.stderr)
            return 2
        print(f"{folder}: code {previous or 'unversioned (0.1.0)'} -> {MODELING_VERSION}")
    return 0
