"""What every stage does: config to typed values, run folders from config, an engine for a model, W&B
logging that never fails a run, and the errors a user can cause.

Stages take a composed config (a DictConfig) and read no Hydra global state, so tests call them directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .. import runs
from ..data import DatasetError, Problem
from ..engines import Engine, LazyEngine, build_engine, choose_backend
from ..errors import UserError
from ..models import ModelError, attention_implementation, check_available, resolve_checkpoint
from ..specs import Model, plain
from ..training.regimes import RegimeError

log = logging.getLogger(__name__)

# What a user can get wrong (a config, an input file, a server) raises a UserError (compute_optimal/errors.py):
# every module's own error type derives from it, and the entry points print it as one line, no traceback.
__all__ = ["StageResult", "UserError", "plain"]


@dataclass
class StageResult:
    """What a stage returns: its summary (also what the Hydra job returns) and the line(s) it prints."""

    summary: dict[str, Any] = field(default_factory=dict)
    message: str = ""


# --- models, datasets, engines ------------------------------------------------------------------------


def model_named(cfg: DictConfig, name: str | None) -> Model:
    """The model config ``conf/model/<name>.yaml`` (students and judges are named, not composed)."""
    from ..resolvers import model_config

    if not name:
        raise ModelError("no model named here (null): set it on the command line")
    return Model.from_config(model_config(name, Path(cfg.paths.root) / "conf"))


def load_split(dataset_cfg: DictConfig, split: str) -> list[Problem]:
    """Instantiate the dataset's loader for one split (a DatasetError comes out as itself)."""
    try:
        return instantiate(dataset_cfg.loader, split=split)
    except DatasetError:
        raise
    except Exception as exc:  # instantiate wraps loader errors; unwrap ours
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, DatasetError):
            raise cause from None
        raise


def engine_settings(engine: DictConfig, model: Model, seed: int) -> dict[str, Any]:
    """The engine group resolved against ``model``, the model actually loaded (a student evaluated under
    eval.yaml is not its ``model`` entry): tensor-parallel size, max length and memory come from the
    loaded model's config, never another model's."""
    raw = OmegaConf.to_container(engine, resolve=False)
    node = OmegaConf.create({"model": model.as_dict(), "seed": seed, "engine": raw})
    settings = OmegaConf.to_container(node.engine, resolve=True)
    if model.origin == "api":  # an API-served model has one engine: the OpenAI-compatible client
        if settings["backend"] not in ("auto", "openai"):
            raise ModelError(
                f"model {model.name!r} is served by an API: use engine=openai (or auto), not {settings['backend']}"
            )
        settings["backend"] = "openai"
        return settings
    # "auto" is decided here, before any output is written: a job whose GPUs CUDA cannot use stops now.
    settings["backend"] = choose_backend(settings["backend"])
    return settings


def engine_for(model: Model, engine: DictConfig, seed: int) -> LazyEngine:
    """An engine for ``model``, checked and configured now, started on first use (a finished run starts
    none); the caller owns it: ``with engine_for(...) as engine``."""
    check_available(model)
    settings = engine_settings(engine, model, seed)

    def start() -> Engine:
        checkpoint = resolve_checkpoint(model)
        options = {k: settings.get(k) for k in ("vllm", "vllm_cpu", "hf", "openai", "vllm_server")}
        if settings["backend"] == "hf":
            # The model's own need (Gemma2's soft cap: eager) wins over the engine's speed preference, as
            # in training.
            needed = attention_implementation(model, checkpoint)
            options["hf"] = {**(options["hf"] or {}), **({"attn_implementation": needed} if needed else {})}
        return build_engine(checkpoint, settings["backend"], **options, api=model.api)

    return LazyEngine(start)


# --- run folders from config (the co.run_dir resolver calls these too) ----------------------------------


def sample_run(cfg: DictConfig) -> runs.SampleRun:
    return runs.SampleRun.of(
        cfg.paths.outputs, cfg.dataset.name, cfg.model.name, cfg.budget.name, cfg.budget.mode, cfg.seed
    )


def student_name(regime: str, pair: DictConfig) -> str:
    """The student ``regime`` trains for ``pair`` (training.regimes); a clear error where it names none."""
    from ..training.regimes import pair_student

    name = pair_student(regime, pair)
    if name is None:
        raise RegimeError(
            f"regime {regime} needs a student for the pair {pair.get('name', '')} ({pair.wc} vs {pair.se}), "
            "which names none (pair.distill_student is null). Use a pair that has one (pair=arith: the family's "
            "0.26M student; pair=gemma2 on a cluster: Gemma-7B; pair=tiny: a tiny random model) or name it: "
            "pair.distill_student=<model>"
        )
    return name


def train_run(cfg: DictConfig) -> runs.TrainRun:
    return runs.TrainRun.of(
        cfg.paths.outputs,
        cfg.dataset.name,
        cfg.regime.name,
        student_name(cfg.regime.name, cfg.pair),
        cfg.data.sampler,
        cfg.budget.name,
        cfg.budget.mode,
        cfg.seed,
        pair=cfg.pair.name,
        selection=runs.Selection.of(cfg.data),
    )


def student_train_run(cfg: DictConfig) -> runs.TrainRun:
    """The training run ``task.student`` of eval.yaml selects."""
    sel = cfg.task.student
    return runs.TrainRun.of(
        cfg.paths.outputs,
        sel.train_dataset,
        sel.regime,
        sel.model or student_name(sel.regime, cfg.pair),
        sel.sampler,
        sel.budget,
        sel.budget_mode,
        sel.seed,
        pair=cfg.pair.name,
        selection=runs.Selection.of(sel),
    )


def eval_run(cfg: DictConfig) -> runs.EvalRun:
    if cfg.task.student.regime:
        return runs.EvalRun.of_student(
            cfg.paths.outputs, cfg.dataset.name, student_train_run(cfg), cfg.seed, pair=cfg.pair.name
        )
    return runs.EvalRun.of_base(cfg.paths.outputs, cfg.dataset.name, cfg.model.name, cfg.seed)


RUN_FOLDERS = {"sample": sample_run, "train": train_run, "evaluate": eval_run}


def run_folder(stage: str, cfg: DictConfig) -> runs.RunFolder:
    """The run folder of ``stage`` for a composed config (``${co.run_dir:<stage>}`` in the YAML)."""
    if stage not in RUN_FOLDERS:
        raise ValueError(f"no run folder for stage {stage!r}; expected one of {sorted(RUN_FOLDERS)}")
    return RUN_FOLDERS[stage](cfg)


# --- W&B -------------------------------------------------------------------------------------------------


def log_to_wandb(
    cfg: DictConfig,
    *,
    name: str,
    job_type: str,
    summary: dict[str, Any],
    tables: dict[str, Any] | None = None,
    images: dict[str, str] | None = None,
) -> str | None:
    """Log a finished stage to W&B (``logger`` config); a failure is a warning, never a lost run."""
    import pandas as pd

    from ..tracking import log_run

    try:
        return log_run(
            plain(cfg.get("logger")),
            name=name,
            job_type=job_type,
            config=OmegaConf.to_container(cfg, resolve=True),
            summary=summary,
            tables={
                k: v if isinstance(v, pd.DataFrame) else pd.DataFrame(v) for k, v in (tables or {}).items()
            },
            **({"images": images} if images else {}),
        )
    except Exception as exc:  # tracking must never lose finished work
        log.warning("W&B logging failed (%s); the files are complete", exc)
        return None
