# Two entry points do all set-up on a fresh machine:
#   make run   - a real local control plane with kaito's CRDs installed, ready for kubectl
#   make test  - lint, types, import layers, then every test suite (unit, integration, e2e, vLLM)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
IVENV := .venv-inference
STAMP := $(VENV)/.kaito-installed
STATE ?= .kaito/local
PYTEST_FLAGS ?=

.PHONY: run test venv assets inference-venv lint typecheck layers unit integration e2e inference bench-small down clean

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(STAMP)

assets: venv
	$(BIN)/kaito local assets

inference-venv:
	PYTHON=$(PYTHON) bash hack/install-inference.sh

lint: venv
	$(BIN)/ruff check src tests bench examples

typecheck: venv
	$(BIN)/mypy src/kaito

layers: venv
	$(BIN)/lint-imports

# pytest exits 5 when a selection holds no test; that is not a failure of the suite.
define pytest
	$(1) -m pytest $(2) $(PYTEST_FLAGS); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc
endef

unit: venv
	$(call pytest,$(BIN)/python,tests/unit)

integration: assets
	$(call pytest,$(BIN)/python,tests/integration)

e2e: assets
	$(call pytest,$(BIN)/python,tests/e2e)

inference: inference-venv
	$(call pytest,$(IVENV)/bin/python,tests/inference)

bench-small: assets
	@for b in bench/*.py; do \
	  case $$b in bench/_*) continue;; esac; \
	  py=$(BIN)/python; [ "$$b" = bench/inference.py ] && py=$(IVENV)/bin/python; \
	  echo "== $$b --small"; $$py $$b --small || exit 1; \
	done

test: lint typecheck layers unit integration e2e inference-venv inference bench-small

run: assets
	$(BIN)/kaito local up --state-dir $(STATE)
	bash hack/run-demo.sh $(STATE)

down: venv
	$(BIN)/kaito local down --state-dir $(STATE)

clean: down
	rm -rf $(STATE)
