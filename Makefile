# Each target creates .venv and installs the project when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: install test test-fast demo serve stop bench loadtest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x -m "not slow"

demo: $(STAMP)
	$(BIN)/nextbest demo

# Migrate, then serve on 127.0.0.1:$(PORT) in the background; returns once the API answers.
serve: $(STAMP)
	$(BIN)/nextbest db upgrade
	$(BIN)/nextbest serve --port $(PORT) --background

stop: $(STAMP)
	$(BIN)/nextbest stop

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# Load test against PostgreSQL on 127.0.0.1, then a database-outage fault test against a private cluster it
# creates in a temporary directory on another port, then two service instances on one database with one
# killed and restarted (sizes: LOADTEST_*, FAULTTEST_*, MULTIHOST_*).
loadtest: $(STAMP)
	$(BIN)/python bench/loadtest.py
	$(BIN)/python bench/faulttest.py
	$(BIN)/python bench/multihost.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache nextbest.sqlite3* tour.sqlite3* nextbest.log nextbest.pid
