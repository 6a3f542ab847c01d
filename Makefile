# The two commands of the README:
#   make study   set everything up, then run the study on the embedded default
#   make test    set everything up, then run the test suite (what CI runs)
PY := .venv/bin/python
STUDY_ARGS ?=

.PHONY: setup study test test-fast lint bench slurm clean-outputs

setup:
	bash scripts/setup.sh

study: setup
	$(PY) -m compute_optimal.recipes sweeps/embedded.yaml $(STUDY_ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

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
