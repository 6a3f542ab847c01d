"""Finished runs for tests.

Sampling runs: :mod:`compute_optimal.reference_runs` (moved there so that the GPU smoke check,
benchmarks/gpu_smoke.py, writes them too); imported here under the name the tests use. Evaluation and
training runs with known results (the files the study report reads): :func:`write_eval_run`,
:func:`write_train_run`. The embedded dataset's problems as its config generates them: :func:`arith_split`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from compute_optimal import runs
from compute_optimal.data import Problem
from compute_optimal.data.arith import generate_split
from compute_optimal.reference_runs import write_sampling_run

__all__ = ["arith_split", "write_eval_run", "write_sampling_run", "write_train_run"]


def arith_split(split: str = "train") -> list[Problem]:
    """The ``split`` of the arith dataset exactly as ``conf/dataset/arith.yaml`` generates it (the stages
    find a fake run's problems by id in it)."""
    loader = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "dataset" / "arith.yaml").loader
    kwargs = {k: loader[k] for k in ("num_train", "num_test", "seed")}
    return generate_split(split, levels=list(loader.levels), **kwargs)


def write_eval_run(run: runs.EvalRun, correct: Sequence[bool | int]) -> dict[str, Any]:
    """A finished evaluation whose greedy answer to problem ``p<i>`` is right where ``correct[i]`` is:
    ``greedy/samples.parquet`` (problem_id, correct), then ``eval_summary.json``. Returns the summary."""
    greedy = pd.DataFrame(
        {"problem_id": [f"p{i}" for i in range(len(correct))], "correct": [bool(c) for c in correct]}
    )
    runs.atomic_write_parquet(run.generation("greedy").samples_path, greedy)
    summary = {
        "target": run.target,
        "split": "test",
        "num_problems": len(correct),
        "pass@1_greedy": float(greedy["correct"].mean()),
        "greedy_problems": len(correct),
    }
    run.write_summary(summary)
    return summary


def write_train_run(
    run: runs.TrainRun,
    *,
    samples_run: str,
    seed: int,
    loss_curve: Sequence[tuple[int, float]] = ((1, 2.0), (2, 1.5)),
) -> dict[str, Any]:
    """A finished training run's ``train_summary.json`` (no model): what the study report reads from it,
    ``samples_run`` the sampling run its data came from. Returns the summary."""
    summary = {
        "samples_run": samples_run,
        "num_examples": 8,
        "steps": len(loss_curve),
        "final_loss": loss_curve[-1][1] if loss_curve else None,
        "loss_curve": [list(point) for point in loss_curve],
        "seed": seed,
    }
    run.write_summary(summary)
    return summary
