"""The training stage (run_train.py): fine-tune the regime's student on one sampler's data.

config -> the regime's three models (``training.regimes``) -> :func:`compute_optimal.training.stage.plan_training`
(finds the finished sampling run by config, refuses settings that would train wrong) -> Lightning ->
the exported student and ``train_summary.json`` in the run folder (``runs.TrainRun``).
"""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig

from ..data import select_subset
from ..devices import cuda_devices
from ..models import check_available, resolve_checkpoint
from ..runs import Selection
from ..specs import Dataset, TrainSettings, plain
from ..training.regimes import Regime
from ..training.stage import effective_trainer, plan_training, run_training
from .common import StageResult, load_split, model_named, student_name, train_run

log = logging.getLogger(__name__)


def _slurm_tasks_per_node() -> int | None:
    """Processes SLURM started on each node of this job (None outside SLURM); e.g. "2" or "2(x3)"."""
    value = os.environ.get("SLURM_NTASKS_PER_NODE")
    return int(value.split("(")[0].split(",")[0]) if value else None


def run(cfg: DictConfig) -> StageResult:
    """Train one student (a finished run of the same config is read back, not redone)."""
    gpu_mem_gb = cfg.site.get("gpu_mem_gb")
    if (
        gpu_mem_gb is not None
    ):  # before any work: a job that cannot fit stops with its plan and what to change
        from ..memory import check_fits, plan_for_config

        check_fits(plan_for_config(cfg), gpu_mem_gb)
    run_folder = train_run(cfg)
    regime = Regime(
        cfg.regime.name,
        student=model_named(cfg, student_name(cfg.regime.name, cfg.pair)),
        wc=model_named(cfg, cfg.pair.wc),
        se=model_named(cfg, cfg.pair.se),
    )
    dataset = Dataset.from_config(cfg.dataset)
    sampler = regime.sampler_model(cfg.data.sampler)
    problems = load_split(cfg.dataset, "train")
    plan = plan_training(
        run=run_folder,
        regime=regime,
        sampler=cfg.data.sampler,
        samples=sample_run_of(cfg, sampler.name) if sampler else None,
        # Reference data: the problems a sampling run of this config samples, one reference solution each.
        problems=None if sampler else select_subset(problems, cfg.dataset.limit, cfg.data.sampling_seed),
        dataset=dataset,
        hparams=TrainSettings.from_config(cfg.train),
        trainer=effective_trainer(
            plain(cfg.trainer), cuda_devices=cuda_devices(), slurm_tasks=_slurm_tasks_per_node()
        ),
        seed=cfg.seed,
        logger=plain(cfg.get("logger")),
        selection=Selection.of(cfg.data),
    )
    if run_folder.finished_as(plan.signature):  # other settings, student or data: refused by name
        log.info("%s is finished; skipping", run_folder.path)
        summary = run_folder.read_summary()
        return StageResult(summary, message(summary))
    check_available(regime.student)
    summary = run_training(
        plan,
        problems=problems,
        resolve_checkpoint=resolve_checkpoint,
        progress=cfg.progress,
    )
    return StageResult(summary, message(summary) if summary else "")  # empty on ranks > 0


def sample_run_of(cfg: DictConfig, model: str):
    """The sampling run the training data comes from: same dataset and budget, ``data.sampling_seed``."""
    from ..runs import SampleRun

    return SampleRun.of(
        cfg.paths.outputs, cfg.dataset.name, model, cfg.budget.name, cfg.budget.mode, cfg.data.sampling_seed
    )


def message(summary: dict) -> str:
    return (
        f"{summary['regime']}: {summary['student']} on {summary['sampler'].upper()} data "
        f"({summary['num_examples']} examples, {summary['steps']} steps, final loss {summary['final_loss']:.3f}) "
        f"-> {summary['model_dir']}"
    )
