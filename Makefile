# One entry point for everything: `make run` starts a local farm, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

PROTO_SRC := $(wildcard protos/boruta/v1/*.proto)
PROTO_OUT := protos/python/src
PACKAGES := protos/python services/scheduler services/dryad clients/python
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))
INSTALL := protos/python services/scheduler[postgresql] services/dryad clients/python[cli]

.PHONY: help venv system proto proto-check proto-lint lint typecheck test unit run run-ha bench clean

help:
	@echo "make run      start a local farm (scheduler, dryads, sshd; needs root) and print what to try"
	@echo "make run-ha   the same with two schedulers on a local PostgreSQL: kill the leader, see the other take over"
	@echo "make test     every check CI runs: generated code, lint, types, tests"
	@echo "make proto    regenerate Python code and type stubs from protos/"
	@echo "make bench    run the benchmarks and write docs/benchmarks.md"

venv: $(VENV)/.installed

# pip is not quiet: the first build takes minutes, and its lines show it is getting on.
$(VENV)/.installed: requirements/dev.txt $(PYPROJECTS)
	@echo "== make venv: creating $(VENV) (a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "== make venv: installing the dev tools and boruta's packages"
	$(BIN)/pip install --progress-bar off -r requirements/dev.txt $(addprefix -e ,$(INSTALL))
	touch $@
	@echo "== make venv: done"

# Generated code is committed so that `pip install` needs no protoc; proto-check keeps it honest.
proto: venv
	$(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTO_SRC)

proto-check: venv
	@rm -rf .proto-check && mkdir -p .proto-check
	@$(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=.proto-check --grpc_python_out=.proto-check \
		--mypy_out=.proto-check --mypy_grpc_out=.proto-check $(PROTO_SRC)
	@diff -r -x __init__.py -x py.typed -x __pycache__ .proto-check/boruta/v1 $(PROTO_OUT)/boruta/v1 \
		|| (echo "generated code is stale: run 'make proto' and commit the result" >&2; exit 1)
	@rm -rf .proto-check
	@echo "generated code is up to date"

proto-lint: venv
	cd protos && $(BIN)/buf lint

lint: venv proto-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest services clients

# As root, `make test` is exactly what CI runs: it installs OpenSSH, the user tools and
# PostgreSQL, and the tests that need root, sshd or PostgreSQL fail instead of skipping.
# As another user it says that those tests may be skipped, so a green run there is not
# CI's green run (PostgreSQL's tests run as any user where its programs are installed).
system:
	@if [ "$$(id -u)" -eq 0 ]; then bash tools/setup-system; \
	else echo "not root: system packages not installed; tests that need root, sshd or PostgreSQL may be SKIPPED (CI runs them as root)" >&2; fi

# Two workers (CI has 2 cores; most of a test's time is waiting on processes, sockets and
# disks), each given whole files so that a module's fixtures start once. Every test already
# has to pass beside another run of the suite (unique names, users, ports and paths).
TEST_WORKERS ?= 2
test: system venv proto-check lint typecheck
	@if [ "$$(id -u)" -eq 0 ]; then export BORUTA_REQUIRE_SYSTEM=1; fi; \
		$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# A real farm on this machine: scheduler, dryads with real job users, a private sshd.
run: system venv
	$(BIN)/python tools/local_farm.py

# Two schedulers (leader and standby) on a throwaway PostgreSQL cluster, the relay, 3 boards.
run-ha: system venv
	$(BIN)/python tools/local_farm.py --ha

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .proto-check .farm .farm-ha .pytest_cache .mypy_cache .ruff_cache
