# Two commands do everything: `make run` and `make test` (see README).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEV_STAMP := $(VENV)/.requirements-dev-installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench venv dev-venv serve

venv: $(STAMP)
dev-venv: $(DEV_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when requirements.txt changed since the last install.
$(STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
		| grep -v "is ignored: it is neither a file nor a directory" || true
	$(PY) -m pip check >/dev/null || { $(PY) -m pip check; exit 1; }
	touch $@

# Tests, lint, browser tests and benchmarks add requirements-dev.txt (production's file included).
$(DEV_STAMP): requirements-dev.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2>&1 \
		| grep -v "is ignored: it is neither a file nor a directory" || true
	$(PY) -m pip check >/dev/null || { $(PY) -m pip check; exit 1; }
	touch $@

run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo --skip-checks
	$(PY) manage.py ensure_admin --skip-checks
	@echo "Serving on http://$(HOST):$(PORT)/ (demo: /demo/, admin: /admin/)"
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) chatbot.asgi:application

# Production topology on one machine: nginx on PORT in front of WORKERS daphne processes
# (deploy/serve.py; WORKERS > 1 needs REDIS_URL). Foreground; Ctrl-C stops everything.
WORKERS ?= 1
serve: $(STAMP)
	$(PY) deploy/serve.py --workers $(WORKERS) --port $(PORT) --host $(HOST)

# Rolling restart of `make serve`'s workers (SIGHUP to its supervisor): one at a time, each
# drained first (replies finish, widgets reconnect to the others); its output says when done.
.PHONY: restart
restart:
	@pid=$$(cat .serve/serve.pid 2>/dev/null) && kill -0 "$$pid" 2>/dev/null \
		|| { echo "make restart: make serve is not running (no live pid in .serve/serve.pid)" >&2; exit 1; }; \
	kill -HUP "$$pid" && echo "make restart: rolling restart asked of make serve (pid $$pid)"

test: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) manage.py makemigrations --check --dry-run >/dev/null || { echo "Missing migrations: run manage.py makemigrations"; exit 1; }
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Benchmarks print figures (never assertions): every bench/bench_*.py in turn.
bench: $(DEV_STAMP)
	@for script in bench/bench_*.py; do echo "=== $$script"; $(PY) $$script || exit 1; done
