# inferno developer tasks. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install prometheus lint format schemas demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## virtual environment with inferno and the dev tools

prometheus: ## the Prometheus server used by the integration tests (Debian package)
	@command -v prometheus >/dev/null || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus; }

lint: install ## ruff, mypy --strict, import-linter
	$(BIN)/ruff check inferno tests bench
	$(BIN)/ruff format --check inferno tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format inferno tests bench
	$(BIN)/ruff check --fix inferno tests bench

schemas: install ## regenerate config/schema from the pydantic specs
	$(BIN)/inferno schema --write config/schema

demo: install ## run inferno on the bundled sample system (no cluster needed)
	$(BIN)/inferno validate config/samples/small.yaml
	$(BIN)/inferno plan config/samples/small.yaml

test: install prometheus lint ## everything: lint and the whole test suite
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
