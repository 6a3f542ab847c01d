"""Config -> stage calls: the glue between the Hydra entry points and the library.

Each function takes a composed config (an OmegaConf DictConfig or any mapping of the same shape),
builds the plain-Python inputs of one stage with ``hydra.utils.instantiate`` and runs it. Nothing
here reads Hydra's global state, so tests call these functions directly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import models, runs
from .analysis import AnalysisError
from .budget import BudgetError
from .data import DatasetError
from .devices import DeviceError
from .engines import build_engine, choose_backend
from .models import ModelError
from .prompts import PromptError
from .sampling import SamplingError, plan_sampling, run_sampling
from .training.regimes import RegimeError
from .training.stage import TrainingError

log = logging.getLogger(__name__)

# Errors a user can cause with a config or an input file: reported as one line, no traceback.
USER_ERRORS = (
    AnalysisError,
    BudgetError,
    DatasetError,
    DeviceError,
    ModelError,
    PromptError,
    RegimeError,
    SamplingError,
    TrainingError,
    runs.RunError,
)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def load_dataset_split(dataset_cfg: Any, split: str) -> list:
    """Instantiate the dataset's loader for one split."""
    try:
        return instantiate(dataset_cfg.loader, split=split)
    except DatasetError:
        raise
    except Exception as exc:  # instantiate wraps loader errors; unwrap ours
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, DatasetError):
            raise cause from None
        raise


def engine_settings(engine: DictConfig, model: dict[str, Any], seed: int) -> dict[str, Any]:
    """The engine config resolved against ``model``, the model actually loaded (a student evaluated
    under ``eval.yaml`` is not its ``model`` entry): tensor-parallel size, max length and memory come
    from the loaded model's config, never from another model's."""
    raw = OmegaConf.to_container(engine, resolve=False)
    node = OmegaConf.create({"model": dict(model), "seed": seed, "engine": raw})
    settings = OmegaConf.to_container(node.engine, resolve=True)
    # "auto" is decided here, before any output is written: a job whose GPUs CUDA cannot use stops now.
    settings["backend"] = choose_backend(settings["backend"])
    return settings


def start_engine(model: dict[str, Any], settings: dict[str, Any]) -> Any:
    """Start the engine ``settings`` name (auto, vllm, vllm_cpu, hf) on ``model``'s checkpoint."""
    return build_engine(
        models.resolve_checkpoint(model),
        settings["backend"],
        vllm=settings.get("vllm"),
        vllm_cpu=settings.get("vllm_cpu"),
        hf=settings.get("hf"),
    )


def sample(cfg: DictConfig) -> dict[str, Any]:
    """Sample, grade and summarise one (dataset, model, budget, seed); skip it when finished."""
    if runs.is_finished(cfg.run_dir):
        log.info("%s is finished; skipping", cfg.run_dir)
        return runs.read_summary(cfg.run_dir)
    model_cfg = _plain(cfg.model)
    models.check_available(model_cfg)
    budget = instantiate(cfg.budget)
    problems = load_dataset_split(cfg.dataset, str(cfg.dataset.split))
    plan = plan_sampling(
        run_dir=cfg.run_dir,
        model=model_cfg,
        budget=budget,
        dataset=_plain(cfg.dataset),
        problems=problems,
        sampling=_plain(cfg.sampling),
        seed=int(cfg.seed),
        engine_backend=str(cfg.engine.backend),
    )
    log.info(
        "%s on %s, budget %s (%s-matched): %d samples x %d problems -> %s",
        plan.model["name"],
        plan.dataset,
        budget.name,
        budget.mode,
        plan.samples_per_problem,
        len(plan.problems),
        plan.run_dir,
    )
    settings = engine_settings(cfg.engine, model_cfg, int(cfg.seed))

    def make_engine():
        return start_engine(model_cfg, settings)

    def log_to_wandb(summary: dict[str, Any]) -> None:
        summary["wandb_dir"] = tracking_log(cfg, summary, plan)

    return run_sampling(plan, make_engine, progress=bool(cfg.get("progress", True)), on_finish=log_to_wandb)


