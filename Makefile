# Two entry points: `make demo` starts the web demo, `make test` runs the whole suite.
# Both create .venv and install the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

.PHONY: install demo test lint bench
install: $(BIN)/.installed

demo: install
	$(BIN)/python app.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/model_speed.py
