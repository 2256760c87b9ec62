# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv, installs takealook with what it needs, and installs the
# system packages (PostgreSQL, pg_stat_statements, HypoPG, Chromium) when missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test setup setup-system bench clean

demo: setup
	$(BIN)/takealook demo -o report.html

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: setup-system $(VENV)/.installed

setup-system:
	@scripts/setup-system.sh

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "takealook needs Python 3.10+ to develop (the agent alone runs on 3.9): make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

bench: setup
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .takealook build *.egg-info
