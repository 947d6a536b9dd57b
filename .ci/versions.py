"""Version ends for CI: what to install for `make test-oldest`/`test-latest`, and which packages moved from the lock.

    python .ci/versions.py oldest constraints.txt   -> pip arguments: the lock, with transformers/TRL/PEFT at the
                                                       lower bounds pyproject.toml declares
    python .ci/versions.py latest constraints.txt   -> pip arguments: none (a fresh resolve takes the newest allowed)
    python .ci/versions.py report constraints.txt [--failed END]
                                                    -> the installed versions that differ from the lock; with
                                                       --failed, the one-line verdict CI prints when tests fail
"""

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
OLDEST = ("transformers", "trl", "peft")
WATCHED = ("transformers", "trl", "peft", "accelerate", "datasets", "evaluate", "huggingface-hub", "torch", "safetensors",
           "tokenizers")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[canonical(name)] = version.strip()
    return pins


def lower_bounds() -> dict[str, str]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = {}
    for requirement in dependencies:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*[^>]*>=\s*([0-9][0-9.]*)", requirement)
        if match:
            bounds[canonical(match.group(1))] = match.group(2)
    return bounds


def oldest_arguments(lock: Path) -> str:
    bounds = lower_bounds()
    pins = {name: version for name, version in read_lock(lock).items() if name not in OLDEST}
    pins.update({name: bounds[name] for name in OLDEST})
    constraints = ROOT / ".venv-oldest" / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    return f"-c {constraints}"


def moved(lock: Path) -> list[str]:
    pins = read_lock(lock)
    changes = []
    for name in WATCHED:
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if pins.get(name) != installed:
            changes.append(f"{name} {pins.get(name, 'unpinned')} -> {installed}")
    return changes


def main(argv: list[str]) -> int:
    command, lock = argv[0], Path(argv[1])
    if command == "oldest":
        print(oldest_arguments(lock))
    elif command == "latest":
        print("")
    elif command == "report":
        changes = moved(lock)
        if "--failed" in argv:
            end = argv[argv.index("--failed") + 1]
            moved_text = (f"moved from the lock ({lock.name}): {', '.join(changes)}" if changes else
                          f"nothing moved from the lock ({lock.name}): the failure is in this code, not upstream")
            print(f"CI: the fast tests FAIL on the {end} versions allowed by pyproject.toml; {moved_text}.", file=sys.stderr)
        else:
            print(f"versions that differ from {lock.name}: {', '.join(changes) or 'none'}")
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
