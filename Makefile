# Two entry points: `make demo` and `make test`. Each installs what it needs (torch first,
# from the CPU wheel, so pip never pulls CUDA packages).
PY ?= python3
STAMP := .install.stamp

$(STAMP): pyproject.toml
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m difflab demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

.PHONY: install demo test test-slow
