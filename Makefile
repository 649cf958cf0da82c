# One command to set up and run the demo, one to set up and run the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/interlink: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/interlink

setup: $(BIN)/interlink

demo: setup
	$(BIN)/interlink demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/call_rtt.py
	$(BIN)/python benchmarks/event_latency.py
	$(BIN)/python benchmarks/memory_throughput.py

clean:
	rm -rf $(VENV) interlink-demo .pytest_cache
