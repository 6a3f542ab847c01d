"""The study report stage (run_eval.py task=study_report): students on WC data vs SE data.

config -> for each (dataset, regime, budget) and each seed of ``task.seeds`` the evaluations of the base
student and of the students trained on WC and on SE data, found by config (``runs.EvalRun``; a missing one
becomes an empty cell with the command that makes it) -> ``report.md`` with figures and ``study.json``, the
same tables in W&B. Seed s is one replicate of the whole pipeline: the data sampled with seed s, the students
trained with ``seed=s`` (``data.sampling_seed`` follows ``seed``) and evaluated with seed s. Several seeds add
the mean and spread over the seeds that finished (``reporting.study_report.Aggregate``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

from .. import runs
from ..reporting.study_report import (
    CONTROLS,
    MAIN,
    Comparison,
    aggregate_data,
    compare,
    console_text,
    load_cell,
    several_seeds,
    study_data,
    write_study_report,
)
from .common import StageResult, log_to_wandb, student_name


def _trained_on(cfg: DictConfig, dataset: str) -> str:
    """The training set of students evaluated on ``dataset`` (MATH-500's students were trained on MATH)."""
    path = Path(cfg.paths.root) / "conf" / "dataset" / f"{dataset}.yaml"
    return str(OmegaConf.load(path).get("train_dataset", dataset))


def seeds_of(cfg: DictConfig, key: str = "seeds") -> list[int]:
    """``task.seeds`` (or ``task.control_seeds``, null: the same): distinct integers, at least one (a single
    integer is taken as a list of one)."""
    value = cfg.task.get(key)
    if value is None and key != "seeds":
        return seeds_of(cfg)
    seeds = list(value) if isinstance(value, ListConfig | list | tuple) else [value]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise runs.RunError(
            f"task.{key} must be a non-empty list of integers, e.g. task.{key}=[0,1,2]; got {value}"
        )
    if len(set(seeds)) != len(seeds):
        raise runs.RunError(f"task.{key} names a seed twice: {seeds}")
    return seeds


# What each control trains on, per sampler: (budget mode, data selection). SE is the budget's reference model,
# so its number-matched data is its compute-matched data.
_CONTROL_DATA: dict[str, dict[str, tuple[str, runs.Selection]]] = {
    MAIN: {"wc": ("compute", runs.Selection()), "se": ("compute", runs.Selection())},
    "number_matched": {"wc": ("number", runs.Selection()), "se": ("compute", runs.Selection())},
    "process_only": {"wc": ("compute", runs.Selection("process")), "se": ("compute", runs.Selection("process"))},
    "one_per_problem": {"wc": ("compute", runs.Selection(max_per_problem=1)),
                        "se": ("compute", runs.Selection(max_per_problem=1))},
}  # fmt: skip
assert set(_CONTROL_DATA) == set(CONTROLS)


def controls_of(cfg: DictConfig) -> list[str]:
    """``task.controls``: names of :data:`CONTROLS` (besides the compute-matched rows, always there)."""
    names = list(cfg.task.get("controls") or [])
    unknown = [n for n in names if n not in CONTROLS or n == MAIN]
    if unknown:
        known = ", ".join(n for n in CONTROLS if n != MAIN)
        raise runs.RunError(f"task.controls: unknown control {', '.join(map(str, unknown))}; known: {known}")
    return names


def trained_runs(
    cfg: DictConfig, dataset: str, regime: str, budget: str, seed: int, control: str = MAIN
) -> dict[str, runs.TrainRun]:
    """The training runs of ``regime``'s student on WC and on SE data at ``budget`` (compute-matched, or as
    ``control`` says), by sampler."""
    student = student_name(regime, cfg.pair)
    return {
        sampler: runs.TrainRun.of(
            cfg.paths.outputs,
            _trained_on(cfg, dataset),
            regime,
            student,
            sampler,
            budget,
            mode,
            seed,
            pair=cfg.pair.name,
            selection=selection,
        )
        for sampler, (mode, selection) in _CONTROL_DATA[control].items()
    }


def comparison(
    cfg: DictConfig, dataset: str, regime: str, budget: str, seed: int, control: str = MAIN
) -> Comparison:
    """One row of the report for one seed: the base student, and the students trained on WC and on SE data."""
    outputs = cfg.paths.outputs
    student = student_name(regime, cfg.pair)
    base = load_cell(f"{student} (base)", runs.EvalRun.of_base(outputs, dataset, student, seed))
    cells, train = {}, {}
    mark = "" if control == MAIN else f" ({control})"
    for sampler, trained in trained_runs(cfg, dataset, regime, budget, seed, control).items():
        evaluation = runs.EvalRun.of_student(outputs, dataset, trained, seed, pair=cfg.pair.name)
        cells[sampler] = load_cell(f"{student} after {sampler.upper()} data{mark}", evaluation)
        train[sampler] = trained.read_summary() if trained.is_finished() else None
    return compare(
        dataset,
        budget,
        regime,
        student,
        base,
        cells["wc"],
        cells["se"],
        train,
        seed=seed,
        resamples=cfg.task.bootstrap_resamples,
        control=control,
    )


def run(cfg: DictConfig) -> StageResult:
    """Gather every finished evaluation of the study and write the WC-vs-SE report."""
    task = cfg.task
    seeds = seeds_of(cfg)
    controls = controls_of(cfg)
    comparisons = [
        comparison(cfg, dataset, regime, budget, seed)
        for dataset in task.datasets
        for regime in task.regimes
        for budget in task.budgets
        for seed in seeds
    ] + [
        comparison(cfg, dataset, regime, budget, seed, control)
        for control in controls
        for dataset in task.datasets
        for regime in task.regimes
        for budget in task.get("control_budgets") or task.budgets
        for seed in seeds_of(cfg, "control_seeds")
    ]
    if not any(c.base.done or c.wc.done or c.se.done for c in comparisons):
        first = comparisons[0].base.run.command if comparisons else "python run_eval.py task=evaluate"
        raise runs.RunError(
            f"no finished evaluation runs under {Path(cfg.paths.outputs) / 'eval'}: run the evaluate stage "
            f"first, e.g. {first}"
        )
    out_dir = Path(task.report_dir)
    paths = write_study_report(
        comparisons,
        out_dir,
        title=task.title,
        notes=list(task.notes),
        data_reports=_data_reports(cfg, seeds, out_dir),
    )
    tables = {"study": study_data(comparisons)}
    if several_seeds(comparisons):
        tables["study_seeds"] = pd.json_normalize(aggregate_data(comparisons))
    log_to_wandb(
        cfg,
        name=f"study-{'-'.join(task.datasets)}",
        job_type="study_report",
        summary={"report": paths["report"]},
        tables=tables,
        images=paths["figures"],
    )
    return StageResult(
        {"task": "study_report", "seeds": seeds, **paths},
        f"{console_text(comparisons)}\n\nreport: {paths['report']}",
    )


def _data_reports(cfg: DictConfig, seeds: Sequence[int], out_dir: Path) -> dict[int, str]:
    """Each seed's data report of the study's first dataset, as a link relative to the study report (the
    report folder can be copied or served as it is); seeds whose data report has not been built are left out."""
    root = (
        Path(cfg.paths.outputs)
        / "reports"
        / "data"
        / cfg.task.datasets[0]
        / f"{cfg.pair.wc}-vs-{cfg.pair.se}"
    )
    found = {seed: root / f"seed{seed}" / "report.md" for seed in seeds}
    return {seed: os.path.relpath(path, out_dir) for seed, path in found.items() if path.is_file()}
