# `make study` is the main job: a critical-batch-size study of the tiny model on this machine's CPU,
# from a fresh clone (it creates .venv and installs the project first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install study adaptive-study test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.py constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,tpu]' -c constraints.txt
	touch $@

install: $(VENV)/.installed

study: install
	$(BIN)/python -m launch.study cbs $(ARGS)

adaptive-study: install
	$(BIN)/python -m launch.study adaptive $(ARGS)

test: install
	$(BIN)/python -m pytest -n 2 tests
