"""The `clsgen-hf` command: one subcommand per job (as `trl` has), each `main(argv) -> int` in
`clsgen_hf/commands/<name>.py`, imported when it runs."""

from __future__ import annotations

import atexit
import importlib
import os
import sys

from .errors import interrupted


COMMANDS = {
    "train": ("clsgen_hf.commands.train", "LoRA-train a CLSGen model (the full recipe by default)."),
    "synthesize": ("clsgen_hf.commands.synthesize", "Ask a teacher LLM for label-conditioned explanations."),
    "predict": ("clsgen_hf.commands.predict", "Probability + explanation for every row of a CSV/JSONL file."),
    "install-metrics": ("clsgen_hf.commands.install_metrics", "Make evaluate.load('clsgen/<metric>') work offline."),
    "export": ("clsgen_hf.commands.export", "Turn a checkpoint or adapter into a shareable, validated model folder."),
    "refresh-code": ("clsgen_hf.commands.refresh_code", "Give a saved model folder this release's remote code."),
}
# Commands whose parser imports the training stack: their bare `--help` prints from a cache (`commands.help_cache`).
CACHED_HELP = ("train",)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: clsgen-hf <command> [options]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\nRun `clsgen-hf <command> --help` for the options of a command."
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` names; returns its exit status. Called without `argv` (as the `clsgen-hf` program), a
    command ended by Ctrl-C ends the process at once (see `_exit_interrupted`)."""
    program = argv is None
    argv = sys.argv[1:] if program else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        named = next((arg for arg in argv if arg in COMMANDS), None)  # options typed before the command
        hint = f" The command comes first: clsgen-hf {named} [options]." if named else ""
        print(f"clsgen-hf: unknown command {argv[0]!r}.{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        if argv[0] in CACHED_HELP and argv[1:] in (["-h"], ["--help"]):
            from .commands.help_cache import print_help

            status = print_help(argv[0], COMMANDS[argv[0]][0])
        else:
            status = importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:]) or 0
    except KeyboardInterrupt:  # while the command's libraries import; `run_command` reports it once the body runs
        status = interrupted(argv[0])
    if status == 130 and program:
        _exit_interrupted(status)
    return status


def _exit_interrupted(status: int) -> None:
    """Exit without tearing the interpreter down: after a Ctrl-C (reported, outputs released) that teardown has nothing
    left to write, yet with torch and a model loaded it is slow, long enough on a busy machine for the user to believe
    the Ctrl-C was lost. The exit handlers still run (logging's flush, temporary folders' removal)."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
