"""Hub-compatible artifacts: `clsgen-hf export` of a trained checkpoint (merged and adapter), model cards, bad
sources."""

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import peft
import pytest
import torch
import transformers
import trl
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

import clsgen_hf
from clsgen_hf import (
    CLSGenConfig,
    CLSGenTrainer,
    LlamaForCLSGen,
    alignment_report,
    classification_report,
    predict,
)
from clsgen_hf.cli import main as cli_main
from clsgen_hf.configuration_clsgen import MODELING_VERSION
from clsgen_hf.data import PromptTemplate
from clsgen_hf.errors import UsageError
from clsgen_hf.export import export_model
from clsgen_hf.model_card import build_model_card
from clsgen_hf.prompt_template import encode_prompts

from .toy import lora_config, tiny_config, tiny_model_for, toy_dataset


TOY_TEMPLATE = PromptTemplate("{{ text }}", system="Classify.", question="Improved?")
CARD_METRICS = {"auroc": "roc_auc", "f1": "f1", "auroc_alignment": "auroc_alignment", "r_lkappa": "r_lkappa",
                "rli": "rli", "readability": "readability"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, _smollm2_tokenizer):
    """A 3-step LoRA run of a tiny model, checkpointed, with the recipe's files: real evaluation numbers of the
    trained model on held-out rows (`clsgen_results.json`) and its prompt template (`clsgen_prompt.json`)."""
    root = tmp_path_factory.mktemp("run")
    tokenizer = copy.deepcopy(_smollm2_tokenizer)
    tiny_model_for(tokenizer).save_pretrained(root / "base")  # a base with a path, as adapter_config.json records it
    output_dir = root / "out"
    args = CLSGenConfig(
        str(output_dir), per_device_train_batch_size=4, learning_rate=1e-2, max_steps=3, save_strategy="steps",
        save_steps=3, logging_steps=1, report_to=[], use_cpu=True, seed=0,
    )
    trainer = CLSGenTrainer(LlamaForCLSGen.from_pretrained(root / "base"), args, train_dataset=toy_dataset(12),
                            processing_class=tokenizer, peft_config=lora_config())
    trainer.train()
    trainer.model.eval()

    rows = toy_dataset(6, seed=1)
    predictions = predict(trainer.model, tokenizer, rows["prompt"], max_new_tokens=8, show_progress=False)
    probabilities = np.array([p["probability"] for p in predictions])[:, 1]
    results = {k: v for k, v in classification_report(probabilities, rows["label"]).items() if k != "reliability"}
    results.update(alignment_report(probabilities, [p["explanation"] for p in predictions]),
                   train_rows=12, test_rows=6)
    (output_dir / "clsgen_results.json").write_text(json.dumps(results))
    TOY_TEMPLATE.save_pretrained(output_dir)
    return SimpleNamespace(root=root, trainer=trainer, tokenizer=tokenizer, checkpoint=output_dir / "checkpoint-3",
                           results=results, rows=rows, probabilities=probabilities)


