"""The `evaluate` modules of `evaluate_metrics/<name>/`: loaded by path (`load_metric`, never shadowed by a Hub Space),
installed into evaluate's cache for offline `evaluate.load("clsgen/<name>")` (`install_metrics`), or published as Hub
Spaces (`prepare_spaces`, `push_spaces`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .resources import resource_dir


if TYPE_CHECKING:
    import evaluate


METRIC_NAMES = ("auroc_alignment", "r_lkappa", "rli")
NAMESPACE = "clsgen"
SPACE_FILES = ("{name}.py", "README.md", "requirements.txt", "app.py")


def metrics_source_dir() -> Path:
    """The repository's `evaluate_metrics/` folder (inside the installed package, or the checkout's)."""
    return resource_dir("evaluate_metrics")


def _metric_dir(name: str) -> Path:
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; choose one of {METRIC_NAMES}.")
    return metrics_source_dir() / name


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of the metric folder by path (kwargs go to `evaluate.load`, e.g. `config_name="multiclass"`)."""
    import evaluate

    return evaluate.load(str(_metric_dir(name)), **kwargs)


def install_metrics(cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Place each metric where `evaluate.load("clsgen/<name>")` finds it offline; returns the installed files.

    Offline, evaluate takes the newest copy in `<cache_dir>/evaluate_modules/metrics/<namespace>--<name>/<hash>/`, the
    layout its Hub download writes. `cache_dir` defaults to evaluate's `HF_MODULES_CACHE`.
    """
    from evaluate.loading import files_to_hash, init_dynamic_modules

    dynamic_modules = Path(init_dynamic_modules(hf_modules_cache=cache_dir))  # <cache>/evaluate_modules
    installed = []
    for name in METRIC_NAMES:
        source = _metric_dir(name) / f"{name}.py"
        target_dir = dynamic_modules / "metrics" / f"{NAMESPACE}--{name}" / files_to_hash([str(source)])
        target_dir.mkdir(parents=True, exist_ok=True)
        for package in (target_dir.parents[1], target_dir.parent, target_dir):
            (package / "__init__.py").touch()
        target = target_dir / f"{name}.py"
        shutil.copyfile(source, target)  # a fresh modification time: evaluate takes the newest cached copy
        installed.append(target)
    return installed


def prepare_spaces(out_dir: str | os.PathLike, namespace: str = NAMESPACE) -> list[Path]:
    """Write one Hub Space folder per metric (module, card, requirements.txt, app.py) under `out_dir`, its app loading
    `"<namespace>/<name>"` (the namespace the Spaces will be pushed to)."""
    folders = []
    for name in METRIC_NAMES:
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        for file in (f.format(name=name) for f in SPACE_FILES):
            shutil.copyfile(_metric_dir(name) / file, folder / file)
        app = folder / "app.py"
        app.write_text(app.read_text().replace(f'"{NAMESPACE}/{name}"', f'"{namespace}/{name}"'))
        folders.append(folder)
    return folders


def push_spaces(out_dir: str | os.PathLike, namespace: str, token: str | None = None) -> list[str]:
    """Create (if needed) and upload the Spaces prepared by `prepare_spaces` under `out_dir`; returns their URLs."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    urls = []
    for name in METRIC_NAMES:
        folder = Path(out_dir) / name
        app = folder / "app.py"
        if not app.is_file() or f'"{namespace}/{name}"' not in app.read_text():
            raise ValueError(
                f"{folder} is not prepared for {namespace!r}: run prepare_spaces(out_dir, {namespace!r})."
            )
        repo = api.create_repo(f"{namespace}/{name}", repo_type="space", space_sdk="gradio", exist_ok=True)
        api.upload_folder(repo_id=repo.repo_id, folder_path=folder, repo_type="space", commit_message=f"Upload {name}")
        urls.append(str(repo))
    return urls


__all__ = ["METRIC_NAMES", "install_metrics", "load_metric", "metrics_source_dir", "prepare_spaces", "push_spaces"]
