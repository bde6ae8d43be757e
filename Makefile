# Two entry points for readers (see README): `make book` and `make test`.
# Everything else here is what those two need: a pinned virtual environment,
# the datasets and the Inception weights, all fetched and checksummed by the
# project's own code.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export JAX_PLATFORMS ?= cpu
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg
# Compiled XLA programs are reused across tests, notebooks and runs (compiling the U-Net dominates on CPU).
export JAX_COMPILATION_CACHE_DIR ?= $(HOME)/.cache/qhd-book/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 1

.PHONY: setup data weights browser book test lint unit nbtest notebooks bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## setup: virtual environment, packages, datasets and metric weights (idempotent)
setup: $(STAMP) data weights

## browser: Debian's Chromium for the rendered-book check (needs root, as in CI)
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

data: $(STAMP)
	$(PY) -m qhd_lib.data fetch mnist fashion_mnist

weights: $(STAMP)
	$(PY) -m qhd_lib.metrics fetch

## book: build the rendered book from the committed notebook outputs (zero warnings)
book: setup
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

## test: the linter, the book build (-W), unit tests (the browser check reads that build),
## then every notebook executed at smoke scale
test: lint book browser unit nbtest

## lint: ruff's checks and formatting (configured in pyproject.toml); `ruff format` fixes the latter
lint: setup
	$(VENV)/bin/ruff check qhd_lib scripts tests
	$(VENV)/bin/ruff format --check qhd_lib scripts tests

unit: setup
	$(PY) -m pytest tests -q -p no:cacheprovider

nbtest: setup
	QHD_SCALE=smoke $(PY) -m pytest --nbval-lax notebooks -q -p no:cacheprovider

## notebooks: re-execute every chapter at demo scale and commit outputs (figures inline: the
## Agg backend exported above would leave the chapters without images). The saved widget state
## is dropped afterwards (nbclient fails on interactive widgets when told not to store it).
notebooks: setup
	for nb in notebooks/*.ipynb; do \
		QHD_SCALE=demo MPLBACKEND=module://matplotlib_inline.backend_inline $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=1800 "$$nb" || exit 1; \
		$(PY) -c "import nbformat, sys; nb = nbformat.read(sys.argv[1], 4); nb.metadata.pop('widgets', None); nbformat.write(nb, sys.argv[1])" "$$nb"; \
	done

## bench: speed benchmarks, JSON under results/
bench: setup
	for b in scripts/bench_*.py; do $(PY) "$$b" || exit 1; done

clean:
	rm -rf _build
