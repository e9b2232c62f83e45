# cgt-access: `make demo` runs the platform, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
ONLY ?=
STAMP := $(VENV)/.installed
E2E_NODE := tests/e2e/node_modules/axe-core/axe.min.js

.PHONY: demo test lint typecheck unit bench install clean translations

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

$(E2E_NODE): tests/e2e/package.json tests/e2e/package-lock.json
	cd tests/e2e && npm ci --no-audit --no-fund --silent
	@touch $(E2E_NODE)

demo: $(STAMP)
	DEMO_MODE=true DATABASE_URL=sqlite:///./cgt-access.db $(BIN)/cgt-access db upgrade
	DEMO_MODE=true DATABASE_URL=sqlite:///./cgt-access.db $(BIN)/cgt-access demo seed --show-logins
	@echo ""
	@echo "cgt-access demo: open http://localhost:$(PORT)/  (Ctrl-C stops it)"
	DEMO_MODE=true DATABASE_URL=sqlite:///./cgt-access.db PORT=$(PORT) $(BIN)/cgt-access serve --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy core coordination education fhir_adapter reporting portal migrations tests

test: $(STAMP) $(E2E_NODE) lint typecheck
	$(BIN)/cgt-access content check
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup --durations=30

bench: $(STAMP)
	$(BIN)/cgt-access bench --only "$(ONLY)"

# Developers: after adding or changing a message, extract it and merge it into the Spanish
# catalog, then translate the new entries (portal/translations/README.md). Folders starting
# with "_" (templates/portal/_partials) are searched too: Babel skips them by default.
translations: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k N_ --ignore-dirs='.* __pycache__ node_modules' \
		--project=cgt-access -o portal/translations/messages.pot .
	$(BIN)/pybabel update -i portal/translations/messages.pot -d portal/translations -l es \
		--ignore-obsolete

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache cgt-access.db* tests/e2e/node_modules
