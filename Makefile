# make demo   - create .venv, install, run the Gradio demo on the bundled weights
# make test   - create .venv, install (+ Chromium on Debian/Ubuntu as root), run all tests
# make train  - train the default (compact) preset on CIFAR-100
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= $(or $(CIFAR100_DIR),$(wildcard ../shared/data/cifar100))
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test test-fast train bench install install-dev chromium clean

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

clean:
	rm -rf $(VENV) .pytest_cache
