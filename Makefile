# The two commands of the README:
#   make study   set everything up, then run the study on the embedded default
#   make test    set everything up, then run the test suite (what CI runs)
PY := .venv/bin/python
STUDY_ARGS ?=
# Two pytest-xdist workers: most tests wait on one core (imports, engine and server starts, SLURM jobs), so
# two side by side share 2 cores; tests that share a fixture stay on one worker (xdist_group marks), and the
# order is tests/conftest.py's (longest first), not xdist's (largest group first).
# TEST_WORKERS=0 runs them in this process, one after another.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

.PHONY: setup study test test-fast lint bench slurm clean-outputs

setup:
	bash scripts/setup.sh

study: setup
	$(PY) -m compute_optimal.recipes sweeps/embedded.yaml $(STUDY_ARGS)

test: setup
	$(PYTEST) $(PYTEST_ARGS)

test-fast: setup
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(PY) benchmarks/sampling_throughput.py
	$(PY) benchmarks/grading_throughput.py

slurm:
	bash scripts/slurm_cluster.sh start

clean-outputs:
	rm -rf outputs
