"""Loading the alignment metrics with evaluate: by path, installed for offline `evaluate.load("clsgen/<name>")`,
and as Hub Space folders."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import evaluate
import pytest
from huggingface_hub import SpaceCard, metadata_load

from clsgen_hf.commands.install_metrics import main as install_metrics_main
from clsgen_hf.metric_modules import (
    METRIC_NAMES,
    install_metrics,
    load_metric,
    metrics_source_dir,
    prepare_spaces,
    push_spaces,
)
from clsgen_hf.metrics import auroc_alignment, r_lkappa, rli


REPO = Path(__file__).resolve().parents[1]
INPUTS = dict(probabilities=[0.9, 0.2, 0.7, 0.4, 0.6], verdicts=[1, 0, 0, -1, 1])
EXPECTED = {**auroc_alignment(**INPUTS), **r_lkappa(**INPUTS), **rli(**INPUTS)}


def test_metrics_source_dir_is_the_repository_folder():
    assert metrics_source_dir() == REPO / "evaluate_metrics"


def test_evaluate_load_from_the_repository_path(monkeypatch):
    monkeypatch.chdir(REPO)
    metric = evaluate.load("evaluate_metrics/auroc_alignment")
    assert metric.compute(**INPUTS)["auroc_alignment"] == EXPECTED["auroc_alignment"]


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_load_metric_loads_the_local_code_even_beside_a_namesake(name, tmp_path, monkeypatch):
    # A folder named like the metric in the working directory is what `evaluate.load(name)` would pick first.
    decoy = tmp_path / name / f"{name}.py"
    decoy.parent.mkdir()
    decoy.write_text("raise ImportError('the decoy was loaded')\n")
    monkeypatch.chdir(tmp_path)
    result = load_metric(name).compute(**INPUTS)
    assert {key: EXPECTED[key] for key in result if key in EXPECTED} == result


def test_load_metric_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown metric"):
        load_metric("accuracy")


# Run in a fresh interpreter: evaluate reads HF_MODULES_CACHE and the offline switches when it is imported.
OFFLINE_LOAD = """
import json, evaluate
results = {}
for name in ("auroc_alignment", "r_lkappa", "rli"):
    results.update(evaluate.load(f"clsgen/{name}").compute(**json.loads('INPUTS')))
print(json.dumps(results))
"""


def test_installed_metrics_load_offline_in_a_fresh_process(tmp_path):
    cache = tmp_path / "modules"
    # A stale copy of an older version, as a previous install or download leaves it: the newest copy must win
    # (this one sorts last by name, first by age).
    stale = cache / "evaluate_modules" / "metrics" / "clsgen--rli" / ("f" * 64) / "rli.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("raise ImportError('the stale copy was loaded')\n")
    os.utime(stale, (0, 0))

    installed = install_metrics(cache)

    for name, path in zip(METRIC_NAMES, installed):
        assert re.fullmatch(rf"evaluate_modules/metrics/clsgen--{name}/[0-9a-f]{{64}}/{name}\.py",
                            path.relative_to(cache).as_posix())
        assert path.read_text() == (metrics_source_dir() / name / f"{name}.py").read_text()
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(cache),
        "HF_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
    }
    script = OFFLINE_LOAD.replace("INPUTS", json.dumps(INPUTS))
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == EXPECTED


def test_prepare_spaces_writes_loadable_space_folders(tmp_path):
    folders = prepare_spaces(tmp_path, namespace="someone")
    assert [folder.name for folder in folders] == list(METRIC_NAMES)
    for name, folder in zip(METRIC_NAMES, folders):
        expected = sorted([f"{name}.py", "README.md", "requirements.txt", "app.py"])
        assert sorted(p.name for p in folder.iterdir()) == expected
        card = SpaceCard.load(folder / "README.md")
        assert (card.data.sdk, card.data.app_file) == ("gradio", "app.py")
        assert {"evaluate", "metric"} <= set(card.data.tags)
        assert metadata_load(folder / "README.md")["sdk"] == "gradio"
        assert "## Citation" in card.text and "2604.11801" in card.text
        assert f'evaluate.load("someone/{name}")' in (folder / "app.py").read_text()
        assert "scikit-learn" in (folder / "requirements.txt").read_text()


def test_push_spaces_refuses_folders_prepared_for_another_namespace(tmp_path):
    prepare_spaces(tmp_path)  # for "clsgen"
    with pytest.raises(ValueError, match="not prepared for 'someone'"):
        push_spaces(tmp_path, "someone")


def test_cli_help_exits_0():
    done = subprocess.run(
        [sys.executable, "-m", "clsgen_hf.cli", "install-metrics", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "offline" in done.stdout and "--cache_dir" in done.stdout and "--spaces" in done.stdout


def test_cli_installs_and_prepares(tmp_path, capsys):
    assert install_metrics_main(["--cache_dir", str(tmp_path / "modules")]) == 0
    out = capsys.readouterr().out
    assert out.count(f"installed {tmp_path / 'modules'}") == len(METRIC_NAMES)
    assert 'evaluate.load("clsgen/' in out
    assert install_metrics_main(["--spaces", str(tmp_path / "spaces")]) == 0
    assert sorted(p.name for p in (tmp_path / "spaces").iterdir()) == sorted(METRIC_NAMES)


def test_cli_push_needs_spaces(capsys):
    assert install_metrics_main(["--push", "someone"]) == 2
    assert capsys.readouterr().err.strip() == ("clsgen-hf install-metrics: error: --push uploads the folders written "
                                               "by --spaces: give both.")
