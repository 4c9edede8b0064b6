# Every target does its own set-up: `make demo` and `make test` work on a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PRESET  ?= quick
WHEELS  := $(wildcard /opt/wheels)

.PHONY: setup demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch==2.13.0 goes in first (then the project with its dev and ray extras: CI runs a Ray sweep) (a CPU wheel is on this machine's disk); the project's own
# torch range admits it, so nothing later can pull a CUDA build over it.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(if $(WHEELS),--find-links $(WHEELS)) torch==2.13.0
	$(BIN)/pip install --quiet $(if $(WHEELS),--find-links $(WHEELS)) -e '.[dev,ray]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/overparam tour --preset $(PRESET)

test: setup
	$(BIN)/python -m pytest tests

# Benchmark peers go in with --no-deps: their own requirements would upgrade torch.
PEERS := $(VENV)/.peers
$(PEERS): | $(STAMP)
	$(BIN)/pip install --quiet --no-deps pyhessian==0.1 curvlinops-for-pytorch==3.0.1 einops einconv linear-operator==0.6.1 nngeometry==0.4 tensorly-torch==0.5.0 hessian-eigenthings==1.0.0a5
	touch $(PEERS)

bench: setup $(PEERS)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
