# Two entry points do all set-up on a fresh machine:
#   make run   - a real local control plane, kaito's controller and the README's Workspaces, Ready
#   make test  - lint, types, import layers, then every test suite (unit, integration, e2e, vLLM)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
IVENV := .venv-inference
STAMP := $(VENV)/.kaito-installed
STATE ?= .kaito/local
REAL_STATE ?= .kaito/real
PYTEST_FLAGS ?= --durations=15

.PHONY: run run-real e2e-real test venv assets inference-venv lint typecheck layers unit integration e2e reliability inference tuning bench-small down clean

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(STAMP)

assets: venv
	$(BIN)/kaito local assets --node  # --node: kubelet, kube-proxy, containerd & co. for the real-node tests
	$(BIN)/python -m kaito.envtest.helm  # helm for the chart tests (cached after the first build)

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

# the local-node tests run kaito's images as .venv-inference processes, so that venv comes first
integration: assets inference-venv
	$(call pytest,$(BIN)/python,tests/integration)

e2e: assets
	$(call pytest,$(BIN)/python,tests/e2e)

# Chaos, API faults, failover, fuzzed input, soak and secret checks (issue 14; docs/reliability.md)
reliability: assets
	$(call pytest,$(BIN)/python,tests/reliability)

inference: inference-venv
	$(call pytest,$(IVENV)/bin/python,tests/inference)

# The tuning runtime; its fixtures start a real OCI registry with hack/registry.sh.
tuning: inference-venv
	$(call pytest,$(IVENV)/bin/python,tests/tuning tests/weights_images)

# Small runs are smoke tests: bench/_smoke.py asserts that every side produced figures; targets
# are checked by the full runs (docs/performance.md). `make bench-small-NAME` runs one of them
# (hack/test.sh spreads them over its lanes); `make bench-small` runs them all, one by one.
BENCH_IVENV := inference tuning dataset_loader
bench-small-%: assets inference-venv
	@py=$(BIN)/python; case " $(BENCH_IVENV) " in *" $* "*) py=$(IVENV)/bin/python;; esac; \
	  echo "== bench/$*.py --small"; $$py bench/_smoke.py bench/$*.py

bench-small: assets inference-venv
	@for b in bench/*.py; do \
	  case $$b in bench/_*|bench/plot.py) continue;; esac; \
	  $(MAKE) --no-print-directory bench-small-$$(basename $$b .py) || exit 1; \
	done

# Everything: lint, types, layers, unit first (the inference venv builds beside them); then two
# lanes: integration, and reliability, e2e, inference and tuning, with the --small benchmarks
# spread over both; the phase times at the end (hack/test.sh; TEST_LANES=1 for one at a time).
test: venv
	bash hack/test.sh

# The seed's story. NODE=auto (default) runs it on a real node when this machine can (root, 25 GB
# free: hack/choose-node.sh says why not), ending with the README's curl from a pod to the
# Service's ClusterIP (hack/run-real.sh); otherwise, or with NODE=agent, on kaito's process agent,
# ending with POST /chat through a port-forward (hack/run-demo.sh). Both need .venv-inference
# first (the agent runs pods with it; the real node's image build makes the stand-in weights
# with it), so a fresh clone builds it before any cluster starts.
NODE ?= auto
run: export KAITO_DEMO_CHAT := 1
run: export KAITO_RUN_START := $(shell date +%s)
run: assets inference-venv
	@node="$$(bash hack/choose-node.sh $(NODE))"; echo "== make run: node $$node"; \
	if [ "$$node" = real ]; then bash hack/run-real.sh $(REAL_STATE); \
	else $(BIN)/kaito local up --state-dir $(STATE) && bash hack/run-demo.sh $(STATE); fi

# The seed's story on a real node (root): containerd + kubelet, kaito's CPU inference image from the
# node's registry, the README's Workspace and curl (hack/run-real.sh; docs/local-cluster.md)
run-real: assets inference-venv
	bash hack/run-real.sh $(REAL_STATE)

# `git clone` + `make run` as a test: a fresh clone, the seed on the real node, the curl answered
# (minutes, several GB of images; not part of `make test`)
e2e-real: venv
	$(call pytest,$(BIN)/python,tests/e2e_real -s)  # -s: the story prints as it goes

down: venv
	@for p in controller port-forward; do if [ -f $(STATE)/$$p.pid ]; then kill $$(cat $(STATE)/$$p.pid) 2>/dev/null || true; rm -f $(STATE)/$$p.pid; fi; done
	$(BIN)/kaito local down --state-dir $(STATE)
	@if [ -f $(REAL_STATE)/controller.pid ]; then kill $$(cat $(REAL_STATE)/controller.pid) 2>/dev/null || true; rm -f $(REAL_STATE)/controller.pid; fi
	@[ ! -f $(REAL_STATE)/state.json ] || $(BIN)/kaito local down --state-dir $(REAL_STATE)

clean: down
	rm -rf $(STATE)
