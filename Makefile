# Every target is one line; the work lives in bin/ and the package.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv demo test test-unit test-fleet bench lint clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	bin/venv $(VENV) && touch $@

demo: venv
	$(PY) bin/demo

test: venv
	$(PY) -m pytest -m "not fleet" tests

bench: venv
	$(PY) bin/bench

test-fleet: venv
	bin/testhosts up && GLOW_TESTHOSTS_REUSE=1 $(PY) -m pytest -m fleet tests/fleet; s=$$?; bin/testhosts down; exit $$s

lint: venv
	$(VENV)/bin/ruff check glowtools tests bin bench && $(VENV)/bin/ruff format --check glowtools tests bin bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