def tracking_log(cfg: DictConfig, summary: dict[str, Any], plan: Any) -> str | None:
    from .tracking import log_run

    try:
        return log_run(
            _plain(cfg.get("logger")),
            name=f"sample-{plan.dataset}-{plan.model['name']}-{plan.budget.name}-s{plan.seed}",
            job_type="sample",
            config=OmegaConf.to_container(cfg, resolve=True),
            summary=summary,
        )
    except Exception as exc:  # tracking must never lose a finished run
        log.warning("W&B logging failed (%s); the run's files are complete", exc)
        return None


def load_model_config(conf_dir: str | Path, name: str | None) -> dict[str, Any]:
    """A model config of ``conf/model/`` by name (the training student is named by the regime)."""
    from .resolvers import model_config

    if not name:
        raise ModelError(
            "no model named here (null): set it on the command line, e.g. pair.distill_student=<model>"
        )
    return OmegaConf.to_container(model_config(name, conf_dir), resolve=True)


def _slurm_tasks_per_node() -> int | None:
    """Processes SLURM started on each node of this job (None outside SLURM); e.g. "2" or "2(x3)"."""
    value = os.environ.get("SLURM_NTASKS_PER_NODE")
    return int(value.split("(")[0].split(",")[0]) if value else None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune the regime's student on the data source's finished sampling run; skip when finished."""
    from .devices import cuda_devices
    from .training.regimes import Regime, Sampler
    from .training.stage import SUMMARY, effective_trainer, plan_training, run_training

    if (Path(cfg.run_dir) / SUMMARY).is_file():
        log.info("%s is finished; skipping", cfg.run_dir)
        return runs.read_json(Path(cfg.run_dir) / SUMMARY)
    conf_dir = Path(cfg.paths.root) / "conf"
    wc, se = load_model_config(conf_dir, cfg.pair.wc), load_model_config(conf_dir, cfg.pair.se)
    if cfg.regime.student is None:
        raise RegimeError(
            f"regime {cfg.regime.name} needs a student for the pair {cfg.pair.get('name', '')} "
            f"({cfg.pair.wc} vs {cfg.pair.se}), which names none (pair.distill_student is null). "
            "Use a pair that has one (pair=gemma2 on a cluster: Gemma-7B; pair=tiny: a tiny random model) "
            "or name it: pair.distill_student=<model>"
        )
    student = load_model_config(conf_dir, cfg.regime.student)
    regime = Regime(
        str(cfg.regime.name),
        Sampler(student["name"], float(student["params"])),
        Sampler(wc["name"], float(wc["params"])),
        Sampler(se["name"], float(se["params"])),
    )
    source = str(cfg.data.source)
    sampler = regime.sampler_for(source)
    budget = runs.budget_dir(str(cfg.budget.name), str(cfg.budget.mode))
    seed = int(cfg.data.sampling_seed)
    samples_dir = runs.sample_run_dir(cfg.paths.outputs, str(cfg.dataset.name), sampler.name, budget, seed)
    command = (
        f"python run_sample.py model={sampler.name} dataset={cfg.dataset.name} budget={cfg.budget.name}"
        + (f" budget.mode={cfg.budget.mode}" if cfg.budget.mode != "compute" else "")
        + (f" seed={seed}" if seed else "")
    )
    models.check_available(student)
    plan = plan_training(
        run_dir=cfg.run_dir,
        regime=regime,
        source=source,
        student=student,
        samples_dir=samples_dir,
        sample_command=command,
        dataset=_plain(cfg.dataset),
        hparams=_plain(cfg.train),
        trainer=effective_trainer(
            _plain(cfg.trainer), cuda_devices=cuda_devices(), slurm_tasks=_slurm_tasks_per_node()
        ),
        seed=int(cfg.seed),
        logger=_plain(cfg.get("logger")),
    )
    problems = load_dataset_split(cfg.dataset, "train")
    return run_training(
        plan,
        problems=problems,
        resolve_checkpoint=models.resolve_checkpoint,
        progress=bool(cfg.get("progress", True)),
    )
