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
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
EVENT ?= events/usage-record.json

.PHONY: help setup run test invoke events curl dlq build deploy clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.txt layers/shared/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2> >(grep -v '^WARNING: Location' >&2)
	touch $@

# The SAM CLI pins an older boto3, so it gets a virtualenv of its own.
$(SAM_VENV)/.installed: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-sam.txt 2> >(grep -v '^WARNING: Location' >&2)
	touch $@

setup: $(VENV)/.installed $(SAM_VENV)/.installed  ## create both virtualenvs

run: $(VENV)/.installed  ## serve the API at http://127.0.0.1:3000 (moto + fake Stripe, no Docker)
	$(PY) -m tests.harness.local_api

test: setup  ## every test and check: pytest, ruff, mypy, cfn-lint, sam validate --lint, sam build
	SAM_CLI=$(SAM) $(PY) -m pytest

invoke: $(VENV)/.installed  ## like `sam local invoke -e $(EVENT)`, without Docker (SQS events: the worker)
	$(PY) -m tests.harness.invoke $(EVENT)

events: $(VENV)/.installed  ## regenerate events/*.json (fresh signatures)
	$(PY) events/generate.py

curl: $(VENV)/.installed  ## print a freshly signed curl command for `make run`
	$(PY) -m tests.harness.client --curl

dlq: $(VENV)/.installed  ## dead-letter queue tool, e.g. make dlq ARGS="--stack stripe-usage-reporter list"
	PYTHONPATH=layers/shared $(PY) -m usage_reporter.dead_letters $(ARGS)

build: $(SAM_VENV)/.installed  ## sam build (the layer for arm64)
	$(SAM) build

deploy: build  ## sam deploy --guided
	$(SAM) deploy --guided

clean:  ## remove virtualenvs and build output
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
