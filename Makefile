# MasterChief developer entry points.
#
#   make venv   .venv with the package and dev tools (re-installs when pyproject.toml changes)
#   make deps   Debian packages the tests and `make run` need (InspIRCd, Atheme, certtool)
#   make run    local InspIRCd + Atheme on 127.0.0.1:6667 and the bot in the foreground
#   make lint   ruff check, ruff format --check, mypy --strict
#   make test   deps + venv + lint + pytest (what .ci/run does)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
.NOTPARALLEL:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
APT_PACKAGES := inspircd atheme-services gnutls-bin python3-apt
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv deps run lint test bench clean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Only re-run pip when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'
	touch $@

# apt-get only for what is missing; `apt-get update` only when the package
# lists do not know a missing package (fresh machine) or an install fails.
deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep "install ok installed" >/dev/null \
			|| missing="$$missing $$pkg"; \
	done; \
	if ! $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 && [ ! -x $(BIN)/python ]; then \
		missing="$$missing python3-venv"; \
	fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo "deps: installing$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	need_update=""; \
	for pkg in $$missing; do \
		apt-cache policy "$$pkg" 2>/dev/null | grep 'Candidate: [^(]' >/dev/null || need_update=1; \
	done; \
	if [ -n "$$need_update" ]; then $(SUDO) apt-get update -qq; fi; \
	if ! $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; then \
		$(SUDO) apt-get update -qq; \
		$(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

run: deps venv
	tools/run.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: deps venv lint
	$(BIN)/pytest

# Benchmarks print numbers; record them in bench/RESULTS.md. flood.py takes ~2.5 min, alerts.py ~1.5 min.
bench: deps venv
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/rtt.py
	$(BIN)/python bench/flood.py
	$(BIN)/python bench/alerts.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
