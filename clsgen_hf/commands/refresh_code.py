"""`clsgen-hf refresh-code FOLDER ...`: give saved CLSGen model folders this release's remote code, weights untouched.

Folders carry the `modeling_clsgen.py`/`configuration_clsgen.py` of the release that wrote them, which
`trust_remote_code=True` runs; when a transformers release breaks old code, this rewrites them and `config.json`
(its `auto_map` reset to this library's classes), as regular files inside the folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError, run_command


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clsgen-hf refresh-code", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # no options: no TrlParser
    parser.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="saved CLSGen model folder(s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)

    def refresh() -> None:
        from ..output_folders import claim_output_folder
        from ..remote_code import MODELING_VERSION, refresh_code

        for folder in args.folders:
            claim_output_folder("FOLDER", folder, {})
            if not (folder / "config.json").is_file():
                raise UsageError(f"{folder}: no config.json, so not a saved model folder.")
            try:
                previous = refresh_code(folder)
            except (OSError, ValueError) as error:  # a config.json that is not a CLSGen one, a read-only folder
                raise UsageError(f"{folder}: {str(error).strip().splitlines()[0]}") from None
            print(f"{folder}: code {previous or 'unversioned (0.1.0)'} -> {MODELING_VERSION}")

    return run_command("refresh-code", refresh)
