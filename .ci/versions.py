"""Version ends for CI: what to install for `make test-oldest`/`test-latest`, and which packages moved from the lock.

    python .ci/versions.py oldest constraints.txt   -> pip arguments: the lock, with transformers/TRL/PEFT at the
                                                       lower bounds pyproject.toml declares
    python .ci/versions.py snapshot FILE            -> write the installed versions of the watched packages to FILE
                                                       (the newest leg: after a plain `pip install .`)
    python .ci/versions.py extras FILE constraints.txt
                                                    -> after the test extras: print the versions the leg tests, and
                                                       fail if the extras moved transformers/TRL/PEFT/accelerate below
                                                       what the plain install resolved (FILE)
    python .ci/versions.py report constraints.txt [--failed END]
                                                    -> the installed versions that differ from the lock; with
                                                       --failed, the one-line verdict CI prints when tests fail
"""

import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.version import Version


ROOT = Path(__file__).resolve().parent.parent
OLDEST = ("transformers", "trl", "peft")
# The test extras must not pull these below what a plain `pip install .` resolves: the leg would test older releases
# than users get.
NOT_BELOW_PLAIN = ("transformers", "trl", "peft", "accelerate")
WATCHED = ("transformers", "trl", "peft", "accelerate", "datasets", "evaluate", "huggingface-hub", "torch",
           "safetensors", "tokenizers")


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


def installed() -> dict[str, str]:
    versions = {}
    for name in WATCHED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def check_extras(plain_file: Path, lock: Path) -> int:
    plain, now = json.loads(plain_file.read_text()), installed()
    print("CI newest leg tests: " + ", ".join(f"{name} {version}" for name, version in now.items()))
    print(f"versions that differ from {lock.name}: {', '.join(moved(lock)) or 'none'}")
    lowered = [f"{name} {plain[name]} -> {now.get(name, 'missing')}" for name in NOT_BELOW_PLAIN
               if name in plain and (name not in now or Version(now[name]) < Version(plain[name]))]
    if lowered:
        print(f"CI: FAIL: the test extras pulled older releases than a plain `pip install .`: {', '.join(lowered)}",
              file=sys.stderr)
        return 1
    return 0


def moved(lock: Path) -> list[str]:
    pins = read_lock(lock)
    return [f"{name} {pins.get(name, 'unpinned')} -> {version}" for name, version in installed().items()
            if pins.get(name) != version]


def main(argv: list[str]) -> int:
    command, lock = argv[0], Path(argv[1])
    if command == "oldest":
        print(oldest_arguments(lock))
    elif command == "snapshot":
        Path(argv[1]).write_text(json.dumps(installed()))
    elif command == "extras":
        return check_extras(Path(argv[1]), Path(argv[2]))
    elif command == "report":
        changes = moved(lock)
        if "--failed" in argv:
            end = argv[argv.index("--failed") + 1]
            moved_text = (f"moved from the lock ({lock.name}): {', '.join(changes)}" if changes else
                          f"nothing moved from the lock ({lock.name}): the failure is in this code, not upstream")
            print(f"CI: the fast tests FAIL on the {end} versions allowed by pyproject.toml; {moved_text}.",
                  file=sys.stderr)
        else:
            print(f"versions that differ from {lock.name}: {', '.join(changes) or 'none'}")
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