def _assert_card_has_results(card: ModelCard, results: dict) -> None:
    metrics = {m["type"]: m["value"] for m in card.data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    assert math.isfinite(results["auroc"]) and math.isfinite(results["f1"])
    for key, metric_type in CARD_METRICS.items():
        if math.isfinite(results[key]):
            assert metrics[metric_type] == results[key], key
            assert f"{results[key]:.3f}" in card.text
        else:  # undefined numbers stay out of the metadata and read n/a in the table
            assert metric_type not in metrics
            assert "n/a" in card.text


def test_merged_export(run, tmp_path):
    out = tmp_path / "merged"
    report = export_model(run.checkpoint, out, repo_id="me/toy-clsgen")

    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_clsgen.py", "configuration_clsgen.py", "README.md",
            "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "clsgen_prompt.json", "clsgen_results.json"} <= files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]
    config = json.loads((out / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    assert config["id2label"] == {"0": "No", "1": "Yes"} and config["cls_threshold"] == 0.5

    # reloaded with AutoModel: same class-head logits (without clsgen_hf: test_merged_export_loads_without_clsgen_hf)
    assert report.validated and report.max_abs_diff <= 1e-5 and report.n_prompts == 3
    assert report.loaded_class.endswith("modeling_clsgen.LlamaForCLSGen")

    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert {"clsgen", "trl"} <= set(data["tags"])
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["model-index"][0]["name"] == "toy-clsgen"
    _assert_card_has_results(card, run.results)
    assert 'repo = "me/toy-clsgen"' in card.text and "trust_remote_code=True" in card.text
    assert "| r | 8 |" in card.text and "| alpha | 16 |" in card.text and "| max steps | 3 |" in card.text
    assert "`config.cls_threshold` = **0.5**" in card.text and "`1` = Yes" in card.text
    assert "arXiv" in card.text and "2604.11801" in card.text and "not a medical device" in card.text
    assert report.evaluation_table in card.text and report.evaluation_table in str(report)


# Runs in a fresh interpreter where `import clsgen_hf` fails: the merged export as a user without the package loads it.
CLSGEN_FREE_SCRIPT = r'''
import contextlib, io, json, re, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "clsgen_hf":
            raise ImportError("clsgen_hf is blocked in this process")
sys.meta_path.insert(0, Block())
import torch
from transformers import AutoModel
folder, prompts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = [model(input_ids=torch.tensor([ids])).cls_logits[0].tolist() for ids in prompts]
snippet = re.search(r"```python\n(.*?)```", open(folder + "/README.md").read(), re.S).group(1)
printed = io.StringIO()
with contextlib.redirect_stdout(printed):  # the card's usage snippet, as written but for the repo it loads
    exec(snippet.replace('repo = "me/toy-clsgen"', "repo = " + json.dumps(folder), 1), {"__name__": "__snippet__"})
cls = type(model)
print("RESULT " + json.dumps({"class": f"{cls.__module__}.{cls.__name__}", "cls_logits": logits,
                              "printed": printed.getvalue()}))
'''


def test_merged_export_loads_without_clsgen_hf(run, tmp_path):
    out = tmp_path / "merged"
    export_model(run.checkpoint, out, repo_id="me/toy-clsgen", validate=False)
    prompts = encode_prompts(run.tokenizer, [TOY_TEMPLATE.to_messages({"text": t}) for t in ("better", "no change")])
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, "-c", CLSGEN_FREE_SCRIPT, str(out), json.dumps(prompts)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT "):])
    assert result["class"].endswith("modeling_clsgen.LlamaForCLSGen") and not result["class"].startswith("clsgen_hf")
    with torch.no_grad():
        expected = [run.trainer.model(torch.tensor([ids])).cls_logits[0].tolist() for ids in prompts]
    torch.testing.assert_close(torch.tensor(result["cls_logits"]), torch.tensor(expected), atol=1e-5, rtol=0)
    assert re.search(r"P\(Yes\) = \d\.\d{3} -> (Yes|No)", result["printed"]), result["printed"]


def test_adapter_export_loads_with_peft(run, tmp_path, capsys):
    # an adapter whose config names no base model: found only with --base_model
    adapter = tmp_path / "adapter-without-base"
    shutil.copytree(run.checkpoint, adapter)
    shutil.copy(run.checkpoint.parent / "clsgen_prompt.json", adapter)  # gives the labels their names
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**adapter_config, "base_model_name_or_path": ""}))
    with pytest.raises(UsageError, match="names no base model.*pass it as base_model"):
        export_model(adapter, tmp_path / "nope", merge=False)

    out = tmp_path / "adapter"
    report = export_model(adapter, out, merge=False, base_model=str(run.root / "base"),
                          results=run.checkpoint.parent / "clsgen_results.json")
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "modeling_clsgen.py",
            "configuration_clsgen.py", "tokenizer.json", "README.md", "generation_config.json"} <= files
    assert "model.safetensors" not in files
    assert report.validated and report.max_abs_diff <= 1e-5 and report.loaded_class.startswith("PeftModel")
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and "clsgen" in card.data.tags
    _assert_card_has_results(card, run.results)

    # the card's PEFT snippet (transformers + peft only) gives the trained model's probabilities
    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    exec(snippet, {"__name__": "__snippet__"})
    printed = float(re.search(r"P\(Yes\) = (\d\.\d{3})", capsys.readouterr().out).group(1))
    ids = encode_prompts(run.tokenizer, [TOY_TEMPLATE.to_messages({"text": "<text>"})])
    with torch.no_grad():
        expected = run.trainer.model(torch.tensor(ids)).cls_logits.softmax(-1)[0, 1].item()
    assert printed == pytest.approx(expected, abs=6e-4)


