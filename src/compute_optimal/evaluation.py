"""The evaluation stage: test-split accuracy of a base model or a fine-tuned student.

Generation reuses the sampling stage as it is (chunked, resumable, exactly once, graded by the same
grader): one greedy run (temperature 0, one completion per problem) and one sampled run (``n``
completions per problem, a number-matched budget of ``n``), both in the evaluation's run folder.
The metrics are pure functions of the two sample tables:

* ``pass@1 (greedy)``: share of problems whose greedy completion is correct
* ``mean@n``: mean correctness over the n sampled completions (pass@1 estimated from samples)
* ``maj@k``: majority vote over the first k sampled answers (votes by extracted answer string). Ties go to the answer that occurs first
  (lowest sample index) among the tied ones; completions without an answer never vote.
* ``pass@k``: the unbiased estimator of :func:`compute_optimal.metrics.pass_at_k` (the one copy)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import runs
from .budget import Budget
from .data import Problem
from .engines import Borrowed, Engine
from .metrics import pass_at_k
from .sampling import plan_sampling, run_sampling

log = logging.getLogger(__name__)

SUMMARY = "eval_summary.json"
GREEDY, SAMPLED = "greedy", "sampled"


@dataclass(frozen=True)
class EvalTarget:
    """What is evaluated: a base model config, or a fine-tuned student's exported checkpoint."""

    kind: str  # "base" or "student"
    name: str  # model name, or "<regime>/<student>/<source>-<budget>"
    model: Mapping[str, Any]  # a model config (for a student: source "local" with its checkpoint path)
    train_summary: Mapping[str, Any] | None = None


def student_target(train_run: Path, expected_dataset: str) -> EvalTarget:
    """The exported checkpoint of a finished training run; a clear error when it is not there."""
    summary_path = train_run / "train_summary.json"
    if not summary_path.is_file():
        state = "unfinished (no train_summary.json)" if train_run.exists() else "missing"
        raise runs.RunError(
            f"the student checkpoint of {train_run} is {state}; train it with run_train.py first"
        )
    summary = runs.read_json(summary_path)
    if summary.get("dataset") != expected_dataset:
        raise runs.RunError(
            f"{train_run} was trained on {summary.get('dataset')!r}, not on {expected_dataset!r} "
            "(set checkpoint.train_dataset to evaluate it on another test set)"
        )
    checkpoint = Path(summary["checkpoint"])
    if not (checkpoint / "config.json").is_file():
        raise runs.RunError(f"{checkpoint} is not a Hugging Face checkpoint (no config.json)")
    name = f"{summary['regime']}/{summary['student']}/{train_run.parent.name}"
    model = {
        "name": summary["student"],
        "source": "local",
        "path": str(checkpoint),
        "params": summary.get("params", 1),
    }
    return EvalTarget("student", name, model, summary)


def plan_runs(
    *,
    run_dir: Path,
    model: Mapping[str, Any],
    dataset: Mapping[str, Any],
    problems: Sequence[Problem],
    num_samples: int,
    temperature: float,
    max_new_tokens: int,
    chunk_size: int,
    seed: int,
) -> dict[str, Any]:
    """The greedy and the sampled generation runs of one evaluation (sampling-stage plans)."""
    plans = {}
    for kind, n, temp in ((GREEDY, 1, 0.0), (SAMPLED, num_samples, temperature)):
        if n < 1:
            continue
        budget = Budget(f"eval-{kind}", "number", str(model["name"]), n, float(model.get("params") or 1))
        plans[kind] = plan_sampling(
            run_dir=run_dir / kind,
            model={**model, "params": float(model.get("params") or 1)},
            budget=budget,
            dataset={**dataset, "limit": dataset.get("limit"), "split": "test"},
            problems=problems,
            sampling={"temperature": temp, "max_new_tokens": max_new_tokens, "chunk_size": chunk_size},
            seed=seed,
        )
    return plans


