"""Finished runs for tests.

Sampling runs: :mod:`compute_optimal.reference_runs` (moved there so that the GPU smoke check,
benchmarks/gpu_smoke.py, writes them too); imported here under the name the tests use. Evaluation and
training runs with known results (the files the study report reads): :func:`write_eval_run`,
:func:`write_train_run`. The embedded dataset's problems as its config generates them: :func:`arith_split`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from compute_optimal import runs
from compute_optimal.data import Problem
from compute_optimal.data.arith import generate_split
from compute_optimal.reference_runs import write_sampling_run

__all__ = ["arith_split", "write_eval_run", "write_graded_run", "write_sampling_run", "write_train_run"]


def write_graded_run(
    plan: Any,
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str | None]],
    render: Callable[[Problem, str], str],
    *,
    generated_tokens: int = 20,
) -> Path:
    """A finished sampling run of ``plan`` (a ``sampling.SamplingPlan``) in the stage's exact format (table
    dtypes, ``summarize()``): per problem its samples, ``None`` a wrong one, else ``render(problem, text)``."""
    from compute_optimal.sampling import COLUMNS, summarize

    rows = []
    for problem, texts in zip(problems, completions, strict=True):
        assert len(texts) == plan.samples_per_problem
        for k, text in enumerate(texts):
            ok = text is not None
            rows.append(
                {
                    "problem_id": problem.id,
                    "sample_index": k,
                    "level": problem.level,
                    "subject": problem.subject,
                    "gold_answer": problem.answer,
                    "completion": render(problem, text) if ok else f"wrong {k}",
                    "prompt_tokens": 100,
                    "generated_tokens": generated_tokens,
                    "finish_reason": "stop",
                    "extracted_answer": problem.answer if ok else "-1",
                    "correct": ok,
                    "grade_status": "ok",
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS).astype(
        {"level": "Int64", "sample_index": "int32", "correct": "bool"}
    )
    plan.run.claim(plan.signature)
    runs.atomic_write_parquet(plan.run.samples_path, frame)
    plan.run.write_summary(summarize(frame, plan))
    return plan.run.path


def arith_split(split: str = "train") -> list[Problem]:
    """The ``split`` of the arith dataset exactly as ``conf/dataset/arith.yaml`` generates it (the stages
    find a fake run's problems by id in it)."""
    loader = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "dataset" / "arith.yaml").loader
    kwargs = {k: loader[k] for k in ("num_train", "num_test", "seed")}
    return generate_split(split, levels=list(loader.levels), **kwargs)


def write_eval_run(
    run: runs.EvalRun, correct: Sequence[bool | int], per_level: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A finished evaluation whose greedy answer to problem ``p<i>`` is right where ``correct[i]`` is:
    ``greedy/samples.parquet`` (problem_id, correct), then ``eval_summary.json`` (with ``per_level`` as its
    ``greedy_per_level``). Returns the summary."""
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
        **({"greedy_per_level": per_level} if per_level is not None else {}),
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
