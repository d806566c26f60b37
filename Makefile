# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned here only so a CPU-only machine gets the CPU build;
# on GPU machines override it, e.g. `make TORCH="torch==2.5.1" demo`, or pre-install torch.
TORCH ?= torch==2.13.0

.PHONY: install extras demo lint test bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# the optional trackers and the Ray backend, so that their tests run instead of skipping
extras: install
	$(BIN)/pip install -q -e ".[dev,mlflow,tensorboard,ray]"

demo: install
	$(BIN)/thresher train --dataset digits --model mlp --epochs 15

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf $(VENV) build src/*.egg-info
