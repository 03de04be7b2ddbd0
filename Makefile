# Two entry points: `make demo` starts the web demo, `make test` runs the whole suite.
# Both create .venv and install the pinned requirements on first use; neither needs root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

.PHONY: install demo test test-fast lint bench
install: $(BIN)/.installed

demo: install
	$(BIN)/python app.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The browser test drives an installed Chromium (Playwright never downloads one) and fails, saying how
# to install one, where there is none; .ci/run installs Debian's before calling this.
test: install lint
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (servers, the browser, other processes, resumed runs).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python -m bench.model_speed
