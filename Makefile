# medclf: `make train` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 5000
DOCS_PORT ?= 8000
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: setup train test test-fast lint format ui label mlflow-server server report docs clean

# Headless Chromium and PostgreSQL from apt when missing (the run report's browser test; the
# team server, medclf-server, and its tests; set-up runs as root in CI). torch/torchvision
# first, pinned: this machine serves these wheels from its own disk.
$(STAMP): pyproject.toml
	command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
		|| (apt-get update && apt-get install -y postgresql)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# dcurves: the tests' oracle for decision curves, without its dependencies (its lifelines
	# pins pandas<3 and serves only survival analysis; the test stubs it)
	$(BIN)/python -m pip install --quiet --no-deps dcurves==1.1.7
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

# The whole suite, two workers (pytest-xdist; tests sharing a session fixture or a server
# stay on one worker: xdist_group), the 25 slowest tests listed.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist loadgroup --durations=25 $(PYTEST_ARGS)

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The MLflow dashboard over the default store, bound to 127.0.0.1 only.
ui: $(STAMP)
	$(BIN)/medclf-ui --port $(PORT)

# Label images in the browser (127.0.0.1, the URL with its token is printed):
#   make label ARGS="data_dir=/data/xray 'classes=[normal,pneumonia]'"
label: $(STAMP)
	$(BIN)/python label.py $(ARGS)

# A tracking server on 127.0.0.1 (SQLite backend, the default store) for parallel sweeps:
#   python train.py -m hydra/launcher=joblib logger.mlflow.tracking_uri=http://127.0.0.1:5000 ...
mlflow-server: $(STAMP)
	$(BIN)/medclf-ui --port $(PORT)

# The team's back end: PostgreSQL (a cluster in server/, made on first use) and an MLflow
# server on it; prints logger.mlflow.tracking_uri=... and hydra.sweeper.storage=... to paste
# into the searches of every GPU and node. Ctrl-C stops both:
#   make server [ARGS="host=0.0.0.0 port=5000 db_port=5432"]
server: $(STAMP)
	$(BIN)/medclf-server $(ARGS)

# Compare an experiment's runs in the terminal: make report [EXPERIMENT=medclf]
report: $(STAMP)
	$(BIN)/medclf-report $(EXPERIMENT)

# The documentation site on http://127.0.0.1:8000, rebuilt when a page changes (the tests run
# `mkdocs build --strict`: tests/docs/test_site.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

clean:
	rm -rf logs site .pytest_cache .ruff_cache
