# Every target runs inside the virtual environment made by `make setup`.
PY := .venv/bin/python

.PHONY: setup test test-fast demo demo-2d bench bench-training photos format
# where threestudio's launch.py runs (scripts/setup.sh links the extension there)
RUN_DIR := $(if $(THREESTUDIO_DIR),$(THREESTUDIO_DIR),build/threestudio)

setup:
	bash scripts/setup.sh

# tests run in TEST_JOBS processes (pytest-xdist); TEST_JOBS=0 runs them in this one
TEST_JOBS ?= 2
test:
	$(PY) -m pytest -q -n $(TEST_JOBS) tests

# the unit tests (no launch.py runs, no training): under a minute
FAST_TESTS := gradients noise step checkpoint metrics metrics3d stats term_bias objects3d threestudio setup cli classifier_training
test-fast:
	$(PY) -m pytest -q $(foreach t,$(FAST_TESTS),tests/test_$(t).py)

# the main job on the CPU: text-to-3D through threestudio's launch.py, its built-in SDS against
# LMC-SDS on the bundled objects prior, beside the true object and the supervised ceiling
DEMO_PROMPT := a photo of a red checkered mug
demo: $(PY)
	LMCSDS_DEVICE=cpu $(PY) -m lmcsds compare --threestudio $(RUN_DIR) \
		--config configs/lmcsds-dreamfusion-cpu.yaml --prompt "$(DEMO_PROMPT)" --steps 300 \
		--omegas 10 --no-matched --jobs 2 --out results/demo

# image synthesis on the Fashion-MNIST prior (no threestudio)
demo-2d: $(PY)
	$(PY) -m lmcsds.evaluation.demo --out results/demo-2d

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
