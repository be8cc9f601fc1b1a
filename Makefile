# The two commands a new user runs: `make demo` and `make test`.
# Both create or reuse .venv and install what they need (torch first, pinned to the CPU wheel).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.thinkrl-installed
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo demo-full test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/thinkrl demo

demo-full: $(STAMP)
	$(VENV)/bin/thinkrl demo --set full=true

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs .pytest_cache
