"""Command-line options live in `clsgen_hf/commands/` (and `cli.py`); the library speaks the API's parameter names,
which each command spells as its flags."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from clsgen_hf.cli import COMMANDS
from clsgen_hf.errors import UsageError, run_command


PACKAGE = Path(__file__).resolve().parent.parent / "clsgen_hf"
LIBRARY_MODULES = sorted(path for path in [*PACKAGE.glob("*.py"), *PACKAGE.glob("data/*.py")] if path.name != "cli.py")


def _option_names() -> set[str]:
    """Every `--option` of every `clsgen-hf` command, read from the commands' own parsers (`--help`, argparse's, is
    no option of a command)."""
    names = set()
    for module, _ in COMMANDS.values():
        parser = importlib.import_module(module).make_parser()
        names.update(flag for action in parser._actions for flag in action.option_strings if flag.startswith("--"))
    return names - {"--help"}


@pytest.mark.parametrize("path", LIBRARY_MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_command_line_option_is_spelled_below_the_commands(path):
    options = _option_names()
    assert {"--text_fields", "--max_prompt_tokens", "--overwrite", "--resume_from_checkpoint"} <= options
    spelled = re.compile(r"(?<![\w-])(--[A-Za-z][\w-]*)")
    found = [f"{number}: {flag}" for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             for flag in spelled.findall(line) if flag in options]
    assert not found, f"{path.name} spells command-line options (name the API's parameters instead): {found}"


def test_a_usage_error_names_parameters_for_the_api_and_flags_for_the_command(capsys):
    error = UsageError("{max_prompt_tokens} is too long; pass {allow_empty_text}, map labels with {label2id} or "
                       "name the {teacher}.", max_prompt_tokens=9000, allow_empty_text=True,
                       label2id={"neg": 0, "pos": 1}, teacher=...)
    assert str(error) == ("max_prompt_tokens=9000 is too long; pass allow_empty_text=True, map labels with "
                          "label2id={'neg': 0, 'pos': 1} or name the teacher=....")

    def body():
        raise error

    assert run_command("train", body) == 2
    assert capsys.readouterr().err == (
        "clsgen-hf train: error: --max_prompt_tokens 9000 is too long; pass --allow_empty_text, map labels with "
        "--label2id '{\"neg\": 0, \"pos\": 1}' or name the --teacher.\n"
    )


def test_library_errors_name_the_parameter_and_the_command_its_flag(tmp_path, capsys):
    from clsgen_hf.commands.train import main as train
    from clsgen_hf.training import resume_checkpoint

    (tmp_path / "checkpoint-2").mkdir()
    args = type("Args", (), {"output_dir": str(tmp_path), "resume_from_checkpoint": None})
    with pytest.raises(UsageError, match=r"pass resume_from_checkpoint='true' to continue it, or a new output_dir="):
        resume_checkpoint(args)
    assert train(["--output_dir", str(tmp_path), "--train_file", str(tmp_path / "x.csv"),
                  "--test_file", str(tmp_path / "x.csv"), "--text_fields", "note"]) == 2
    assert "pass --resume_from_checkpoint true to continue it, or a new --output_dir to start over" in (
        capsys.readouterr().err)


def test_the_self_teacher_is_the_library_s_and_asks_the_loaded_model(tiny_model, smollm2_tokenizer):
    """`make_teacher("self", model=, tokenizer=)`: the teacher option's default, without the options dataclass."""
    from clsgen_hf.commands.options import TeacherArguments
    from clsgen_hf.data import make_teacher

    teacher = make_teacher("self", model=tiny_model, tokenizer=smollm2_tokenizer)
    assert teacher.model is tiny_model and teacher.name == f"self:{tiny_model.config._name_or_path}"
    assert TeacherArguments().make_teacher(tiny_model, smollm2_tokenizer).name == teacher.name


@pytest.mark.parametrize("argv, message", [
    (["train", "--cls_loss_weight", "abc"], "argument --cls_loss_weight/--cls-loss-weight: invalid float value"),
    (["predict", "--explain", "maybe"], "argument --explain: invalid choice: 'maybe'"),
    (["export", "--format", "zip", "a", "b"], "argument --format: invalid choice: 'zip'"),
    (["synthesize", "--max_rows", "x"], "argument --max_rows/--max-rows: invalid int value: 'x'"),
])
def test_an_option_argparse_refuses_is_one_line(argv, message, capsys):
    """argparse's own mistakes (a value of the wrong type or out of its choices) end as every usage error does: one
    line naming the option, not argparse's usage block (for `train`, every option of `TrainingArguments`)."""
    from clsgen_hf.cli import main as cli_main

    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clsgen-hf {argv[0]}: error: {message}") and err.count("\n") == 1, err
