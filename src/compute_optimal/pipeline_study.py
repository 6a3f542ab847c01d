"""Config -> evaluation of one model, and the study report over all of them (run_eval.py tasks).

Like :mod:`compute_optimal.pipeline`, these take a composed config and read no Hydra global state.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import models, runs
from .data import select_subset
from .evaluation import EvalTarget, plan_runs, run_evaluation, student_target
from .pipeline import engine_settings, load_dataset_split, load_model_config, start_engine
from .reporting.study_report import Comparison, compare, eval_run_dir, load_cell, write_study_report
from .training.regimes import RegimeError, pair_student

log = logging.getLogger(__name__)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def regime_student(cfg: DictConfig, regime: str, student: str | None = None) -> str:
    """The student a regime trains for the config's pair (or the one named explicitly)."""
    if student:
        return student
    name = pair_student(regime, cfg.pair)
    if name is None:
        raise RegimeError(f"pair has no student for {regime} (set pair.distill_student=<model>)")
    return name


def train_run(
    cfg: DictConfig, regime: str, source: str, budget: str, mode: str, student: str | None = None
) -> Path:
    ck = cfg.task.checkpoint
    return runs.train_run_dir(
        cfg.paths.outputs,
        str(ck.train_dataset),
        regime,
        regime_student(cfg, regime, student),
        source,
        runs.budget_dir(budget, mode),
        int(ck.seed),
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test-split accuracy of the base model (``model=``) or of a student (``task.checkpoint.regime=``)."""
    task, ck = cfg.task, cfg.task.checkpoint
    conf_dir = Path(cfg.paths.root) / "conf"
    dataset = _plain(cfg.dataset)
    prompt = dict(dataset.get("prompt") or {})
    if ck.regime:
        run = train_run(cfg, str(ck.regime), str(ck.source), str(ck.budget), str(ck.budget_mode), ck.student)
        target = student_target(run, str(ck.train_dataset))
        # The student's own model config (engine settings, params), with the trained weights' path.
        student_cfg = load_model_config(conf_dir, target.model["name"])
        target = EvalTarget(
            target.kind,
            target.name,
            {**student_cfg, **target.model, "params": student_cfg["params"]},
            target.train_summary,
        )
        trained_shots = runs.read_json(run / runs.SIGNATURE)["hparams"].get("num_shots", 0)
        prompt["num_shots"] = trained_shots if task.num_shots is None else int(task.num_shots)
        label = target.name
    else:
        model_cfg = _plain(cfg.model)
        target = EvalTarget("base", str(model_cfg["name"]), model_cfg)
        if task.num_shots is not None:
            prompt["num_shots"] = int(task.num_shots)
        label = f"base/{model_cfg['name']}"
    models.check_available(target.model)
    run_dir = (
        Path(task.run_dir)
        if task.run_dir
        else eval_run_dir(cfg.paths.outputs, str(dataset["name"]), label, int(cfg.seed))
    )
    problems = select_subset(load_dataset_split(cfg.dataset, str(task.split)), task.limit, int(cfg.seed))
    plans = plan_runs(
        run_dir=run_dir,
        model=target.model,
        dataset={**dataset, "prompt": prompt, "limit": None},
        problems=problems,
        num_samples=int(task.num_samples),
        temperature=float(task.temperature),
        max_new_tokens=int(task.max_new_tokens),
        chunk_size=int(task.chunk_size),
        seed=int(cfg.seed),
    )
    settings = engine_settings(cfg.engine, dict(target.model), int(cfg.seed))

    def make_engine():
        return start_engine(target.model, settings)

    summary = run_evaluation(
        run_dir, target, plans, make_engine, ks=list(task.ks), progress=bool(cfg.get("progress", True))
    )
    _log_wandb(cfg, f"eval-{dataset['name']}-{label.replace('/', '-')}", "evaluate", summary)
    n = summary.get("samples_per_problem")
    sampled = f", mean@{n} {summary[f'mean@{n}']:.3f}, maj@{n} {summary[f'maj@{n}']:.3f}" if n else ""
    return {
        **summary,
        "run_dir": str(run_dir),
        "message": f"{label} on {dataset['name']} test ({summary['num_problems']} problems): "
        f"pass@1 greedy {summary.get('pass@1_greedy', float('nan')):.3f}{sampled} -> {run_dir}",
    }


def _eval_command(
    dataset: str, target: str, regime: str | None = None, source: str | None = None, budget: str | None = None
) -> str:
    if regime is None:
        return f"python run_eval.py task=evaluate dataset={dataset} model={target}"
    return (
        f"python run_eval.py task=evaluate dataset={dataset} task.checkpoint.regime={regime} "
        f"task.checkpoint.source={source} budget={budget}"
    )


def study_report(cfg: DictConfig) -> dict[str, Any]:
    """Gather every finished evaluation of the study and write the WC-vs-SE report."""
    task = cfg.task
    comparisons: list[Comparison] = []
    root, seed = cfg.paths.outputs, int(task.seed)
    conf_dir = Path(cfg.paths.root) / "conf" / "dataset"
    for dataset in task.datasets:
        # Students evaluated on e.g. MATH-500 were trained on MATH: their training runs live there.
        trained_on = str(OmegaConf.load(conf_dir / f"{dataset}.yaml").get("train_dataset", dataset))
        for regime in task.regimes:
            student = regime_student(cfg, str(regime))
            base = load_cell(
                f"{student} (base)",
                eval_run_dir(root, dataset, f"base/{student}", seed),
                _eval_command(dataset, student),
            )
            for budget in task.budgets:
                budget_dir = runs.budget_dir(str(budget), "compute")
                cells, train = {}, {}
                for source in ("wc", "se"):
                    target = f"{regime}/{student}/{source}-{budget_dir}"
                    cells[source] = load_cell(
                        f"{student} after {source.upper()} data",
                        eval_run_dir(root, dataset, target, seed),
                        _eval_command(dataset, target, str(regime), source, str(budget)),
                    )
                    t = runs.train_run_dir(root, trained_on, str(regime), student, source, budget_dir, seed)
                    train[source] = (
                        runs.read_json(t / "train_summary.json")
                        if (t / "train_summary.json").is_file()
                        else None
                    )
                comparisons.append(
                    compare(
                        dataset,
                        str(budget),
                        str(regime),
                        student,
                        base,
                        cells["wc"],
                        cells["se"],
                        train,
                        seed=seed,
                    )
                )
    if not any(c.base.done or c.wc.done or c.se.done for c in comparisons):
        raise runs.RunError(
            f"no finished evaluation runs under {Path(root) / 'eval'}: run the evaluate stage first, "
            f"e.g. {comparisons[0].base.command if comparisons else 'python run_eval.py task=evaluate'}"
        )
    data_reports = sorted(
        Path(root).glob(
            f"reports/data/{task.datasets[0]}/{cfg.pair.wc}-vs-{cfg.pair.se}/seed{seed}/report.md"
        )
    )
    paths = write_study_report(
        comparisons,
        task.report_dir,
        title=str(task.title),
        notes=list(task.notes),
        # A relative link, so the report folder can be copied or served as it is.
        data_report=os.path.relpath(data_reports[0], str(task.report_dir)) if data_reports else None,
    )
    from .reporting.study_report import headline_table, study_data

    _log_wandb(
        cfg,
        f"study-{'-'.join(task.datasets)}",
        "study_report",
        {"report": paths["report"]},
        tables={"study": study_data(comparisons)},
        images=paths["figures"],
    )
    return {
        "task": "study_report",
        **paths,
        "message": f"{headline_table(comparisons)}\n\nreport: {paths['report']}",
    }


def _log_wandb(
    cfg: DictConfig,
    name: str,
    job_type: str,
    summary: dict[str, Any],
    *,
    tables: dict[str, Any] | None = None,
    images: dict[str, str] | None = None,
) -> str | None:
    import pandas as pd

    from .tracking import log_run

    try:
        frames = {k: pd.DataFrame(v) for k, v in (tables or {}).items()}
        return log_run(
            _plain(cfg.get("logger")),
            name=name,
            job_type=job_type,
            config=OmegaConf.to_container(cfg, resolve=True),
            summary=summary,
            tables=frames,
            **({"images": images} if images else {}),
        )
    except Exception as exc:  # tracking must never lose finished work
        log.warning("W&B logging failed (%s); the files are complete", exc)
        return None
