"""`import clsgen_hf` and `clsgen-hf --help` load no torch, a command's option error comes before any heavy import, and
the Auto classes still find CLSGen folders once transformers loads them. Each check runs in a fresh interpreter.

`train` parses into `CLSGenConfig`, a `transformers.TrainingArguments`, whose module imports torch and peft: its option
errors cost that import and nothing more (no model loading code, no scikit-learn), and so does its first `--help`;
the next ones print the cached text (`clsgen_hf.commands.help_cache`) and load neither torch nor TRL."""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from .toy import tiny_config


HEAVY = ("torch", "sklearn", "trl.trainer", "transformers.models.auto.modeling_auto", "evaluate", "datasets")

# Runs `clsgen-hf <argv>` for each argv of the JSON list in argv[1]; prints the exit codes and which of the modules
# named by the other arguments were imported.
OPTIONS = """
import contextlib, io, json, sys
from clsgen_hf.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as exit:
            codes.append(exit.code)
print(json.dumps({"codes": codes, "loaded": [name for name in sys.argv[2:] if name in sys.modules]}))
"""

# Runs `clsgen-hf <argv[1:]>`, its standard output left as it prints it; then, on stderr, its exit status and which of
# torch and TRL were imported.
HELP = """
import json, sys
from clsgen_hf.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
loaded = [name for name in ("torch", "trl") if name in sys.modules]
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""

AUTO_LOAD = """
import sys
{before}
import clsgen_hf
assert "torch" not in sys.modules or {torch_before}, "import clsgen_hf loaded torch"
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
for auto_class in (AutoConfig, AutoModel, AutoModelForCausalLM):
    loaded = auto_class.from_pretrained(sys.argv[1])
    assert type(loaded).__module__.startswith("clsgen_hf."), (auto_class, type(loaded))
print("OK")
"""


def _python(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _run_options(argvs: list[list[str]], modules: tuple[str, ...], cwd) -> dict:
    done = _python(OPTIONS, json.dumps(argvs), *modules, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_and_option_errors_load_nothing_heavy(tmp_path):
    argvs = [[], ["--help"], ["predict", "--batch_size", "many"], ["export", "--format", "onnx", "a", "b"],
             ["install-metrics", "--push", "me"], ["refresh-code"]]
    assert _run_options(argvs, HEAVY, tmp_path) == {"codes": [0, 0, 2, 2, 2, 2], "loaded": []}


def _help_and_option_errors(command: str, bad_number: str, tmp_path, required: tuple[str, ...] = ()) -> list:
    """`--help` and three mistakes: a number out of range, an unknown flag, a `--config` that is no YAML mapping."""
    (tmp_path / "bad.yaml").write_text("- a list, not options\n")
    mistakes = [[bad_number, "0"], ["--no_such_option", "1"], ["--config", str(tmp_path / "bad.yaml")]]
    return [[command, "--help"]] + [[command, *mistake, *required] for mistake in mistakes]


def test_synthesize_help_and_option_errors_load_no_torch(tmp_path):
    argvs = _help_and_option_errors("synthesize", "--max_rows", tmp_path, ("--input", "a.csv", "--output", "b.jsonl"))
    heavy = ("torch", "peft", "sklearn", "trl.trainer", "clsgen_hf.loading", "transformers.modeling_utils")
    assert _run_options(argvs, heavy, tmp_path) == {"codes": [0, 2, 2, 2], "loaded": []}


def test_train_help_and_option_errors_load_no_model_code(tmp_path):
    argvs = _help_and_option_errors("train", "--per_device_train_batch_size", tmp_path)
    heavy = ("sklearn", "clsgen_hf.loading", "clsgen_hf.calibration")
    assert _run_options(argvs, heavy, tmp_path) == {"codes": [0, 2, 2, 2], "loaded": []}


def test_train_help_is_the_live_parsers_text_then_cached_without_torch_or_trl(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from clsgen_hf.commands import help_cache, train

    monkeypatch.setenv("COLUMNS", "97")  # the width argparse wraps to, here and in the runs below
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "primed"))
    with contextlib.redirect_stdout(io.StringIO()) as printed, pytest.raises(SystemExit):
        train.main(["--help"])  # the live parser, as before the cache
    live = printed.getvalue()
    assert "--cls_loss_weight" in live and help_cache.cached_help("train") == live  # a run primes the cache

    hf_home = tmp_path / "hf"
    (hf_home / "clsgen_hf" / "help").mkdir(parents=True)
    (hf_home / "clsgen_hf" / "help" / "train.json").write_bytes(b'{"key": "\xff')  # corrupt: falls back to live
    env = {**os.environ, "HF_HOME": str(hf_home), "COLUMNS": "97"}
    runs = [subprocess.run([sys.executable, "-c", HELP, "train", "--help"], cwd=tmp_path, env=env, capture_output=True,
                           timeout=600) for _ in range(2)]
    outcomes = [json.loads(run.stderr.decode().strip().splitlines()[-1]) for run in runs]
    assert [run.stdout for run in runs] == [live.encode()] * 2
    assert outcomes == [{"code": 0, "loaded": ["torch", "trl"]}, {"code": 0, "loaded": []}]


@pytest.mark.parametrize(
    "before", ["", "from transformers import AutoModel", "from transformers import PreTrainedModel", "import peft"]
)
def test_auto_classes_load_a_clsgen_folder_after_import_clsgen_hf(before, tmp_path):
    from clsgen_hf import LlamaForCLSGen

    LlamaForCLSGen(tiny_config()).save_pretrained(tmp_path / "model")
    script = AUTO_LOAD.format(before=before, torch_before=bool(before))
    done = _python(script, str(tmp_path / "model"), cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
