# Genesis — the two commands a person needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export GENESIS_SIMULATOR_API_KEY ?= sim-key

.PHONY: run test lint imports install migrate clean-var

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Test-only packages (schemathesis for the API fuzz test), on top of the above.
$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

# Migrate, seed the demo world, then run the simulator, Celery worker, Celery beat and the web server
# until Ctrl-C (all in scripts/run.sh, after it has checked that its ports are free). Embedded SQLite +
# file-system broker under var/ unless DATABASE_URL / REDIS_URL are set.
run: install
	./scripts/run.sh

# The whole suite, with the API fuzz test (schemathesis, requirements-test.txt) and the browser tests
# (Debian's chromium at /usr/bin/chromium; skipped without it unless GENESIS_REQUIRE_SERVICES=1).
# Uses Postgres/Redis when reachable (DATABASE_URL / REDIS_URL or local defaults);
# GENESIS_REQUIRE_SERVICES=1 makes their absence an error.
test: install $(VENV)/.installed-test lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Static checks, configured in pyproject.toml: ruff (pyflakes, isort, bugbear, the Django rules,
# complexity), mypy with django-stubs, and the import-graph contracts.
lint: $(VENV)/.installed-test imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The import-graph contracts (pyproject.toml [tool.importlinter]): the apps' layers and no cycle
# between the sub-packages of an app.
imports: $(VENV)/.installed-test
	$(VENV)/bin/lint-imports
