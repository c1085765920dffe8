# Two commands do all set-up on a fresh machine:  make demo   and   make test
# The venv is (re)built when pyproject.toml changes; Delta's jars are resolved from Maven
# Central once into .cache/ and used offline afterwards.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export LEANSCORE_CACHE ?= $(CURDIR)/.cache
JARS := $(LEANSCORE_CACHE)/jars/.resolved

WORKDIR ?= demo-output
ROWS ?= 1000000

.PHONY: setup demo test bench lint format clean

setup: $(STAMP) $(JARS)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(JARS): $(STAMP)
	$(PY) -m jobs.jars > /dev/null
	mkdir -p $(dir $@) && touch $@

demo: setup
	$(VENV)/bin/leanscore demo --workdir $(WORKDIR) --rows $(ROWS)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: setup
	$(VENV)/bin/leanscore bench --config conf/bench.yaml --out bench-output

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf $(WORKDIR) bench-output spark-warehouse .pytest_cache
