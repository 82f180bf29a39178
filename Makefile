# Every target runs inside the virtual environment made by `make setup`.
PY := .venv/bin/python

.PHONY: setup test bench format

setup:
	bash scripts/setup.sh

test:
	$(PY) -m pytest -q tests

bench:
	$(PY) -m lmcsds.evaluation.benchmark_guidance --out bench-results/guidance.json

format:
	$(PY) -m black . && $(PY) -m isort .
