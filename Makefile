# The project's commands. `make run` serves the API locally; `make test` runs every check CI runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Lambda runs python3.12, and `sam build` needs that interpreter on PATH. With pyenv, select it.
PY312_PYENV := $(shell command -v pyenv >/dev/null 2>&1 && pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$$)' | tail -n 1)
ifneq ($(PY312_PYENV),)
export PYENV_VERSION := $(PY312_PYENV)
endif
PYTHON ?= python3.12
export SAM_CLI_TELEMETRY := 0

VENV := .venv
SAM_VENV := .venv-sam
CHECKOV_VENV := .venv-checkov
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
CHECKOV := $(CHECKOV_VENV)/bin/checkov
UV_VERSION := 0.13.9
# The layer's build (layers/shared/Makefile, run by `sam build`) installs with this uv when it is there.
export UV = $(wildcard $(CURDIR)/$(VENV)/bin/uv)
EVENT ?= events/usage-record.json
PORT ?= 3000
RETRY_DELAY ?=

.PHONY: help setup run test scan fault-load bench cost invoke events curl dlq build deploy clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# A virtualenv from a requirements file. uv (from the package index, pinned) installs in seconds what
# pip takes minutes for; if uv cannot be had, pip does it. uv installs no bytecode (pip compiles everything, a
# minute here): the first process to import a module writes it (see `test`). The .gitignore inside keeps git
# and ruff out.
define make_venv
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	echo '*' > $(1)/.gitignore
	if $(1)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) 2>/dev/null; then \
		$(1)/bin/uv pip install --quiet --python $(1)/bin/python -r $(2); \
	else \
		$(1)/bin/pip install --quiet --disable-pip-version-check --no-compile -r $(2) 2> >(grep -v '^WARNING: Location' >&2); \
	fi
	touch $(1)/.installed
endef

$(VENV)/.installed: requirements-dev.txt layers/shared/requirements.txt
	$(call make_venv,$(VENV),requirements-dev.txt)

# The SAM CLI pins an older boto3, so it gets a virtualenv of its own; so does checkov.
$(SAM_VENV)/.installed: requirements-sam.txt
	$(call make_venv,$(SAM_VENV),requirements-sam.txt)

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(call make_venv,$(CHECKOV_VENV),requirements-checkov.txt)

setup:  ## create the virtualenvs (the three at once)
	@$(MAKE) --no-print-directory -j3 $(VENV)/.installed $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed

run: $(VENV)/.installed  ## serve the API (moto + fake Stripe, no Docker): PORT=3000, RETRY_DELAY=<first backoff, s>
	$(PY) -m tests.harness.local_api --port $(PORT) $(if $(RETRY_DELAY),--retry-delay $(RETRY_DELAY))

# The suite waits (on sockets, subprocesses, Stripe timeouts and locks) about half of its time: two pytest
# workers per core, at most 8, keep the cores busy. Bytecode is written even where PYTHONDONTWRITEBYTECODE is
# set, so that each module is compiled once (by the first process to import it; __pycache__ is git-ignored),
# not again in each of the hundreds of processes the suite starts.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); echo $$(( n * 2 < 8 ? n * 2 : 8 )))

test: setup  ## every test and check: pytest, ruff, mypy, cfn-lint, sam validate --lint, checkov, sam build
	PYTHONDONTWRITEBYTECODE= SAM_CLI=$(SAM) CHECKOV=$(CHECKOV) $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

scan: $(CHECKOV_VENV)/.installed  ## checkov over template.yaml, as make test runs it (skips: the template's comments)
	$(CHECKOV) -f template.yaml --framework cloudformation --skip-download --compact

fault-load: $(VENV)/.installed  ## the fault-and-load check: concurrent callers, injected faults, reconciliation
	$(PY) -m tests.harness.fault_load $(ARGS)

bench: $(VENV)/.installed  ## service vs floor, side by side: cold start, warm, batches, local API, calls (ARGS="--rounds 3")
	$(PY) -m tests.harness.bench $(ARGS)

cost: $(VENV)/.installed  ## dollars per million records on AWS from the last make bench (ARGS="--memory 1024")
	$(PY) -m tests.harness.bench.cost $(ARGS)

invoke: $(VENV)/.installed  ## like `sam local invoke -e <event>`, without Docker (EVENT=events/usage-record.json; SQS events: the worker)
	$(PY) -m tests.harness.invoke $(EVENT)

events: $(VENV)/.installed  ## regenerate events/*.json (fresh signatures)
	$(PY) events/generate.py

openapi: $(VENV)/.installed  ## write openapi.json from the code
	$(PY) -m tests.harness.openapi

curl: $(VENV)/.installed  ## print a freshly signed curl command for `make run`
	$(PY) -m tests.harness.client --curl --url http://127.0.0.1:$(PORT)

dlq: $(VENV)/.installed  ## dead-letter queue tool, e.g. make dlq ARGS="--stack stripe-usage-reporter list"
	PYTHONPATH=layers/shared $(PY) -m usage_reporter.dead_letters $(ARGS)

build: $(SAM_VENV)/.installed $(VENV)/.installed  ## sam build (the layer for arm64, bytecode compiled)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM) build  # the layer's Makefile: the project's uv, or python3.12's pip

deploy: build  ## sam deploy --guided
	$(SAM) deploy --guided

clean:  ## remove virtualenvs and build output
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
