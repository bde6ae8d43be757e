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

.PHONY: setup data weights browser book test lint unit nbtest colab device-check notebooks bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## setup: virtual environment, packages, datasets and metric weights (idempotent)
setup: $(STAMP) data weights

## browser: Debian's Chromium for the rendered-book check, which Playwright drives (no browser
## download; needs root, as in CI)
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

data: $(STAMP)
	$(PY) -m qhd_lib.data fetch mnist fashion_mnist

weights: $(STAMP)
	$(PY) -m qhd_lib.metrics fetch

## book: build the rendered book from the committed notebook outputs (zero warnings); every view
## of the chapters' widgets is rendered too (qhd_lib.sphinx_explorers), once: cached in ~/.cache
book: setup
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

## test: the linter, the book build (-W), unit tests (the browser check reads that build),
## then every notebook executed at smoke scale, on CI's pinned stack and on readers' (colab)
test: lint book browser unit nbtest colab

## lint: ruff's checks and formatting (configured in pyproject.toml); `ruff format` fixes the latter
lint: setup
	$(VENV)/bin/ruff check qhd_lib scripts tests noxfile.py
	$(VENV)/bin/ruff format --check qhd_lib scripts tests noxfile.py

unit: setup
	$(PY) -m pytest tests -q -p no:cacheprovider

## nbtest: every chapter at smoke scale; per-cell times go to _build/nbtest-junit.xml (read by
## `python -m qhd_lib.exec_times`)
nbtest: setup
	QHD_SCALE=smoke $(PY) -m pytest --nbval-lax notebooks -q -p no:cacheprovider \
		--junitxml=_build/nbtest-junit.xml

## colab: every chapter on a Colab-like older stack and on the newest releases (noxfile.py),
## installed by the chapters' own install line from a git+file:// clone of HEAD
colab: setup
	PYDEVD_DISABLE_FILE_VALIDATION=1 $(VENV)/bin/nox --no-color

## device-check: the GPU machine's stack (Python 3.12, JAX 0.11.2, no PennyLane, torch or
## matplotlib; .ci/stack-device.txt) on the CPU: every model trains and samples at smoke scale
## through scripts/device_campaign.py (noxfile.py, session `device`). Not part of `make test`:
## 19 minutes on a shared 2-core CPU the first time (compiles), 4 once its JAX cache is kept
device-check: setup
	PYDEVD_DISABLE_FILE_VALIDATION=1 $(VENV)/bin/nox --no-color -s device

## notebooks: re-execute every chapter at demo scale and commit outputs (figures inline: the
## Agg backend exported above would leave the chapters without images). The saved widget state
## is dropped afterwards (nbclient fails on interactive widgets when told not to store it).
## Last, each chapter's run time (and its smoke time from the last `make nbtest`) goes into
## results/exec_times.json and book/exec_times.md; the new outputs are not committed yet, so that
## record says dirty: after committing them, run `.venv/bin/python -m qhd_lib.exec_times` again.
notebooks: setup
	for nb in notebooks/*.ipynb; do \
		QHD_SCALE=demo MPLBACKEND=module://matplotlib_inline.backend_inline $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=1800 "$$nb" || exit 1; \
		$(PY) -c "import nbformat, sys; nb = nbformat.read(sys.argv[1], 4); nb.metadata.pop('widgets', None); nbformat.write(nb, sys.argv[1])" "$$nb"; \
	done
	$(PY) -m qhd_lib.exec_times --allow-dirty

## bench: speed benchmarks, JSON under results/
bench: setup
	for b in scripts/bench_*.py; do $(PY) "$$b" || exit 1; done

clean:
	rm -rf _build
