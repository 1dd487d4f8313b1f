# make demo   - create .venv, install, run the Gradio demo on the bundled weights
# make test   - create .venv, install (+ Chromium on Debian/Ubuntu as root), run all tests
# make train  - train the default (compact) preset on CIFAR-100
# make bundle RUN=runs/FOLDER - make a finished run the bundled model (vit/weights/) and
#               regenerate what derives from it (faithfulness.json, screenshot); figures -> runs/figures/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= $(or $(CIFAR100_DIR),$(wildcard ../shared/data/cifar100))
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test test-fast train bench bundle install install-dev chromium clean
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
FIGURES := runs/figures

$(VENV)/.runtime: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' || \
	  { echo "error: $(PYTHON) is not Python 3.11-3.13, which TensorFlow 2.21 and Keras 3.15 need;" \
	    "run e.g. make PYTHON=python3.12 demo"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

chromium:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } \
	  || echo "note: no $(CHROMIUM); the browser test will be skipped (install Debian's chromium)"

demo: $(VENV)/.runtime
	$(PY) app.py

test: $(VENV)/.dev chromium
	$(if $(DATA),CIFAR100_DIR=$(DATA)) $(PY) -m pytest -q -rs --durations=10

test-fast: $(VENV)/.dev
	$(if $(DATA),CIFAR100_DIR=$(DATA)) $(PY) -m pytest -q -m "not slow and not browser"

train: $(VENV)/.runtime
	$(PY) train.py --preset compact $(if $(DATA),--data-dir $(DATA))

bench: $(VENV)/.runtime
	$(PY) benchmarks/inference.py
	$(PY) benchmarks/accuracy.py $(if $(DATA),--data-dir $(DATA))

ifneq ($(filter bundle,$(MAKECMDGOALS)),)
ifeq ($(RUN),)
$(error usage: make bundle RUN=runs/FOLDER (a finished train.py or average_checkpoints.py folder))
endif
ifeq ($(DATA),)
$(error make bundle: no CIFAR-100 folder; set CIFAR100_DIR)
endif
endif
# Order matters: the page's trust lines and map titles read faithfulness.json,
# so it is measured before the browser test takes the screenshot.
bundle: $(VENV)/.dev chromium
	$(PY) scripts/bundle_weights.py $(RUN) --data-dir $(DATA)
	mkdir -p $(FIGURES)
	$(PY) benchmarks/accuracy.py --data-dir $(DATA) --uploads | tee $(FIGURES)/accuracy.txt
	$(PY) benchmarks/robustness.py --data-dir $(DATA) | tee $(FIGURES)/robustness.txt
	$(PY) benchmarks/inference.py | tee $(FIGURES)/inference.txt
	$(PY) benchmarks/calibration.py --data-dir $(DATA) | tee $(FIGURES)/calibration.txt
	$(PY) benchmarks/faithfulness.py --data-dir $(DATA) --n 1000 | tee $(FIGURES)/faithfulness.txt
	SCREENSHOT_DIR=$(FIGURES) $(PY) -m pytest -q tests/test_browser.py
	cp $(FIGURES)/explore.png docs/screenshot.png

clean:
	rm -rf $(VENV) .pytest_cache
