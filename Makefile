# One command to set up and run the demo, one to set up and run the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint bench reliability soak tck clean

$(BIN)/interlink: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/interlink

setup: $(BIN)/interlink

demo: setup
	$(BIN)/interlink demo

test: setup lint
	$(BIN)/python -m pytest -q

# Static checks, run by `make test` (and so by CI): ruff's rules and mypy --strict, both
# configured in pyproject.toml.
lint: setup
	$(BIN)/ruff check src tests reliability
	$(BIN)/mypy

bench: setup
	$(BIN)/interlink bench --json bench.json --plot bench.png

# The crash loop at full size (a real hub SIGKILLed at random moments under calls, events and
# CAS from other processes; the seed is printed). `make test` runs a short one.
#   make reliability [SEED=N]
SEED ?=
reliability: setup
	$(BIN)/python reliability/crash.py $(if $(SEED),--seed $(SEED),)

# The soak (5 minutes, 40 agents) and the noisy neighbour; `make test` runs short ones.
soak: setup
	$(BIN)/python reliability/soak.py
	$(BIN)/python reliability/noisy.py

# A2A conformance, not part of `make test`: the kit (a2aproject/a2a-tck, branch 1.0-dev, a
# checkout with its own dependencies installed) against a mesh agent served at /a2a/tck by
# tests/tck/sut.py, which runs for the kit only and is stopped afterwards.
#   make tck TCK_DIR=/path/to/a2a-tck
# TCK_DIR     the kit's checkout (required); its reports go to $(TCK_DIR)/reports/
# TCK_PYTHON  the kit's interpreter (default: the venv `uv venv` makes in the checkout)
# TCK_PORT    the port of the hub serving the test agent
# TCK_LEVEL   must, should or may
# TCK_ARGS    more run_tck.py arguments, e.g. TCK_ARGS="--transport jsonrpc -v"
# The kit sends no credentials, so the test hub lets requests without a token to /a2a/tck act as
# the enrolled agent tck-client (its opt-in `hub.a2a_anonymous_caller`; off by default).
TCK_DIR    ?=
TCK_PYTHON ?= $(TCK_DIR)/.venv/bin/python
TCK_PORT   ?= 7799
TCK_LEVEL  ?= must
TCK_ARGS   ?=

tck: setup
	@test -n "$(TCK_DIR)" && test -f "$(TCK_DIR)/run_tck.py" || { \
	  echo "usage: make tck TCK_DIR=/path/to/a2a-tck (branch 1.0-dev)"; exit 2; }
	@test -x "$(TCK_PYTHON)" || { echo "no $(TCK_PYTHON): install the kit's dependencies" \
	  "(cd $(TCK_DIR) && uv venv && uv pip install -e .) or set TCK_PYTHON"; exit 2; }
	@work=$$(mktemp -d); \
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python tests/tck/sut.py --port $(TCK_PORT) --open \
	  --home $$work/home --ready-file $$work/ready & sut=$$!; \
	trap 'kill $$sut 2>/dev/null; wait $$sut 2>/dev/null; rm -rf $$work' EXIT; \
	for i in $$(seq 150); do test -s $$work/ready && break; \
	  kill -0 $$sut 2>/dev/null || exit 1; sleep 0.2; done; \
	test -s $$work/ready || { echo "the test agent did not start"; exit 1; }; \
	cd "$(TCK_DIR)" && "$(TCK_PYTHON)" run_tck.py \
	  --sut-host http://127.0.0.1:$(TCK_PORT)/a2a/tck --level $(TCK_LEVEL) $(TCK_ARGS)

clean:
	rm -rf $(VENV) interlink-demo .pytest_cache
