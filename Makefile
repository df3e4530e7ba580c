# Two entry points (see README): `make run` (the dashboard) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# A CPU build where this machine has one on disk; set TORCH=torch for your platform's default.
TORCH ?= torch==2.13.0
LANGUAGES ?= en,fr,de,es,it,ru,zh,ja,ar,hi
OUT ?= runs/default
PORT ?= 8501

BIN := $(VENV)/bin

.PHONY: run compute test lint typecheck format clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/langneurons dashboard --port $(PORT)

compute: $(BIN)/.installed
	$(BIN)/langneurons compute --languages $(LANGUAGES) --out $(OUT)

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

format: $(BIN)/.installed
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
