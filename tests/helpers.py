"""Test helpers shared by several test files: loading an example script as a module, killing a training run."""

import contextlib
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil


REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def example_module(name: str):
    """`examples/<name>.py` imported as module `name` (registered in `sys.modules`, where dataclasses look their
    module up, for the duration of the block)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


def kill_after_first_checkpoint(cmd: list[str], output_dir: Path, env: dict | None = None) -> int:
    """Run `cmd` (a training run saving `output_dir/checkpoint-N` every 2 steps), SIGKILL it and every process it
    started once checkpoint 2 is complete, remove a checkpoint the kill cut short, and return the last complete
    step."""
    log = output_dir.with_name(output_dir.name + ".killed.log")
    with log.open("wb") as output:
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.time() + 300
    while not (output_dir / "checkpoint-2" / "trainer_state.json").exists():
        ended = process.poll() is not None
        assert not ended and time.time() < deadline, (
            f"training {'ended' if ended else 'ran 300 s'} before its first checkpoint: "
            f"{log.read_text(errors='replace')[-3000:]}"
        )
        time.sleep(0.5)
    time.sleep(0.5)
    workers = psutil.Process(process.pid).children(recursive=True)  # torchrun starts each in a session of its own
    for victim in [psutil.Process(process.pid), *workers]:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    process.wait()
    psutil.wait_procs(workers, timeout=30)
    complete = [p for p in output_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    for partial in set(output_dir.glob("checkpoint-*")) - set(complete):  # killed while writing it
        shutil.rmtree(partial)
    return max(int(p.name.split("-")[1]) for p in complete)
