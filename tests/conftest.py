"""Shared fixtures: where the real public data lives, and the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import compute_optimal.resolvers  # noqa: F401  (the co.* resolvers the configs use, as in the entry points)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COMPUTE_OPTIMAL_DATA", REPO_ROOT.parent / "shared" / "data"))


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
