# Two commands do all the set-up: `make train` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch that already lies on this disk is preferred over a multi-GB CUDA download.
TORCH_WHEELS ?= /opt/wheels
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=

.PHONY: install train test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  if ls $(TORCH_WHEELS)/torch-*.whl >/dev/null 2>&1; then \
	    wheel=$$(ls $(TORCH_WHEELS)/torch-*.whl | sort -V | tail -n 1); \
	    $(BIN)/pip install --quiet --find-links $(TORCH_WHEELS) "torch==$$(basename $$wheel | cut -d- -f2)"; \
	  else \
	    $(BIN)/pip install --quiet torch --index-url $(TORCH_CPU_INDEX); \
	  fi
	$(BIN)/pip install --quiet -e ".[dev,launchers,trackers,tune]"
	touch $@

train: install
	HF_HUB_OFFLINE=1 $(BIN)/mtexp-train $(ARGS)

test: install lint
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install lint
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
