# llmcanary: `make demo` runs the main job, `make test` passes the tests. Both set up
# everything they need, idempotently: a virtual environment (.venv), the local control
# plane binaries built from the Kubernetes Go modules, cached with Go's caches under
# $(LLMCANARY_CACHE) so a second run reuses them.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
export LLMCANARY_CACHE ?= $(HOME)/.cache/llmcanary
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help
help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV_STAMP): pyproject.toml dev/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,model]' -e ./dev
	@touch $@

.PHONY: venv
venv: $(VENV_STAMP)  ## Create .venv with llmcanary, llmcanary-dev (dev/) and the dev tools

.PHONY: cluster-bins
cluster-bins:  ## Build (or reuse) etcd, kube-apiserver, ..., kwok and kubectl
	bash devcluster/build.sh

.PHONY: helm-bin
helm-bin:  ## Build (or reuse) a pinned helm v3 from its Go module, for the chart's tests
	bash scripts/ensure-helm.sh

.PHONY: prometheus-bin
prometheus-bin:  ## Fetch (or reuse) Debian's prometheus binary for the tests
	bash scripts/ensure-deb-binary.sh prometheus usr/bin/prometheus usr/bin/promtool

.PHONY: traefik-bin
traefik-bin:  ## Build (or reuse) a pinned Traefik v3 from its Go module: the local stack's gateway
	bash scripts/ensure-traefik.sh

.PHONY: crds
crds: venv  ## Regenerate crds/ (and the chart's copy) and the CRD reference from the API models
	$(BIN)/llmcanary crd > crds/llmdeployments.yaml
	cp crds/llmdeployments.yaml charts/llmcanary/crds/llmdeployments.yaml
	$(BIN)/llmcanary crd --reference > docs/reference/llmdeployment.md

SCHEMA := operator/llmcanary/builders/triton_schema
.PHONY: protos
protos: venv  ## Regenerate Triton's ModelConfig protobuf code from the vendored model_config.proto
	$(BIN)/python -m grpc_tools.protoc -Ioperator --python_out=operator --pyi_out=operator $(SCHEMA)/model_config.proto

.PHONY: docs
docs: crds  ## Regenerate the generated docs (docs/reference/llmdeployment.md)

.PHONY: lint
lint: venv  ## ruff, mypy --strict, import-linter contracts
	$(BIN)/ruff check operator dev tests bench model_repo
	$(BIN)/ruff format --check operator dev tests bench model_repo
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: unit
unit: venv helm-bin  ## Fast tests of the pure core
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: integration
integration: venv cluster-bins prometheus-bin helm-bin  ## The operator against the real local control plane
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

.PHONY: e2e
e2e: venv cluster-bins prometheus-bin traefik-bin  ## The whole local stack with real Triton
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

# e2e last: it hands pod readiness to the data plane (a KWOK restart) for its own tests.
.PHONY: test
test: lint venv cluster-bins prometheus-bin traefik-bin helm-bin  ## Everything CI runs
	$(BIN)/pytest tests/unit tests/integration tests/e2e $(PYTEST_ARGS)

.PHONY: demo
demo: venv cluster-bins prometheus-bin traefik-bin  ## The local stack: v2 promoted, v3 rolled back, a chart
	$(BIN)/llmcanary demo

.PHONY: down
down: venv  ## Stop the local stack (data plane and cluster)
	$(BIN)/llmcanary stack down

.PHONY: clean
clean:  ## Remove .venv and the local cluster state (keeps the binary cache)
	-$(BIN)/llmcanary devcluster down --purge
	rm -rf $(VENV) .devcluster .mypy_cache .ruff_cache .pytest_cache