def test_trainer_writes_a_clsgen_card(run, tmp_path):
    output_dir = run.checkpoint.parent
    card = ModelCard.load(output_dir / "README.md")  # written when the checkpoint was saved, before the evaluation
    assert {"clsgen", "trl"} <= set(card.data.tags) and card.data.library_name == "transformers"
    assert card.data.clsgen_versions == {"clsgen_hf": clsgen_hf.__version__, "transformers": transformers.__version__,
                                         "peft": peft.__version__, "trl": trl.__version__, "torch": torch.__version__,
                                         "clsgen_modeling_version": MODELING_VERSION}
    assert "clsgen" in card.data and "| r | 8 |" in card.text  # the run's facts, in the card's metadata

    run.trainer.model_card_data.results, run.trainer.model_card_data.prompt_template = run.results, TOY_TEMPLATE
    run.trainer.create_model_card(output_dir=str(tmp_path))  # from the values given: the folder holds no run files
    card = ModelCard.load(tmp_path / "README.md")
    _assert_card_has_results(card, run.results)
    assert "Improved?" in card.text  # the usage snippet speaks the training prompt template


def test_card_reports_explanation_synthesis_and_undefined_metrics():
    synthesis = {  # explanations.meta.json as `synthesize_explanations` writes it (JSON: string label keys)
        "teacher": "transformers:HuggingFaceTB/SmolLM2-135M-Instruct",
        "teacher_instruction": 'The correct answer is "{answer}". Reply in exactly this format: ...',
        "max_retries": 1, "ensure_verdict_line": False,
        "report": {"verbalizers": {"0": "No", "1": "Yes"}, "rows": {"0": 5, "1": 5}, "first_try": {"0": 4, "1": 3},
                   "after_retries": {"1": 1}, "dropped": {"0": 1, "1": 1}, "verdict_appended": 0, "reused": 0,
                   "generated": 11, "generated_tokens": 900, "seconds": 12.5},
    }
    results = {"auroc": 0.8125, "f1": 0.5, "auroc_alignment": float("nan"), "r_lkappa": 0.4, "rli": 0.25,
               "readability": 0.75, "test_rows": 8, "train_rows": 10}
    config = tiny_config(id2label={0: "No", 1: "Yes"}, cls_threshold=0.35)
    card = build_model_card(config, {"learning_rate": 5e-4, "num_train_epochs": 2.0, "max_steps": -1,
                                     "lm_loss_weight": 1.0, "cls_loss_weight": 2.0}, lora_config(r=16), synthesis,
                            results, model_name="toy", dataset_name="CliniFact")
    text = card.text
    assert "`transformers:HuggingFaceTB/SmolLM2-135M-Instruct`" in text
    assert "| 0 (No) | 5 | 4 | 0 | 1 |" in text and "| 1 (Yes) | 5 | 3 | 1 | 1 |" in text
    assert "Kept 8 of 10 rows." in text
    assert "| 0.812 | 0.500 | n/a | 0.400 | 0.250 | 0.750 |" in text
    assert "| epochs | 2 |" in text and "max steps" not in text and "| classification loss weight | 2 |" in text
    assert "**0.35**" in text and "Data: CliniFact." in text
    metrics = card.data.to_dict()["model-index"][0]["results"][0]
    assert metrics["dataset"]["name"] == "CliniFact"
    assert {m["type"] for m in metrics["metrics"]} == {"roc_auc", "f1", "r_lkappa", "rli", "readability"}


