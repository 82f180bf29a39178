# Every target runs inside the virtual environment made by `make setup`.
PY := .venv/bin/python

.PHONY: setup test test-fast demo bench bench-training photos format

setup:
	bash scripts/setup.sh

test:
	$(PY) -m pytest -q tests

# the unit tests (no launch.py runs, no training): under a minute
FAST_TESTS := gradients noise step checkpoint metrics metrics3d stats term_bias objects3d threestudio setup cli
test-fast:
	$(PY) -m pytest -q $(foreach t,$(FAST_TESTS),tests/test_$(t).py)

demo: $(PY)
	$(PY) -m lmcsds.evaluation.demo --out results/demo

$(PY):
	bash scripts/setup.sh

bench:
	$(PY) -m lmcsds.bench.guidance --out bench-results/guidance.json

bench-training:
	$(PY) -m lmcsds.bench.training $(if $(wildcard data/photos/train),--images data/photos/train) --out bench-results/training.json

photos:
	$(PY) -m lmcsds gather-photos --fetch --out data/photos

format:
	$(PY) -m black . && $(PY) -m isort .
