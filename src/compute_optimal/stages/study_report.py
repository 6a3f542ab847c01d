"""The study report stage (run_eval.py task=study_report): students on WC data vs SE data.

config -> for each (dataset, regime, budget) the evaluations of the base student and of the students
trained on WC and on SE data, found by config (``runs.EvalRun``; a missing one becomes an empty cell with
the command that makes it) -> ``report.md`` with figures and ``study.json``, the same table in W&B.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .. import runs
from ..reporting.study_report import (
    Comparison,
    compare,
    headline_table,
    load_cell,
    study_data,
    write_study_report,
)
from .common import StageResult, log_to_wandb, student_name


def _trained_on(cfg: DictConfig, dataset: str) -> str:
    """The training set of students evaluated on ``dataset`` (MATH-500's students were trained on MATH)."""
    path = Path(cfg.paths.root) / "conf" / "dataset" / f"{dataset}.yaml"
    return str(OmegaConf.load(path).get("train_dataset", dataset))


def comparison(cfg: DictConfig, dataset: str, regime: str, budget: str) -> Comparison:
    """One row of the report: the base student, and the students trained on WC and on SE data."""
    outputs, seed = cfg.paths.outputs, cfg.task.seed
    student = student_name(regime, cfg.pair)
    base = load_cell(f"{student} (base)", runs.EvalRun.of_base(outputs, dataset, student, seed))
    cells, train = {}, {}
    for sampler in ("wc", "se"):
        trained = runs.TrainRun.of(
            outputs,
            _trained_on(cfg, dataset),
            regime,
            student,
            sampler,
            budget,
            "compute",
            seed,
            pair=cfg.pair.name,
        )
        evaluation = runs.EvalRun.of_student(outputs, dataset, trained, seed)
        cells[sampler] = load_cell(f"{student} after {sampler.upper()} data", evaluation)
        train[sampler] = trained.read_summary() if trained.is_finished() else None
    return compare(dataset, budget, regime, student, base, cells["wc"], cells["se"], train, seed=seed)


def run(cfg: DictConfig) -> StageResult:
    """Gather every finished evaluation of the study and write the WC-vs-SE report."""
    task = cfg.task
    comparisons = [
        comparison(cfg, dataset, regime, budget)
        for dataset in task.datasets
        for regime in task.regimes
        for budget in task.budgets
    ]
    if not any(c.base.done or c.wc.done or c.se.done for c in comparisons):
        first = comparisons[0].base.run.command if comparisons else "python run_eval.py task=evaluate"
        raise runs.RunError(
            f"no finished evaluation runs under {Path(cfg.paths.outputs) / 'eval'}: run the evaluate stage "
            f"first, e.g. {first}"
        )
    paths = write_study_report(
        comparisons, task.report_dir, title=task.title, notes=list(task.notes), data_report=_data_report(cfg)
    )
    log_to_wandb(
        cfg,
        name=f"study-{'-'.join(task.datasets)}",
        job_type="study_report",
        summary={"report": paths["report"]},
        tables={"study": study_data(comparisons)},
        images=paths["figures"],
    )
    return StageResult(
        {"task": "study_report", **paths}, f"{headline_table(comparisons)}\n\nreport: {paths['report']}"
    )


def _data_report(cfg: DictConfig) -> str | None:
    """The data report of the study's first dataset, as a link relative to the study report (the report
    folder can be copied or served as it is); None where it has not been built."""
    task = cfg.task
    found = sorted(
        Path(cfg.paths.outputs).glob(
            f"reports/data/{task.datasets[0]}/{cfg.pair.wc}-vs-{cfg.pair.se}/seed{task.seed}/report.md"
        )
    )
    return os.path.relpath(found[0], task.report_dir) if found else None
