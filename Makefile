# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install kerasgen, run the demo study (offline, ~10 min on 2 cores)
#   make test   create .venv, install kerasgen with its test extras, run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DB ?= data/demo.db

.PHONY: demo test install clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,ray,tensorboard,parquet,interactive]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/kerasgen demo --db $(DEMO_DB)

# Two test processes (pytest-xdist; an idle process takes tests from the busy one): ~11 min on 2 cores.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal

clean-demo:
	rm -rf $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm $(DEMO_DB).checkpoints data/demo-figures