def _empty(path):
    path.mkdir()


def _gpt2(path):
    GPT2LMHeadModel(GPT2Config(vocab_size=99, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(path)


def _config_only(path):
    tiny_config().save_pretrained(path)


def _pickled_only(path):
    tiny_config().save_pretrained(path)
    (path / "pytorch_model.bin").write_bytes(b"not loaded")


def _plain_llama(path):
    LlamaForCausalLM(tiny_config()).save_pretrained(path)


def _clsgen(path):
    torch.manual_seed(0)
    LlamaForCLSGen(tiny_config()).save_pretrained(path)


def _truncated(path):
    _clsgen(path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _corrupted_header(path):
    _clsgen(path)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\x00garbage" * 4
    weights.write_bytes(bytes(data))


def _adapter_without_score(path):
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 4)},
              path / "adapter_model.safetensors")


@pytest.mark.parametrize(
    "make, message",
    [
        (None, "does not exist"),
        (_empty, "not a CLSGen checkpoint, adapter or model folder.*holds: nothing"),
        (_gpt2, r"holds no CLSGen model: .* is a `gpt2` checkpoint, but CLSGen models are built on the Llama"),
        (_config_only, "has a config.json but no weights"),
        (_pickled_only, r"pickled weights only \(pytorch_model.bin\)"),
        (_plain_llama, "without a `score` head"),
        (_truncated, r"model.safetensors is truncated or corrupted \(safetensors: .*incomplete metadata"),
        (_corrupted_header, r"model.safetensors is truncated or corrupted \(safetensors: .*header"),
        (_adapter_without_score, "holds no `score` head"),
    ],
    ids=["missing", "empty", "gpt2", "no-weights", "pickled", "plain-llama", "truncated", "corrupted",
         "adapter-no-score"],
)
def test_bad_sources_fail_with_a_clear_error(tmp_path, capsys, make, message):
    source = tmp_path / "source"
    if make is not None:
        make(source)
    with pytest.raises(UsageError, match=message):
        export_model(source, tmp_path / "out")
    assert cli_main(["export", str(source), str(tmp_path / "out")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_export_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["export", "--help"])
    assert exit_.value.code == 0
    assert "--format {merged,adapter,serving}" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------- output folder


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, _smollm2_tokenizer):
    """A tiny CLSGen model folder with the real tokenizer: what `clsgen-hf export` can read, in a second."""
    folder = tmp_path_factory.mktemp("model") / "model"
    tiny_model_for(_smollm2_tokenizer).save_pretrained(folder)
    _smollm2_tokenizer.save_pretrained(folder)
    return folder


def _snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _layout(name: str, root, model_folder) -> tuple[str, str, set[str]]:
    """(source, out_dir, files an earlier export wrote) for one layout under `root`, with user files around."""
    source = root / "parent" / "run"
    shutil.copytree(model_folder, source)
    (root / "parent" / "notes.txt").write_text("mine")
    (root / "parent" / "run" / "checkpoint-1").mkdir()
    (root / "parent" / "run" / "checkpoint-1" / "optimizer.pt").write_bytes(b"state")
    exported = set()
    if name == "user-folder":
        (root / "mine" / "sub").mkdir(parents=True)
        (root / "mine" / "mine.txt").write_text("mine")
        (root / "mine" / "sub" / "deep.txt").write_text("mine")
    if name == "partial":
        (root / "fresh.partial").mkdir()
        (root / "fresh.partial" / "mine.txt").write_text("mine")
    if name == "symlink-to-parent":
        (root / "link").symlink_to(root / "parent", target_is_directory=True)
    if name == "earlier-export":
        export_model(source, root / "previous", validate=False)
        exported = {str(p.relative_to(root)) for p in (root / "previous").iterdir()}
    out = {"source": source, "parent": root / "parent", "child": source / "export",
           "sibling": root / "parent" / "export",
           "user-folder": root / "mine", "partial": root / "fresh", "symlink-to-parent": root / "link",
           "earlier-export": root / "previous"}[name]
    return str(source), str(out), exported


