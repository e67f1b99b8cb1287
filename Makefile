# Two commands for a new user: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED ?= ../shared/data
OUT ?= build/demo
# Offline form of the demo: make demo SOURCE=path/to/records.json.gz
SOURCE ?=

.PHONY: install demo demo-trials demo-imaging test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU build of torch first, so nothing else pulls the CUDA build
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Imaging first (fully offline, simulated data), then the live trial landscape, so that the
# demo ends with the trials report, or with one clear line when the registry is unreachable.
demo: $(STAMP)
	$(MAKE) --no-print-directory demo-imaging
	$(MAKE) --no-print-directory demo-trials

demo-trials: $(STAMP)
	$(BIN)/irtscope trials demo --out $(OUT)/trials $(if $(SOURCE),--source $(SOURCE),)

demo-imaging: $(STAMP)
	$(BIN)/irtscope imaging demo --out $(OUT)/imaging

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

bench: $(STAMP)
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build .pytest_cache
