"""Finished sampling runs for tests: :mod:`compute_optimal.reference_runs` (moved there so that the GPU
smoke check, benchmarks/gpu_smoke.py, writes them too); imported here under the name the tests use."""

from compute_optimal.reference_runs import write_sampling_run

__all__ = ["write_sampling_run"]
