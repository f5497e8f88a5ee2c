# Two entry points for a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := outputs/demo
DATA := data/shapes

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,onnx,serve]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check captioning tests benchmarks notebooks
	$(BIN)/ruff format --check captioning tests benchmarks notebooks
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/pytest -m slow -q

demo: $(STAMP)
	$(BIN)/captioning demo --data $(DATA) --out $(DEMO)

clean:
	rm -rf $(DEMO) lightning_logs

bench: $(STAMP)
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/decoding_attention.py
	$(BIN)/python benchmarks/beam_speed.py
	$(BIN)/python benchmarks/cider_speed.py
	$(BIN)/python benchmarks/loader_speed.py
	$(BIN)/python benchmarks/features.py --threads 2
	$(BIN)/python benchmarks/onnx_latency.py --threads 1
