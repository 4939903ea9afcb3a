# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install
# the package first; where torch is missing, the CPU build (TORCH_CPU) is installed before the
# package so that pip does not pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-quick docs benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_CPU)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nplm demo

test: $(STAMP)
	$(PY) -m pytest -q

test-quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The documentation site, built strictly (a broken link or reference fails): site/index.html.
docs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	$(VENV)/bin/mkdocs build --strict --site-dir site

benchmark: $(STAMP)
	$(PY) benchmarks/kernel_vs_sklearn.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache site docs/generated
