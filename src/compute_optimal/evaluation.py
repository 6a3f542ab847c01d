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
* ``greedy_per_level``: pass@1 (greedy) per level; on arith also by process (``pass@1_process``: the
  right answer by a valid chain, :func:`compute_optimal.process_check.check_process`), overall as
  ``pass@1_greedy_process``
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import runs
from .budget import Budget
from .data import Problem
from .engines import LazyEngine
from .metrics import pass_at_k
from .runs import EvalRun, TrainRun
from .sampling import SamplingConfig, SamplingPlan, plan_sampling, run_sampling
from .specs import Dataset, Model

log = logging.getLogger(__name__)

GREEDY, SAMPLED = "greedy", "sampled"


@dataclass(frozen=True)
class EvalTarget:
    """What is evaluated: a base model, or a fine-tuned student's exported model."""

    kind: str  # "base" or "student"
    name: str  # base/<model>, or the training run's label <regime>/<student>/<sampler>-<budget>
    model: Model  # for a student: its model config with origin "local" and the exported folder
    train_summary: Mapping[str, Any] | None = None

    @property
    def trained(self) -> dict[str, Any] | None:
        """Which training run made a student's weights, for its evaluation's signature (None for a base
        model): the label names no seed and a finish time has one-second steps, and two seeds' students
        trained side by side have finished in the same second (the embedded study, 2026-12-04: seed 1's
        evaluation took seed 0's greedy generations as its own). The seed tells them apart; the finish
        time, a student retrained in the same folder."""
        if self.train_summary is None:
            return None
        summary = self.train_summary
        return {"label": self.name, "seed": summary.get("seed"), "finished_at": summary.get("finished_at")}


def student_target(trained: TrainRun, expected_dataset: str, student: Model) -> EvalTarget:
    """The exported model of a finished training run; a clear error when it is not there."""
    if not trained.is_finished():
        raise runs.RunError(
            f"the student of {trained.path} is {trained.state()} (no {trained.SUMMARY}); "
            f"train it first: {trained.command}"
        )
    summary = trained.read_summary()
    if summary.get("dataset") != expected_dataset:
        raise runs.RunError(
            f"{trained.path} was trained on {summary.get('dataset')!r}, not on {expected_dataset!r} "
            "(set task.student.train_dataset to evaluate it on another test set)"
        )
    exported = Path(summary["model_dir"])
    if not (exported / "config.json").is_file():
        raise runs.RunError(f"{exported} is not a Hugging Face checkpoint (no config.json)")
    model = dataclasses.replace(student, origin="local", path=str(exported))
    return EvalTarget("student", trained.label, model, summary)


def plan_runs(
    *,
    run: EvalRun,
    model: Model,
    dataset: Dataset,
    problems: Sequence[Problem],
    num_samples: int,
    temperature: float,
    max_new_tokens: int,
    chunk_size: int,
    seed: int,
    trained: Mapping[str, Any] | None = None,
) -> dict[str, SamplingPlan]:
    """The greedy and the sampled generation runs of one evaluation (sampling-stage plans); ``trained``
    (a student's training run, :attr:`EvalTarget.trained`) joins their signatures, since students of other
    seeds, or retrained, have the same name."""
    plans = {}
    test = dataclasses.replace(dataset, split="test", limit=None)
    for kind, n, temp in ((GREEDY, 1, 0.0), (SAMPLED, num_samples, temperature)):
        if n < 1:
            continue
        plans[kind] = plan_sampling(
            run=run.generation(kind),
            model=model,
            budget=Budget(f"eval-{kind}", "number", model.name, n, model.params),
            dataset=test,
            problems=problems,
            sampling=SamplingConfig(temperature=temp, max_new_tokens=max_new_tokens, chunk_size=chunk_size),
            seed=seed,
        )
        if trained is not None:
            plans[kind].signature["trained"] = dict(trained)
    return plans


def run_evaluation(
    run: EvalRun,
    target: EvalTarget,
    plans: Mapping[str, SamplingPlan],
    engine: LazyEngine,
    *,
    ks: Sequence[int] = (1, 4, 8),
    progress: bool = True,
) -> dict[str, Any]:
    """Generate (or resume, or skip when finished), grade and score; ``eval_summary.json`` is written last."""
    if run.is_finished() and all(plan.run.finished_as(plan.signature) for plan in plans.values()):
        return run.read_summary()
    summaries = {kind: run_sampling(plan, engine, progress=progress) for kind, plan in plans.items()}
    tables = {kind: pd.read_parquet(s["samples_path"]) for kind, s in summaries.items()}
    metrics = accuracy_metrics(tables.get(GREEDY), tables.get(SAMPLED), ks)
    any_plan = next(iter(plans.values()))
    if tables.get(GREEDY) is not None and len(tables[GREEDY]):
        metrics.update(greedy_by_level(tables[GREEDY], any_plan.problems, any_plan.dataset.answer_format))
    summary = {
        "target": target.name,
        "kind": target.kind,
        "model": target.model.name,
        "dataset": any_plan.dataset.name,
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
            for k in ("regime", "student", "sampler", "sampler_model", "num_examples", "steps", "final_loss")
        }
    run.write_summary(summary)
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


def greedy_by_level(greedy: pd.DataFrame, problems: Sequence[Problem], answer_format: str) -> dict[str, Any]:
    """pass@1 (greedy) per level ("all" for datasets without levels); where the answer format has an
    exact process check (arith), also by process: the right answer by a valid chain of computations."""
    from .analysis import level_label
    from .process_check import EXACT_FORMATS, check_process

    exact = answer_format in EXACT_FORMATS
    by_id = {p.id: p for p in problems}
    first = greedy.sort_values("sample_index").groupby("problem_id", sort=False).first()
    rows = []
    for pid, row in first.iterrows():
        problem = by_id.get(str(pid))
        ok = bool(row["correct"])
        process = None
        if exact and problem is not None and problem.solution:
            process = (
                ok and check_process(str(row["completion"]), problem.solution, problem.answer).process_correct
            )
        rows.append({"level": level_label(row["level"]), "correct": ok, "process": process})
    frame = pd.DataFrame(rows)
    per_level: dict[str, dict[str, Any]] = {}
    for level, group in sorted(frame.groupby("level"), key=lambda item: (len(item[0]), item[0])):
        per_level[str(level)] = {"problems": len(group), "pass@1": float(group["correct"].mean())}
        if exact:
            per_level[str(level)]["pass@1_process"] = float(group["process"].astype(bool).mean())
    out: dict[str, Any] = {"greedy_per_level": per_level}
    if exact:
        out["pass@1_greedy_process"] = float(frame["process"].astype(bool).mean())
    return out


def _majority_correct(group: pd.DataFrame) -> bool:
    winner = majority_answer(list(group["extracted_answer"]))
    if winner is None:
        return False
    return bool(group.loc[group["extracted_answer"] == winner, "correct"].iloc[0])
