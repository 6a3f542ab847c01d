"""Sweeps through this project's submitit launchers on this machine (submitit's local executor).

What the real-SLURM tests (test_slurm.py) check for arrays and requeues, these check without a
scheduler: a failed job of a sweep is reported with its log file while the others finish, the
relaunched sweep redoes only what is unfinished, and the W&B runs of one sweep share a group.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_entry_point

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path("sample/arith/tiny_random/low-compute/seed0")
BASE = (
    "model=tiny_random",
    "budget=low",
    "engine=hf",
    "dataset.limit=4",
    "sampling.chunk_size=1",
    "sampling.max_new_tokens=6",
    "sampling.num_shards=2",
    "progress=false",
)


def sweep(outputs: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_entry_point(
        "run_sample.py",
        outputs,
        "-m",
        *BASE,
        *overrides,
        "hydra/launcher=submitit_local",
        check=False,
        timeout=600,
        extra_env={"OMP_NUM_THREADS": "1"},
    )


def test_failed_job_is_reported_with_its_log_and_the_relaunch_finishes(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    # Shard 3 of 2 does not exist: that job fails; shard 0 does its chunks all the same.
    failed = sweep(outputs, "sampling.shard=0,3")
    assert failed.returncode != 0
    assert "1 of 2 jobs failed" in failed.stderr, failed.stderr[-3000:]
    # The job's overrides, its error (a user error: one line, exit 2) and its log, in the sweep's message.
    (line,) = [x for x in failed.stderr.splitlines() if x.strip().startswith("job #")]
    assert "sampling.shard=3" in line and "error: sampling.shard must be in [0, sampling.num_shards)" in line
    log_path = Path(failed.stderr.split("log: ", 1)[1].split()[0])
    assert log_path.is_file() and "error: sampling.shard must be in" in log_path.read_text()
    run_dir = outputs / RUN_DIR
    assert sorted(p.name for p in (run_dir / "chunks").iterdir()) == [
        "chunk-00000.parquet",
        "chunk-00002.parquet",
    ]
    assert not (run_dir / "summary.json").exists()  # half a run is never mistaken for a finished one

    done = sweep(outputs, "sampling.shard=0,1")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_samples"] == 4 * summary["samples_per_problem"]
    # Shard 0 had nothing left to do; shard 1 drew the other half. Every sample exactly once.
    by_shard = {r["shard"]: r for r in summary["shards"]}
    assert by_shard[0]["jobs"] == 2 and by_shard[1]["jobs"] == 1
    assert by_shard[0]["new_samples"] == by_shard[1]["new_samples"] == summary["num_samples"] // 2

    # The merged run was logged to W&B (offline) in the group named after the relaunched sweep's folder.
    sweep_dir = sorted((outputs / "hydra/multirun").iterdir())[-1]  # folders are named by start time
    assert any("sampling.shard=1" in job.name for job in sweep_dir.iterdir())
    wandb_runs = list((outputs / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(wandb_runs) == 1
    assert sweep_dir.name.encode() in wandb_runs[0].read_bytes()


def test_parallel_launcher_writes_what_the_basic_launcher_writes(tmp_path: Path) -> None:
    """hydra/launcher=parallel (the laptop study's: two jobs at a time in joblib's worker processes, each
    reused for job after job): the same runs, sample for sample, as one job after another with the same
    threads; a job's user error still ends the sweep with its one-line message and exit status 2."""
    args = ("model=tiny_random", "budget=low", "engine=hf", "engine.hf.threads=1", "dataset.limit=3",
            "sampling.max_new_tokens=6", "seed=0,1,2", "logger=none", "progress=false")  # fmt: skip
    parallel = run_entry_point("run_sample.py", tmp_path / "par", "-m", *args, "hydra/launcher=parallel")
    assert "Joblib.Parallel(n_jobs=2" in parallel.stdout + parallel.stderr
    run_entry_point("run_sample.py", tmp_path / "seq", "-m", *args, "hydra/launcher=local")
    for seed in (0, 1, 2):
        run = Path(f"sample/arith/tiny_random/low-compute/seed{seed}/samples.parquet")
        a, b = pd.read_parquet(tmp_path / "par" / run), pd.read_parquet(tmp_path / "seq" / run)
        assert a["problem_id"].nunique() == 3 and len(a) == 3 * int(a["sample_index"].max() + 1)
        pd.testing.assert_frame_equal(a, b)
    failed = run_entry_point(
        "run_sample.py",
        tmp_path / "bad",
        "-m",
        *args,
        "dataset.limit=0",
        "hydra/launcher=parallel",
        check=False,
    )
    assert failed.returncode == 2 and "error: limit must be >= 1" in failed.stderr, failed.stderr[-2000:]
