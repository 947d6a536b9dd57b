"""The wheel installs one top-level package, `clsgen_hf`, carrying the repository's metric modules and model-card
template; installed from it (not a checkout), `clsgen-hf install-metrics` and `evaluate.load("clsgen/<name>")` work."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from clsgen_hf.metric_modules import METRIC_NAMES, SPACE_FILES


REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "clsgen_hf", "evaluate_metrics", "model_cards")

INSTALLED_CHECK = """
import json, subprocess, sys
import clsgen_hf
from clsgen_hf.metric_modules import metrics_source_dir
from clsgen_hf.model_card import MODEL_CARD_TEMPLATE
subprocess.run([sys.executable, "-m", "clsgen_hf.cli", "install-metrics", "--cache_dir", sys.argv[1]], check=True)
print(json.dumps({"package": clsgen_hf.__file__, "metrics": str(metrics_source_dir()),
                  "template": str(MODEL_CARD_TEMPLATE), "template_exists": MODEL_CARD_TEMPLATE.is_file()}))
"""
OFFLINE_LOAD = """
import evaluate
print(evaluate.load("clsgen/auroc_alignment").compute(probabilities=[0.9, 0.2], verdicts=[1, 0]))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout's sources (the build leaves nothing in the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    (tmp / "source").mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, tmp / "source" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(REPO / name, tmp / "source" / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(tmp / "dist"), str(tmp / "source")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = (tmp / "dist").glob("clsgen_hf-*.whl")
    return built


def test_wheel_holds_one_top_level_package_with_its_resources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"clsgen_hf"}
    modules = {path.relative_to(REPO).as_posix() for path in (REPO / "clsgen_hf").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    resources = {f"clsgen_hf/evaluate_metrics/{metric}/{file.format(name=metric)}" for metric in METRIC_NAMES
                 for file in SPACE_FILES} | {"clsgen_hf/model_cards/clsgen_model_card.md"}
    assert resources <= names, sorted(resources - names)


def test_installed_wheel_finds_its_resources_and_installs_the_metrics(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # The installed copy alone: no checkout on the path, the venv's dependencies behind it.
    env = {**os.environ, "PYTHONPATH": str(site), "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", INSTALLED_CHECK, str(tmp_path / "modules")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    package = site / "clsgen_hf"
    assert Path(found["package"]).parent == package
    assert Path(found["metrics"]) == package / "evaluate_metrics"
    assert Path(found["template"]).parent == package / "model_cards" and found["template_exists"]

    done = subprocess.run([sys.executable, "-c", OFFLINE_LOAD], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "auroc_alignment" in done.stdout
