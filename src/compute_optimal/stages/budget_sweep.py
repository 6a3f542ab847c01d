"""The budget sweep stage (run_eval.py task=budget_sweep): the WC-vs-SE trade-off as a curve over budgets.

config -> the pair's compute-matched sampling runs at budgets ``custom-s<n>`` for n in
``task.reference_samples`` (found by config, :func:`reporting.budget_sweep.find_sweep`; missing ones
become rows with their command, none at all is an error before any work) -> per run: FLOPs per problem
(its summary), samples, per-sample accuracy, coverage@S, diversity@S, and the checker's false-positive
rate (:mod:`compute_optimal.process_check`, as the data report: exact on arith, a lower bound on GSM8K)
-> the students trained on each side's data at ``task.student_budgets`` (the study report's cells) ->
``report.md`` with the crossover in its headline, PNGs against FLOPs, ``budget_sweep.json``; W&B.

Make every run it reads: ``python -m compute_optimal.recipes sweeps/budget_sweep.yaml``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from omegaconf import DictConfig

from .. import process_check, runs
from ..budget import Budget
from ..reporting.budget_sweep import (
    BudgetSweep,
    add_fpr,
    budget_name,
    find_sweep,
    headline,
    sweep_markdown,
    write_sweep_report,
)
from ..reporting.study_report import Comparison
from . import study_report
from .common import StageResult, load_split, log_to_wandb, model_named


def run(cfg: DictConfig) -> StageResult:
    """Find the sweep's runs, measure them, write the report."""
    task = cfg.task
    sweep = find_sweep(
        cfg.paths.outputs,
        dataset=cfg.dataset.name,
        wc_model=cfg.pair.wc,
        se_model=cfg.pair.se,
        reference_samples=list(task.reference_samples),
        seed=task.seed,
        near_duplicate=task.near_duplicate,
        budget_flops=budget_flops(cfg, [*task.reference_samples, *(task.student_budgets or [])]),
    )
    _measure_fpr(cfg, sweep)
    add_students(cfg, sweep)
    paths = write_sweep_report(sweep, task.report_dir)
    crossover = sweep.crossover()
    wandb_dir = _log(cfg, sweep, paths)
    summary = {"task": "budget_sweep", **paths, "crossover": crossover.as_dict(), "wandb_dir": wandb_dir}
    message = f"{headline(sweep)}\n\n{sweep_markdown(sweep)}\n\nreport: {paths['report']}"
    return StageResult(summary, message)


def budget_flops(cfg: DictConfig, reference_samples: list[int]) -> dict[int, float | None]:
    """FLOPs per problem of each budget by budget.py (n samples of the pair's SE model): only for runs
    whose summary lacks them (the sampling stage records them) and for budgets without a finished run."""
    se = model_named(cfg, cfg.pair.se)
    tokens = float(cfg.budget.tokens_per_solution)
    return {
        n: Budget(
            budget_name(n), "compute", se.name, n, se.params, tokens_per_solution=tokens
        ).flops_per_problem
        for n in sorted({int(n) for n in reference_samples})
        if n >= 1
    }


def _measure_fpr(cfg: DictConfig, sweep: BudgetSweep) -> None:
    """The data report's checker FPR (no model): the exact check needs each problem's reference solution."""
    checker = process_check.checker_for(cfg.dataset.answer_format)
    problems = None
    if checker is not None and checker.exact:
        problems = {p.id: p for p in load_split(cfg.dataset, cfg.dataset.split)}
    add_fpr(sweep, checker, problems, answer_format=cfg.dataset.answer_format)


def add_students(cfg: DictConfig, sweep: BudgetSweep) -> None:
    """The study report's cells (base student, after WC data, after SE data) at each student budget, and
    the training runs behind them; none where ``task.regime`` or ``task.student_budgets`` is empty."""
    task = cfg.task
    sweep.regime = task.regime
    if not task.regime or not task.student_budgets:
        return
    for n in sorted({int(n) for n in task.student_budgets}):
        sweep.students[n], trained = student_comparison(cfg, task.regime, budget_name(n))
        sweep.trainings.update({(n, sampler): run for sampler, run in trained.items()})


def student_comparison(
    cfg: DictConfig, regime: str, budget: str
) -> tuple[Comparison, dict[str, runs.TrainRun]]:
    """The base student and the students trained on WC and on SE data at ``budget`` (compute-matched), found
    as the study report finds them; and the training run of each side (wc, se)."""
    args = (cfg, cfg.dataset.name, regime, budget, int(cfg.task.seed))
    return study_report.comparison(*args), study_report.trained_runs(*args)


def _wandb_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """NaN -> None, lists dropped: W&B sees optional numbers and strings."""
    frame = frame.drop(columns=[c for c in ("missing_commands",) if c in frame])
    return frame.astype(object).where(frame.notna(), None)


def _log(cfg: DictConfig, sweep: BudgetSweep, paths: dict[str, Any]) -> str | None:
    crossover = sweep.crossover()
    tables = {"sweep": sweep.table(), "students": sweep.student_table()}
    return log_to_wandb(
        cfg,
        name=f"budget-sweep-{sweep.dataset}-{sweep.wc_model}-vs-{sweep.se_model}-s{sweep.seed}",
        job_type="budget_sweep",
        summary={
            "report": paths["report"],
            "crossover_reference_samples": crossover.reference_samples,
            "crossover_flops_per_problem": crossover.flops_per_problem,
        },
        tables={k: _wandb_frame(v) for k, v in tables.items() if not v.empty},
        images={f"figures/{k}": v for k, v in paths["figures"].items()},
    )
