"""Folders written by an older release stay usable: through the library as they are, through remote code once
`clsgen-hf refresh-code` has given them this release's code files (weights untouched)."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from clsgen_hf import LlamaForCLSGen
from clsgen_hf.cli import main as cli
from clsgen_hf.configuration_clsgen import MODELING_VERSION
from clsgen_hf.remote_code import CODE_FILES

from .fixtures.clsgen_v0_1 import NEW_TOKENS, PROMPTS, REFERENCE_FILE, write_legacy_folder


REFERENCE = json.loads(REFERENCE_FILE.read_text())["outputs"]

REMOTE_SCRIPT = """
import json, sys, torch
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "clsgen_hf":
            raise ImportError("clsgen_hf is blocked in this process")
sys.meta_path.insert(0, Block())
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert "clsgen_hf" not in type(model).__module__
results = []
for row in json.loads(sys.argv[2]):
    out = model.classify_and_generate(torch.tensor([row["prompt_ids"]]), max_new_tokens={n}, min_new_tokens={n},
                                      do_sample=False, pad_token_id=model.config.pad_token_id)
    results.append({{"probability": out.probabilities[0].tolist(),
                     "new_tokens": out.sequences[0, len(row["prompt_ids"]):].tolist()}})
print("RESULTS " + json.dumps(results))
"""


def _remote_outputs(folder, tmp_path):
    """What a process without clsgen_hf computes from the folder's own code: (results or None, stderr)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / f"modules-{len(os.listdir(tmp_path))}"))
    script = textwrap.dedent(REMOTE_SCRIPT.format(n=NEW_TOKENS))
    done = subprocess.run([sys.executable, "-c", script, str(folder), json.dumps(REFERENCE)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    return (json.loads(lines[0][len("RESULTS "):]) if lines else None), done.stderr


def _assert_matches_reference(results):
    for got, expected in zip(results, REFERENCE, strict=True):
        torch.testing.assert_close(torch.tensor(got["probability"]), torch.tensor(expected["probability"]),
                                   atol=1e-5, rtol=0)
        assert got["new_tokens"] == expected["new_tokens"]


@pytest.fixture
def legacy_folder(tmp_path, smollm2_tokenizer):
    folder = tmp_path / "legacy"
    write_legacy_folder(folder, smollm2_tokenizer)
    assert "past_key_values: Cache" in (folder / "modeling_clsgen.py").read_text()  # really the 0.1.0 code
    assert "clsgen_modeling_version" not in json.loads((folder / "config.json").read_text())
    return folder


def test_legacy_folder_predicts_the_same_through_the_library(legacy_folder):
    model = LlamaForCLSGen.from_pretrained(legacy_folder).eval()
    assert model.config.cls_threshold == pytest.approx(0.4)
    results = []
    for row in REFERENCE:
        out = model.classify_and_generate(torch.tensor([row["prompt_ids"]]), max_new_tokens=NEW_TOKENS,
                                          min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
        results.append({"probability": out.probabilities[0].tolist(),
                        "new_tokens": out.sequences[0, len(row["prompt_ids"]):].tolist()})
    _assert_matches_reference(results)


def test_legacy_folder_predicts_the_same_through_clsgen_hf_predict(legacy_folder, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": prompt}) + "\n" for prompt in PROMPTS))
    out = tmp_path / "preds.jsonl"
    assert cli(["predict", "--model", str(legacy_folder), "--input", str(rows), "--output", str(out),
                "--max_new_tokens", "0", "--batch_size", "1"]) == 0
    got = [json.loads(line)["probability"] for line in out.read_text().splitlines()]
    torch.testing.assert_close(torch.tensor(got), torch.tensor([r["probability"] for r in REFERENCE]),
                               atol=1e-5, rtol=0)


def test_refresh_code_repairs_remote_code_and_keeps_the_weights(legacy_folder, tmp_path, capsys):
    # Whether the 0.1.0 code still runs depends on the installed transformers (5.24 broke it: its output class
    # declares the cache field by its old name; 5.25 runs it again, with a warning): probe it, and require the
    # refreshed folder to give the reference outputs whichever way the probe went.
    before, _ = _remote_outputs(legacy_folder, tmp_path)
    old_code = "failed" if before is None else "ran"

    weights = hashlib.sha256((legacy_folder / "model.safetensors").read_bytes()).hexdigest()
    others = {p.name: p.read_bytes() for p in legacy_folder.iterdir() if p.name not in (*CODE_FILES, "config.json")}
    assert cli(["refresh-code", str(legacy_folder)]) == 0
    assert f"unversioned (0.1.0) -> {MODELING_VERSION}" in capsys.readouterr().out

    assert hashlib.sha256((legacy_folder / "model.safetensors").read_bytes()).hexdigest() == weights
    kept = {p.name: p.read_bytes() for p in legacy_folder.iterdir() if p.name not in (*CODE_FILES, "config.json")}
    assert kept == others
    assert json.loads((legacy_folder / "config.json").read_text())["clsgen_modeling_version"] == MODELING_VERSION
    after, stderr = _remote_outputs(legacy_folder, tmp_path)
    assert after is not None, (f"the 0.1.0 code {old_code} before the refresh; the refreshed code failed:\n"
                               f"{stderr[-2000:]}")
    _assert_matches_reference(after)


def test_refresh_code_refuses_a_folder_without_config(tmp_path, capsys):
    assert cli(["refresh-code", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
