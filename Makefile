PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done

.PHONY: setup test demo bench fuzz lint format docs clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --no-deps torchrec==1.8.0
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/functional-opt demo

docs: setup
	$(BIN)/functional-opt plot functional_opt/data/example_recap.yaml -o docs/lr_curves.png
	$(BIN)/functional-opt plot examples/schedule_kinds.yaml -o docs/schedule_kinds.png

FUZZ_EXAMPLES ?= 5000
FUZZ_CLI_RUNS ?= 2000
fuzz: setup
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/reliability/test_fuzz_configs.py -q
	FUZZ_CLI_RUNS=$(FUZZ_CLI_RUNS) $(BIN)/python -m pytest tests/reliability/test_fuzz_cli.py -q -s

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
