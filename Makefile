# lrnn: the two commands.  `make demo` and `make test` each create .venv and install
# what is missing (re-installing only when pyproject.toml changes), then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# test processes: most of the suite is single-threaded XLA compilation, so one per core
# (CI has 2); a module's tests stay in one process and share its fixtures
TEST_WORKERS ?= 2
STAMP  := $(VENV)/.lrnn-installed

.PHONY: demo test lint clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,pme]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lrnn demo

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=30

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