LAYOUTS = {  # layout -> exit status without --overwrite, with it
    "source": (2, 2), "parent": (2, 2), "child": (2, 2), "symlink-to-parent": (2, 2), "user-folder": (2, 2),
    "sibling": (0, 0), "partial": (0, 0), "earlier-export": (2, 0),
}


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_export_never_removes_a_file_it_did_not_write(model_folder, tmp_path, capsys, layout, overwrite):
    """Whatever the layout and flags, every file that was there before (and not written by an earlier export that
    --overwrite replaces) is there after, unchanged; no temporary folder is left behind."""
    root = tmp_path / "tree"
    root.mkdir()
    source, out, exported = _layout(layout, root, model_folder)
    before = _snapshot(root)
    capsys.readouterr()
    argv = ["export", source, out, "--no_validate"] + (["--overwrite"] if overwrite else [])
    status = cli_main(argv)
    err = capsys.readouterr().err
    assert status == LAYOUTS[layout][overwrite], err
    after = _snapshot(root)
    replaced = exported if overwrite else set()
    lost = [name for name, data in before.items() if name not in replaced and after.get(name) != data]
    assert not lost, f"export {layout} (overwrite={overwrite}) removed or changed {lost}"
    assert not [p for p in root.rglob("*") if p.name.endswith((".partial", ".old")) and p.name != "fresh.partial"]
    if status == 0:
        assert (Path(out) / "model.safetensors").is_file() and (Path(out) / "config.json").is_file()
    else:
        assert err.startswith("clsgen-hf export: error: ") and len(err.strip().splitlines()) == 1, err


def test_export_refuses_an_output_around_the_source_whatever_the_flags(model_folder, tmp_path, capsys):
    source = tmp_path / "parent" / "run"
    shutil.copytree(model_folder, source)
    for out, message in ((source.parent, "contains the source folder"), (source, "is the source folder"),
                         (source / "sub", "lies inside the source folder")):
        assert cli_main(["export", str(source), str(out), "--overwrite", "--no_validate"]) == 2
        assert message in capsys.readouterr().err
    assert (source / "model.safetensors").is_file()


def test_overwrite_replaces_an_earlier_export_only(model_folder, tmp_path, capsys):
    out = tmp_path / "exp"
    export_model(model_folder, out, validate=False)
    (out / "README.md").write_text("old card")
    export_model(model_folder, out, validate=False, overwrite=True)
    assert (out / "README.md").read_text() != "old card"
    (out / "mine.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"overwrite=True replaces only a folder written by an export.*mine\.txt"):
        export_model(model_folder, out, validate=False, overwrite=True)
    assert (out / "mine.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="exists and is not empty.*overwrite=True"):
        export_model(model_folder, tmp_path / "exp", validate=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        export_model(model_folder, tmp_path / "file", validate=False, overwrite=True)


def test_overwrite_keeps_a_saved_model_no_export_wrote(model_folder, tmp_path):
    """A saved CLSGen model holds the files an export writes (config, weights, tokenizer), but no export wrote it:
    overwrite refuses to replace it."""
    out = tmp_path / "saved"
    shutil.copytree(model_folder, out)
    with pytest.raises(UsageError, match="replaces only a folder written by an export.*has no clsgen_export.json"):
        export_model(model_folder, out, validate=False, overwrite=True)
    assert _snapshot(out) == _snapshot(model_folder)


def test_a_users_partial_folder_survives_an_export(model_folder, tmp_path):
    (tmp_path / "fresh.partial").mkdir()
    (tmp_path / "fresh.partial" / "mine.txt").write_text("mine")
    export_model(model_folder, tmp_path / "fresh", validate=False)
    assert (tmp_path / "fresh.partial" / "mine.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "fresh.partial"]


def test_results_are_written_as_standard_json(model_folder, tmp_path):
    export_model(model_folder, tmp_path / "exp", validate=False, results={"auroc": float("nan"), "f1": 0.5})
    text = (tmp_path / "exp" / "clsgen_results.json").read_text()
    assert "NaN" not in text and json.loads(text) == {"auroc": None, "f1": 0.5}
