"""Shared fixtures: where the real public data lives, and the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