def run_evaluation(
    run_dir: Path,
    target: EvalTarget,
    plans: Mapping[str, Any],
    make_engine: Callable[[], Engine],
    *,
    ks: Sequence[int] = (1, 4, 8),
    progress: bool = True,
) -> dict[str, Any]:
    """Generate (or resume), grade and score; ``eval_summary.json`` is written last."""
    if (run_dir / SUMMARY).is_file():
        return runs.read_json(run_dir / SUMMARY)
    engine_holder: dict[str, Engine] = {}

    def shared_engine() -> Engine:
        if "engine" not in engine_holder:
            engine_holder["engine"] = make_engine()
        return Borrowed(engine_holder["engine"])

    try:
        summaries = {
            kind: run_sampling(plan, shared_engine, progress=progress) for kind, plan in plans.items()
        }
    finally:
        if "engine" in engine_holder:
            engine_holder["engine"].close()
    tables = {kind: pd.read_parquet(s["samples_path"]) for kind, s in summaries.items()}
    metrics = accuracy_metrics(tables.get(GREEDY), tables.get(SAMPLED), ks)
    any_plan = next(iter(plans.values()))
    summary = {
        "target": target.name,
        "kind": target.kind,
        "model": target.model["name"],
        "dataset": any_plan.dataset,
        "split": "test",
        "num_problems": len(any_plan.problems),
        "seed": any_plan.seed,
        "prompt": {"template": any_plan.template.name, "num_shots": len(any_plan.template.exemplars)},
        **metrics,
        "generated_tokens": sum(int(s["generated_tokens"]) for s in summaries.values()),
        "runs": {kind: str(Path(s["samples_path"]).parent) for kind, s in summaries.items()},
    }
    if target.train_summary:
        summary["train"] = {
            k: target.train_summary.get(k)
            for k in ("regime", "student", "data_source", "sampler", "num_examples", "steps", "final_loss")
        }
    runs.atomic_write_json(run_dir / SUMMARY, summary)
    return summary


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The most frequent non-empty answer; ties go to the one that appears first."""
    valid = [a for a in answers if isinstance(a, str) and a]  # None / NaN (no answer) never vote
    votes = Counter(valid)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in valid if votes[a] == best)


def accuracy_metrics(
    greedy: pd.DataFrame | None, sampled: pd.DataFrame | None, ks: Sequence[int]
) -> dict[str, Any]:
    """pass@1 (greedy), mean@n, maj@k and pass@k over test problems, with what each rests on."""
    out: dict[str, Any] = {}
    if greedy is not None and len(greedy):
        out["pass@1_greedy"] = float(greedy.groupby("problem_id")["correct"].first().mean())
        out["greedy_problems"] = int(greedy["problem_id"].nunique())
    if sampled is None or not len(sampled):
        return out
    n = int(sampled.groupby("problem_id").size().min())
    sampled = sampled.sort_values(["problem_id", "sample_index"])
    counts = sampled.groupby("problem_id")["correct"].agg(["size", "sum"])
    out["samples_per_problem"] = n
    out[f"mean@{n}"] = float(sampled["correct"].mean())
    out["mean_at_n"] = out[f"mean@{n}"]
    for k in sorted({k for k in ks if 1 <= k <= n} | {n}):
        out[f"pass@{k}"] = float(
            sum(pass_at_k(int(s), int(c), k) for s, c in counts.itertuples(index=False)) / len(counts)
        )
        out[f"maj@{k}"] = float(
            sampled.groupby("problem_id")
            .apply(lambda g, k=k: _majority_correct(g.head(k)), include_groups=False)
            .mean()
        )
    return out


def _majority_correct(group: pd.DataFrame) -> bool:
    winner = majority_answer(list(group["extracted_answer"]))
    if winner is None:
        return False
    return bool(group.loc[group["extracted_answer"] == winner, "correct"].iloc[0])
