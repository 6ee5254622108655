# Two entry points (see README): `make demo` runs the main job, `make test` the test suite.
# Both create a local virtual environment in .venv with the CPU build of torch.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# Use the local wheel store when the machine has one (the CPU build of torch lies there).
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
STAMP  := $(VENV)/.genstat-installed

.PHONY: demo test test-all gpu-check setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Install torch first and pinned, so no dependency can pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet $(FIND_LINKS) "$(TORCH)"
	$(PY) -m pip install --quiet $(FIND_LINKS) -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/genstat run experiments/quickstart.yaml

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

# On a CUDA machine (install a CUDA build of torch first, see README): the gpu-marked tests, then
# CPU-vs-CUDA timings written to docs/gpu.md. Without CUDA both say so and exit 0.
gpu-check:
	$(PY) -m pytest -m gpu -q
	$(PY) -m genstat.experiments.gpu_check --out docs/gpu.md

clean:
	rm -rf $(VENV) runs
