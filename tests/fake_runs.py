"""Finished sampling runs written directly in the sampling stage's format, from reference solutions.

Random-weight test models almost never answer correctly, so stages downstream of sampling (training,
evaluation) get their input from here in fast tests: the same files and completion marker the
sampling stage writes, with a known share of correct samples. Not a mock of the sampling stage,
which has its own tests on real models; a fixture that stands in for its output.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from compute_optimal import runs
from compute_optimal.data import Problem


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
    run_dir = runs.sample_run_dir(root, dataset, model, budget, seed)
    frame = pd.DataFrame(rows)
    runs.atomic_write_parquet(run_dir / "samples.parquet", frame)
    runs.atomic_write_json(
        run_dir / "summary.json",
        {
            "model": model,
            "dataset": dataset,
            "budget": budget.split("-")[0],
            "budget_mode": budget.split("-")[1],
            "samples_per_problem": samples_per_problem,
            "num_problems": len(problems),
            "accuracy": float(frame.correct.mean()),
            "coverage": float(frame.groupby("problem_id").correct.any().mean()),
            "samples_path": str(run_dir / "samples.parquet"),
            "finished_at": "fixture",
        },
    )
    return run_dir
