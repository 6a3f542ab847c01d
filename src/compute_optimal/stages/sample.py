"""The sampling stage (run_sample.py): compute-matched samples of one (dataset, model, budget, seed), graded.

config -> :func:`compute_optimal.sampling.plan_sampling` (validated, no model loaded) -> an engine, started
only when there is work -> :func:`compute_optimal.sampling.run_sampling` -> ``samples.parquet`` and
``summary.json`` in the run folder (``runs.SampleRun``).
"""

from __future__ import annotations

import logging

from hydra.utils import instantiate
from omegaconf import DictConfig

from ..sampling import SamplingConfig, plan_sampling, run_sampling
from ..specs import Dataset, Model
from .common import StageResult, engine_for, load_split, log_to_wandb, sample_run

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> StageResult:
    """Sample, grade and summarise one run (a finished one is read back, not redone)."""
    model, dataset = Model.from_config(cfg.model), Dataset.from_config(cfg.dataset)
    budget = instantiate(cfg.budget)
    plan = plan_sampling(
        run=sample_run(cfg),
        model=model,
        budget=budget,
        dataset=dataset,
        problems=load_split(cfg.dataset, dataset.split),
        sampling=SamplingConfig.from_config(cfg.sampling),
        seed=cfg.seed,
        engine_backend=cfg.engine.backend,
    )
    log.info(
        "%s on %s, budget %s (%s-matched): %d samples x %d problems -> %s",
        model.name, dataset.name, budget.name, budget.mode, plan.samples_per_problem, len(plan.problems),
        plan.run.path,
    )  # fmt: skip

    def on_finish(summary: dict) -> None:
        name = f"sample-{dataset.name}-{model.name}-{budget.name}-s{cfg.seed}"
        summary["wandb_dir"] = log_to_wandb(cfg, name=name, job_type="sample", summary=summary)

    with engine_for(model, cfg.engine, cfg.seed) as engine:
        summary = run_sampling(plan, engine, progress=cfg.progress, on_finish=on_finish)
    return StageResult(summary, message(summary, str(plan.run.path)))


def message(summary: dict, run_dir: str) -> str:
    if summary.get("finished") is False:  # one shard of a sharded run; the last one merges
        return (
            f"shard {summary['shard']}/{summary['num_shards']} done; {summary['missing_chunks']} chunks "
            f"of other shards to go -> {run_dir}"
        )
    return (
        f"{summary['model']} {summary['dataset']} {summary['budget']}: {summary['samples_per_problem']} "
        f"samples/problem, accuracy {summary['accuracy']:.3f}, coverage {summary['coverage']:.3f} -> {run_dir}"
    )
