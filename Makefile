# Every target does its own set-up: a virtualenv under the checkout with the
# package installed in editable mode and its test extra.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000

.PHONY: run test lint typecheck check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start the echo server on port $(PORT) in the foreground (Ctrl-C stops it);
## PROTOCOL=examples.echo_server.EchoServer (any --protocol) serves another handler
run: $(STAMP)
	$(BIN)/twistd --pidfile= -n stateproto --listen tcp:$(PORT) $(if $(PROTOCOL),--protocol $(PROTOCOL))

## test: lint, type-check and run the whole test suite
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: every benchmark of issue 9 (about 20 minutes on the 2-core machine, tail calls included);
## writes docs/benchmarks.md and docs/benchmarks.png. Needs cc; strace optional.
## BENCH_ARGS=--quick for a one-minute smoke test into bench/results/quick/.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
