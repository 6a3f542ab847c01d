"""A finished sampling run in the sampling stage's format, built from reference solutions.

For tests and the GPU smoke check (benchmarks/gpu_smoke.py): random-weight models almost never answer
correctly, so stages downstream of sampling (training, evaluation) get their input from here, the same
files and completion marker the sampling stage writes (``samples.parquet``, then ``summary.json``), with a
known share of correct samples (a correct sample is the problem's reference solution, a wrong one the
same solution with a wrong final answer). Not a substitute for sampling: no model produced these samples,
and the summary holds none of the stage's FLOPs ledger.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from . import runs
from .data import Problem


def write_sampling_run(
    root: Path,
    problems: list[Problem],
    *,
    dataset: str,
    model: str,
    budget: str = "high-compute",
    seed: int = 0,
    samples_per_problem: int = 4,
    correct_share: float = 0.5,
) -> Path:
    """Write ``samples_per_problem`` samples of each problem as ``model``'s finished sampling run under
    ``root`` (``runs.SampleRun``); about ``correct_share`` of them correct. Returns the run folder."""
    rng = random.Random(f"{model}:{budget}")
    rows = []
    for p in problems:
        for k in range(samples_per_problem):
            ok = rng.random() < correct_share
            text = p.solution if ok else p.solution.replace(f"The answer is {p.answer}.", "The answer is 0.")
            rows.append(
                {
                    "problem_id": p.id,
                    "sample_index": k,
                    "level": p.level,
                    "subject": p.subject,
                    "gold_answer": p.answer,
                    "completion": text + (" " * k),
                    "prompt_tokens": 100,
                    "generated_tokens": 40,
                    "finish_reason": "stop",
                    "extracted_answer": p.answer if ok else "0",
                    "correct": ok,
                    "grade_status": "ok",
                }
            )
    name, mode = budget.rsplit("-", 1)
    run = runs.SampleRun.of(root, dataset, model, name, mode, seed)
    frame = pd.DataFrame(rows)
    runs.atomic_write_parquet(run.samples_path, frame)
    run.write_summary(
        {
            "model": model,
            "dataset": dataset,
            "budget": name,
            "budget_mode": mode,
            "samples_per_problem": samples_per_problem,
            "num_problems": len(problems),
            "accuracy": float(frame.correct.mean()),
            "coverage": float(frame.groupby("problem_id").correct.any().mean()),
            "samples_path": str(run.samples_path),
            "finished_at": "fixture",
        },
    )
    return run.path
