"""`import clsgen_hf` and `clsgen-hf --help` load no torch, a command's option error comes before any heavy import, and
the Auto classes still find CLSGen folders once transformers loads them. Each check runs in a fresh interpreter."""

import json
import subprocess
import sys

import pytest

from .toy import tiny_config


HEAVY = ("torch", "sklearn", "trl.trainer", "transformers.models.auto.modeling_auto", "evaluate", "datasets")

LIGHT = """
import contextlib, io, json, sys
from clsgen_hf.cli import main
codes = []
for argv in ([], ["--help"], ["predict", "--batch_size", "many"], ["export", "--format", "onnx", "a", "b"],
             ["install-metrics", "--push", "me"], ["refresh-code"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as exit:
            codes.append(exit.code)
print(json.dumps({"codes": codes, "loaded": [name for name in sys.argv[1:] if name in sys.modules]}))
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


def test_help_and_option_errors_load_nothing_heavy(tmp_path):
    done = _python(LIGHT, *HEAVY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 2, 2, 2, 2]
    assert result["loaded"] == []


@pytest.mark.parametrize(
    "before", ["", "from transformers import AutoModel", "from transformers import PreTrainedModel", "import peft"]
)
def test_auto_classes_load_a_clsgen_folder_after_import_clsgen_hf(before, tmp_path):
    from clsgen_hf import LlamaForCLSGen

    LlamaForCLSGen(tiny_config()).save_pretrained(tmp_path / "model")
    script = AUTO_LOAD.format(before=before, torch_before=bool(before))
    done = _python(script, str(tmp_path / "model"), cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
