"""The data report stage (run_eval.py task=data_report): WC vs SE samples at equal compute.

config -> the finished sampling runs of the pair (found by config, ``reporting.load_comparison``) ->
coverage@k, diversity@k and the false-positive rate (``task.fpr.method``: none, an LLM judge, or human
labels; and, whatever the method, the checkers of :mod:`compute_optimal.process_check` over every
answer-correct sample: exact on arith, a lower bound from the arithmetic on GSM8K; an LLM judge on arith
is scored against the exact verdicts) -> ``report.md`` with figures and ``comparison.json``, the same
tables in W&B.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from .. import judge, process_check, runs
from ..analysis import AnalysisError
from ..reporting import DataComparison, RunData, load_comparison, write_report
from ..reporting.data_report import headline_markdown
from ..specs import Model
from .common import StageResult, engine_for, load_split, log_to_wandb, model_named

log = logging.getLogger(__name__)

FPR_METHODS = ("none", "judge", "human")


def run(cfg: DictConfig) -> StageResult:
    """Build the WC-vs-SE data report (or, with task.export_sheet, export the human label sheet)."""
    task = cfg.task
    method = task.fpr.method
    if method not in FPR_METHODS:
        raise AnalysisError(f"task.fpr.method must be one of {', '.join(FPR_METHODS)}, got {method!r}")
    if task.export_sheet and method != "human":
        raise AnalysisError("task.export_sheet=true writes a human label sheet: add task.fpr.method=human")
    comparison = load_comparison(
        cfg.paths.outputs,
        dataset=cfg.dataset.name,
        wc_model=cfg.pair.wc,
        se_model=cfg.pair.se,
        budgets=list(task.budgets),
        seed=task.seed,
        number_matched=task.number_matched,
        near_duplicate=task.near_duplicate,
        matching=task.matching,
    )
    if method == "human" and task.export_sheet:
        return _export(cfg, comparison, Path(task.fpr.labels_file))
    judged = None
    if method == "human":
        _human_fpr(comparison, Path(task.fpr.labels_file))
    elif method == "judge":
        judged = _judge_fpr(cfg, comparison)
    else:
        comparison.fpr_note = (
            "task.fpr.method=none; set task.fpr.method=judge (an LLM judge) or task.fpr.method=human "
            "(a labelled sheet)"
        )
    process = _process_fpr(cfg, comparison)
    if process is not None and process.exact and judged is not None:
        process.calibrate(judged[1], judge_name=judged[0])  # the judge scored on the items it judged
    paths = write_report(comparison, task.report_dir, process=process)
    wandb_dir = _log(cfg, comparison, paths, process)
    summary = {"task": "data_report", **paths, "wandb_dir": wandb_dir, "headline": comparison.headline()}
    if process is not None:
        summary["process_fpr"] = process.table()
    return StageResult(summary, f"{headline_markdown(comparison, process)}\n\nreport: {paths['report']}")


# --- false-positive rate --------------------------------------------------------------------------


def _process_fpr(cfg: DictConfig, comparison: DataComparison) -> process_check.ProcessFPR | None:
    """The checker's FPR over every answer-correct sample of each compute-matched run (no judge cost):
    the exact process check on arith, the arithmetic check on GSM8K, none elsewhere (MATH)."""
    process = process_check.checker_for(cfg.dataset.answer_format)
    if process is None:
        return None
    # The exact check needs each problem's reference solution; the samples table lacks it.
    problems = {p.id: p for p in load_split(cfg.dataset, cfg.dataset.split)} if process.exact else None
    for run in comparison.compute_runs():
        verdicts = process_check.sample_verdicts(run.frame, problems)
        process.add_run(run.model, run.ref.budget_dir, verdicts, run.frame)
    return process


def _questions(cfg: DictConfig) -> dict[str, str]:
    """Problem statements by id: judges and labellers need the question, the samples table lacks it."""
    return {p.id: p.question for p in load_split(cfg.dataset, cfg.dataset.split)}


def _items(cfg: DictConfig, comparison: DataComparison) -> dict[RunData, list[judge.JudgeItem]]:
    fpr = cfg.task.fpr
    questions = _questions(cfg)
    return {
        run: judge.select_items(
            run.frame,
            dataset=comparison.dataset,
            model=run.model,
            budget=run.ref.budget_dir,
            num_problems=fpr.num_problems,
            per_problem=fpr.per_problem,
            seed=fpr.sample_seed,
            questions=questions,
        )
        for run in comparison.compute_runs()
    }


def _export(cfg: DictConfig, comparison: DataComparison, labels: Path) -> StageResult:
    items = [i for run_items in _items(cfg, comparison).values() for i in run_items]
    judge.export_sheet(labels, items, seed=cfg.task.fpr.sample_seed)
    message = (
        f"exported {len(items)} correct-answer solutions to label: {labels}\n"
        "Fill its `label` column with `correct` (the reasoning is right) or `incorrect` (right answer, "
        "wrong reasoning); leave unsure rows blank. Then build the report: the same command without "
        "task.export_sheet=true"
    )
    return StageResult({"task": "data_report", "sheet": str(labels), "items": len(items)}, message)


def _human_fpr(comparison: DataComparison, labels: Path) -> None:
    if not labels.is_file():
        raise AnalysisError(
            f"no label sheet at {labels}: export one (this command with task.export_sheet=true), fill "
            "its label column, then run again (or point task.fpr.labels_file at a labelled sheet)"
        )
    sheet = judge.import_sheet(labels)
    found = judge.human_fpr(sheet, f"human labels ({labels.name})")
    wanted = {(r.model, r.ref.budget_dir) for r in comparison.compute_runs()}
    comparison.fpr = {k: v for k, v in found.items() if k in wanted}
    for model, budget in sorted(set(found) - wanted):
        comparison.warnings.append(
            f"the label sheet has rows of {model} {budget}, which this report does not show"
        )
    labelled = int((sheet["label"] != "").sum())
    comparison.fpr_note = f"human labels from `{labels}` ({labelled} of {len(sheet)} rows labelled)"


def _judge_fpr(cfg: DictConfig, comparison: DataComparison) -> tuple[str, dict[str, list[tuple[str, str]]]]:
    """Judge each run's sampled correct solutions (cached per judge model), then count the verdicts.

    Returns the judge's name and, per run ("model budget"), its (item_id, verdict) pairs.
    """
    fpr = cfg.task.fpr
    # The judge: a model config's name, or a whole model config (a judge that has no file in conf/model/).
    model = (
        Model.from_config(fpr.judge_model)
        if isinstance(fpr.judge_model, DictConfig)
        else model_named(cfg, fpr.judge_model)
    )
    name = model.name
    settings = judge.JudgeSettings(
        temperature=fpr.temperature,
        max_new_tokens=fpr.max_new_tokens,
        batch_size=fpr.batch_size,
        seed=cfg.seed,
    )
    key = {
        "judge_model": name,
        "prompt_version": judge.JUDGE_PROMPT_VERSION,
        "temperature": settings.temperature,
        "max_new_tokens": settings.max_new_tokens,
    }
    items = _items(cfg, comparison)
    cache_dir = Path(cfg.task.judge_dir) / name
    cache = {
        run: cache_dir / f"{run.model}-{run.ref.budget_dir}-seed{comparison.seed}.parquet" for run in items
    }
    done: dict[str, judge.JudgeVerdict] = {}
    for path in cache.values():
        done.update(_read_verdicts(path, key))
    todo = [i for run_items in items.values() for i in run_items if i.item_id not in done]
    if todo:
        log.info("judging %d solutions with %s", len(todo), name)
        with engine_for(model, cfg.engine, cfg.seed) as engine:
            for verdict in judge.judge_solutions(engine.get(), todo, settings):
                done[verdict.item_id] = verdict
        for run, run_items in items.items():
            _write_verdicts(cache[run], [done[i.item_id] for i in run_items], key)
    method = f"LLM judge ({name})"
    comparison.fpr = {
        (run.model, run.ref.budget_dir): judge.fpr_from_verdicts(
            [done[i.item_id].verdict for i in run_items], method
        )
        for run, run_items in items.items()
    }
    unknown = sum(f.unknown for f in comparison.fpr.values())
    comparison.fpr_note = (
        f"LLM judge `{name}` (prompt {judge.JUDGE_PROMPT_VERSION}, temperature {settings.temperature:g}) on up "
        f"to {fpr.num_problems} problems per run with a correct solution, {fpr.per_problem} "
        f"correct solution(s) each; {unknown} verdict(s) could not be parsed (unknown); verdicts in `{cache_dir}`"
    )
    judged = {
        f"{run.model} {run.ref.budget_dir}": [(i.item_id, done[i.item_id].verdict) for i in run_items]
        for run, run_items in items.items()
    }
    return name, judged


def _read_verdicts(path: Path, key: dict[str, Any]) -> dict[str, judge.JudgeVerdict]:
    """Cached verdicts made with the same judge, prompt and decoding; others are judged again."""
    if not path.is_file():
        return {}
    frame = pd.read_parquet(path)
    for column, value in key.items():
        frame = frame[frame[column] == value] if column in frame else frame.iloc[0:0]
    return {r.item_id: judge.JudgeVerdict(r.item_id, r.verdict, r.output) for r in frame.itertuples()}


def _write_verdicts(path: Path, verdicts: Sequence[judge.JudgeVerdict], key: dict[str, Any]) -> None:
    rows = [{"item_id": v.item_id, "verdict": v.verdict, "output": v.output, **key} for v in verdicts]
    runs.atomic_write_parquet(path, pd.DataFrame(rows, columns=["item_id", "verdict", "output", *key]))


# --- W&B --------------------------------------------------------------------------------------------


def _wandb_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """NaN -> None so W&B sees optional numbers, not a column mixing floats and strings."""
    return frame.astype(object).where(frame.notna(), None)


def _log(
    cfg: DictConfig,
    comparison: DataComparison,
    paths: dict[str, Any],
    process: process_check.ProcessFPR | None = None,
) -> str | None:
    summary: dict[str, Any] = {"report": paths["report"]}
    for row in comparison.headline().to_dict("records"):
        if row.get("missing"):
            continue
        prefix = f"{row['budget']}/{row['matching']}/"
        summary.update(
            {
                prefix + k: v
                for k, v in row.items()
                if isinstance(v, int | float) and not pd.isna(v) and k != "missing"
            }
        )
    tables = {
        "headline": comparison.headline(),
        "per_level": comparison.per_group("per_level"),
        "per_subject": comparison.per_group("per_subject"),
        "runs": comparison.runs_table(),
        "fpr": comparison.fpr_table(),
    }
    if process is not None:
        tables["process_fpr"] = process.table()
        tables["judge_calibration"] = process.calibration_table()
        tables["process_coverage"] = process.coverage_table()
    return log_to_wandb(
        cfg,
        name=f"data-report-{comparison.dataset}-{comparison.wc_model}-vs-{comparison.se_model}-s{comparison.seed}",
        job_type="data_report",
        summary=summary,
        tables={k: _wandb_frame(v) for k, v in tables.items() if not v.empty},
        images={f"figures/{k}": v for k, v in paths["figures"].items()},
    )
