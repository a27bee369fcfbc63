# One entry point per task; each bootstraps what it needs on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test check lint demo bench postgres clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev,demo]'
	touch $(STAMP)

# PostgreSQL server + client tools, installed with apt when missing (root only).
postgres:
	@bash scripts/ensure-postgres.sh

lint: $(STAMP)
	$(BIN)/ruff check preskool_dr tests bench
	$(BIN)/ruff format --check preskool_dr tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Three pytest-xdist workers on a 2-core machine: a case mostly waits (on PostgreSQL, a
# child process, the screen), the suite's CPU time is under half its serial wall time.
# PYTEST_JOBS=0 runs everything in one process.
PYTEST_JOBS ?= 3
PYTEST_PARALLEL := -n $(PYTEST_JOBS) --dist loadgroup

test: $(STAMP) postgres lint
	bash scripts/run-pytest.sh $(BIN)/pytest -q $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The fast tier for the edit loop: still real PostgreSQL and S3, without the cases marked
# slow (PITR scenarios, tmux, floods, kill-and-resume matrices). CI runs `make test`.
check: $(STAMP) postgres lint
	bash scripts/run-pytest.sh $(BIN)/pytest -q $(PYTEST_PARALLEL) -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP) postgres
	$(BIN)/preskool-dr demo $(DEMO_ARGS)

bench: $(STAMP) postgres
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
