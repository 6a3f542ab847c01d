"""The training stage: fine-tune one student on one data source (WC or SE samples) for a fixed length.

``plan_training`` validates the regime and finds the sampling run the data comes from (by config:
dataset, sampler, budget, seed), before any model is loaded. ``run_training`` trains with
Lightning, saving resume state every few steps so a killed run resumes, then exports the student as a
Hugging Face checkpoint (safetensors + config + tokenizer, ``model/``) and, last, ``train_summary.json``
(the folder's layout: ``runs.TrainRun``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import runs
from ..data import Problem
from ..devices import DeviceError
from ..errors import UserError
from ..process_check import EXACT_FORMATS
from ..prompts import get_template
from ..runs import SampleRun, TrainRun
from ..specs import Dataset, Model, TrainSettings
from .regimes import REFERENCE, Regime

log = logging.getLogger(__name__)

WRAPPED = "model"  # SFTModule's attribute that holds the Hugging Face model


class TrainingError(UserError, ValueError):
    """Trainer settings that would train wrong: refused before any model is loaded."""


@dataclass
class TrainingPlan:
    run: TrainRun
    regime: Regime
    sampler: str  # wc | se | reference: whose solutions the student learns from
    samples: SampleRun | None  # None: the reference solutions of ``problems``
    dataset: Dataset
    hparams: TrainSettings
    trainer: dict[str, Any]
    seed: int
    logger: dict[str, Any] | None = None
    signature: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # reference data: the problems it solves
    selection: runs.Selection = field(default_factory=runs.Selection)  # which samples it learns from

    @property
    def student(self) -> Model:
        return self.regime.student


def effective_trainer(
    trainer: Mapping[str, Any], *, cuda_devices: int, slurm_tasks: int | None = None
) -> dict[str, Any]:
    """The trainer settings this machine can run.

    Multi-process configs say ``devices: -1``: under SLURM that is the job's tasks per node (the
    request follows the trainer, see ``compute_optimal.resolvers``), elsewhere all GPUs, or 1 process on
    a CPU. GPU configs say ``accelerator: auto``: with CUDA they run as written; without it they fall
    back to the CPU in fp32 (bf16 autocast is slower than fp32 on CPUs), DeepSpeed then through
    ``CPUDeepSpeedStrategy``. The fallback is stated in ``fallback`` and in the run's summary. (A job
    that SLURM gave GPUs never gets here without CUDA: ``devices.cuda_devices`` stops it first.)
    """
    tr = dict(trainer)
    multi_process = tr.get("devices", 1) in (-1, "-1", "auto", None)
    changed = []
    if multi_process and slurm_tasks:
        if cuda_devices and slurm_tasks > cuda_devices:
            raise DeviceError(
                f"this SLURM job runs {slurm_tasks} tasks per node but each task sees {cuda_devices} GPU(s): "
                "the site binds GPUs to tasks (gpus-per-task / --gpu-bind), and Lightning needs every task "
                "of a node to see all of the node's GPUs. Remove that binding from the site config."
            )
        tr["devices"] = slurm_tasks
    elif tr.get("devices", 1) in (1, "1") and (slurm_tasks or 1) > 1:
        raise TrainingError(
            f"trainer {tr.get('strategy', 'auto')!r} with devices={tr.get('devices')} trains in one process, but "
            f"this SLURM job runs {slurm_tasks} tasks per node: each would train its own copy into the same run "
            "folder. Use a multi-process trainer (ddp, deepspeed_*) or one task per node."
        )
    if tr.get("accelerator", "auto") != "auto" or cuda_devices:
        return tr
    tr["accelerator"] = "cpu"
    if "16" in str(tr.get("precision", "32-true")):
        changed.append(f"precision {tr['precision']} -> 32-true")
        tr["precision"] = "32-true"
    if tr.get("devices", 1) in (-1, "-1", "auto", None):
        changed.append(f"devices {tr.get('devices')} -> 1")
        tr["devices"] = 1
    tr["fallback"] = "no CUDA device: CPU" + (f" ({', '.join(changed)})" if changed else "")
    log.warning("trainer: %s", tr["fallback"])
    return tr


def plan_training(
    *,
    run: TrainRun,
    regime: Regime,
    sampler: str,
    samples: SampleRun | None,
    dataset: Dataset,
    hparams: TrainSettings,
    trainer: Mapping[str, Any],
    seed: int,
    logger: Mapping[str, Any] | None = None,
    problems: list[Problem] | None = None,
    selection: runs.Selection | None = None,
) -> TrainingPlan:
    """Check the regime and that the data's sampling run is finished; raises RegimeError / RunError.

    ``sampler`` "reference": the student learns the dataset's reference solutions of ``problems`` (one
    each; ``samples`` is None), the problems a sampling run of the same config samples. ``selection``: which
    of the samples (default: every answer-correct one; ``data.keep=process`` needs a dataset the exact process
    check reads)."""
    selection = selection or runs.Selection()
    if selection.keep == "process" and dataset.answer_format not in EXACT_FORMATS:
        raise runs.RunError(
            f"data.keep=process keeps the samples that the exact process check passes, which reads "
            f"{', '.join(sorted(EXACT_FORMATS))} solutions; dataset {dataset.name} has answer format "
            f"{dataset.answer_format!r}. Use data.keep=answer."
        )
    sampler_model = regime.sampler_model(sampler)
    if sampler_model is None:
        if not problems or any(not p.solution for p in problems):
            raise runs.RunError(f"reference data for {regime.name}: the problems have no reference solutions")
        digest = hashlib.sha256(json.dumps([(p.id, p.solution) for p in problems]).encode()).hexdigest()[:16]
        data_source: dict[str, Any] = {"reference": dataset.name, "problems": len(problems), "sha256": digest}
    else:
        if samples is None or not samples.is_finished():
            where = samples.path if samples is not None else "(none)"
            state = samples.state() if samples is not None else "missing"
            raise runs.RunError(
                f"the {sampler.upper()} data for {regime.name} comes from {sampler_model.name}'s sampling run "
                f"{where}, which is {state}."
                + (f" Make it with: {samples.command}" if samples is not None else "")
            )
        summary = samples.read_summary()
        if summary.get("dataset") != dataset.name or summary.get("model") != sampler_model.name:
            raise runs.RunError(
                f"{samples.path} holds {summary.get('model')} on {summary.get('dataset')}, "
                f"expected {sampler_model.name} on {dataset.name}"
            )
        data_source = {"run": str(samples.path), "finished_at": summary.get("finished_at")}
    weights_dtype(hparams, trainer)  # refuses settings that would lose the updates
    signature = {
        "stage": "train",
        "regime": regime.name,
        "student": {k: v for k, v in regime.student.identity().items() if k != "params"},
        "sampler": sampler,
        "sampler_model": sampler_model.name if sampler_model else REFERENCE,
        "samples": data_source,
        "selection": {"keep": selection.keep, "max_per_problem": selection.max_per_problem},
        "hparams": hparams.as_dict(),
        "trainer": {
            k: trainer.get(k)
            for k in (
                "strategy",
                "strategy_options",
                "precision",
                "accumulate_grad_batches",
                "devices",
                "num_nodes",
            )
        },
        "seed": seed,
    }
    return TrainingPlan(
        run,
        regime,
        sampler,
        samples,
        dataset,
        hparams,
        dict(trainer),
        seed,
        dict(logger) if logger else None,
        signature,
        list(problems or []) if sampler_model is None else [],
        selection,
    )


def build_examples(
    plan: TrainingPlan, problems: list[Problem], tokenizer: Any
) -> tuple[list[dict], dict[str, Any]]:
    """Correct samples of the plan's sampling run (or the reference solutions of its problems) ->
    tokenized SFT examples, and their statistics."""
    from .sft_data import keep_process_correct, select_examples, tokenize

    hp = plan.hparams
    if plan.samples is None:
        samples = pd.DataFrame(
            {
                "problem_id": [p.id for p in plan.problems],
                "sample_index": 0,
                "completion": [p.solution for p in plan.problems],
                "correct": True,
            }
        )
    else:
        samples = pd.read_parquet(plan.samples.samples_path)
    answer_correct = int(samples["correct"].astype(bool).sum())
    if plan.selection.keep == "process":
        samples = keep_process_correct(samples, problems)
    template = get_template(plan.dataset.prompt.template, hp.num_shots)
    examples, stats = select_examples(
        samples,
        {p.id: p.question for p in problems},
        template.render,
        dedup=hp.dedup,
        max_per_problem=plan.selection.max_per_problem,
        seed=plan.seed,
    )
    if not examples:
        raise runs.RunError(
            f"{plan.samples.path if plan.samples else 'the reference data'} has no correct samples: nothing to train {plan.student.name} on. "
            "Sample more problems or at a higher budget."
        )
    items = tokenize(examples, tokenizer, hp.max_length)
    info = {
        "answer_correct_samples": answer_correct,
        "keep": plan.selection.keep,
        "correct_samples": stats.correct_samples,  # those kept: process-correct ones with data.keep=process
        "after_dedup": stats.after_dedup,
        "num_examples": len(items),
        "num_problems": stats.problems,
        "dedup": hp.dedup,
        "max_per_problem": plan.selection.max_per_problem,
        "example_tokens": sum(len(x["input_ids"]) for x in items),
        "solution_tokens": sum(sum(1 for t in x["labels"] if t != -100) for x in items),
    }
    return items, info


def weights_dtype(hparams: TrainSettings, trainer: Mapping[str, Any]) -> str:
    """The dtype the student's weights are trained in.

    Adam's updates at fine-tuning learning rates (1e-6) are far below bf16's resolution near a weight's
    value, so bf16 weights updated by a plain optimizer barely move (measured on a tiny model at lr 1e-6:
    1.9% of the weights changed after 3 or 25 AdamW steps in bf16, 100% in fp32). The weights stay fp32 (master weights) wherever the optimizer is plain torch: with mixed
    precision the forward pass still runs in bf16 under autocast. DeepSpeed keeps fp32 master copies in its
    own optimizer, so there the weights load in ``train.dtype``. ``train.dtype`` also sets the dtype of
    the exported checkpoint.
    """
    precision = str(trainer.get("precision", "32-true"))
    if trainer.get("strategy") == "deepspeed" and precision != "32-true":
        return hparams.dtype
    if precision.endswith("-true") and precision != "32-true":
        raise TrainingError(
            f"trainer.precision={precision} keeps the weights in 16 bits and updates them with torch AdamW, "
            "which loses fine-tuning updates; use precision bf16-mixed (fp32 master weights) or a deepspeed "
            "trainer"
        )
    return "float32"


def build_module(plan: TrainingPlan, checkpoint: str) -> Any:
    """The LightningModule for the plan's student: weights dtype, attention and optimizer as the
    trainer needs them (see :func:`weights_dtype`, ``models.attention_implementation``)."""
    from ..models import attention_implementation
    from .module import SFTModule

    hp, tr = plan.hparams, plan.trainer
    options = tr.get("strategy_options") or {}
    return SFTModule(
        checkpoint,
        lr=hp.lr,
        weight_decay=hp.weight_decay,
        warmup_steps=hp.warmup_steps,
        max_steps=hp.max_steps,
        schedule=hp.schedule,
        dtype=weights_dtype(hp, tr),
        freeze_embeddings=hp.freeze_embeddings,
        gradient_checkpointing=hp.gradient_checkpointing,
        attn_implementation=attention_implementation(plan.student, checkpoint),
        # ZeRO-Offload steps the optimizer on the CPU: DeepSpeed's vectorised CPU Adam, not torch's.
        cpu_optimizer=tr.get("strategy") == "deepspeed" and bool(options.get("offload_optimizer")),
    )


def build_trainer(plan: TrainingPlan, callbacks: list[Any], progress: bool) -> Any:
    """A Lightning Trainer from the plan's (effective) trainer settings."""
    import pytorch_lightning as pl

    from .strategies import build_strategy

    hp, tr = plan.hparams, plan.trainer
    on_cpu = tr.get("accelerator", "auto") == "cpu"  # effective_trainer's fallback, or trainer=cpu
    return pl.Trainer(
        accelerator=tr.get("accelerator", "auto"),
        devices=tr.get("devices", "auto"),
        num_nodes=int(tr.get("num_nodes", 1)),
        strategy=build_strategy(str(tr.get("strategy", "auto")), tr.get("strategy_options"), on_cpu=on_cpu),
        precision=tr.get("precision", "32-true"),
        max_steps=hp.max_steps,
        accumulate_grad_batches=int(tr.get("accumulate_grad_batches", 1)),
        gradient_clip_val=tr.get("gradient_clip_val"),
        log_every_n_steps=1,
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=False,  # ResumeStates writes the resume state
        logger=_loggers(plan),
        callbacks=callbacks,
        default_root_dir=str(plan.run.path),
        deterministic=False,
        use_distributed_sampler=False,  # LengthBucketBatches shards batches over ranks itself
    )


def run_training(
    plan: TrainingPlan,
    *,
    problems: list[Problem],
    resolve_checkpoint: Callable[[Model], str],
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) and export the student; returns the run's train_summary (``{}`` on ranks > 0)."""
    import pytorch_lightning as pl
    from transformers import AutoTokenizer

    from .callbacks import LossHistory, ResumeStates, latest_resume_state
    from .module import SFTDataModule

    run = plan.run
    run.claim(plan.signature)
    started = time.time()
    if plan.trainer.get("threads"):  # torch threads of a CPU process (null: torch's default, one per core)
        import torch

        torch.set_num_threads(int(plan.trainer["threads"]))
    checkpoint = resolve_checkpoint(plan.student)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    items, data_info = build_examples(plan, problems, tokenizer)
    pl.seed_everything(plan.seed, workers=True, verbose=False)
    module = build_module(plan, checkpoint)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data = SFTDataModule(items, batch_size=plan.hparams.batch_size, pad_id=pad_id, seed=plan.seed)
    history = LossHistory()
    every = int(plan.trainer.get("checkpoint_every_n_steps", 5))
    trainer = build_trainer(plan, [history, ResumeStates(run.resume_dir, every)], progress)
    resume = latest_resume_state(run.resume_dir)
    if resume is not None:
        log.info("resuming %s from %s", run.path, resume)
    try:
        # Our own resume states (trusted: written by this run) hold the optimizer state too.
        trainer.fit(module, datamodule=data, ckpt_path=str(resume) if resume else None)
        state_dict = gathered_state_dict(trainer)  # a collective under ZeRO-3: every rank takes part
    finally:
        release_process_group()
    if not trainer.is_global_zero:
        return {}
    export_model(module, tokenizer, run.model_dir, state_dict, dtype=plan.hparams.dtype)
    # finished_at: an evaluation of this student records it, so a retrained student is not taken for this one
    summary = {**_summary(plan, trainer, module, history, data_info, started),
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    run.write_summary(summary)  # completion marker: last
    shutil.rmtree(run.resume_dir, ignore_errors=True)  # the exported model supersedes the resume state
    return summary


def release_process_group() -> None:
    """Destroy torch.distributed's process group once the last collective is done, on every rank.

    Lightning destroys it at exit only for NCCL, DeepSpeed never; a gloo group (the CPU) left to the
    interpreter's teardown can abort its process ("terminate called without an active exception",
    SIGABRT) after the run has finished, and SLURM then records the job as FAILED (seen once in CI:
    rank 1 of a ZeRO-3 job, whose rank 0 had written the result).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _summary(
    plan: TrainingPlan, trainer: Any, module: Any, history: Any, data_info: dict, started: float
) -> dict[str, Any]:
    hp, tr = plan.hparams, plan.trainer
    losses = history.history
    return {
        "regime": plan.regime.name,
        "student": plan.student.name,
        "sampler": plan.sampler,
        "data_relation": plan.regime.relation(plan.sampler),
        "sampler_model": plan.signature["sampler_model"],
        "dataset": plan.dataset.name,
        "samples_run": str(plan.samples.path) if plan.samples else None,
        **data_info,
        "steps": int(trainer.global_step),
        "max_steps": hp.max_steps,
        "training_length": f"{hp.max_steps} optimizer steps (fixed, equal for WC and SE data)",
        # Examples per optimizer step over every rank; micro_batch_size: per rank and forward pass.
        "batch_size": hp.batch_size * int(tr.get("accumulate_grad_batches", 1)) * int(trainer.world_size),
        "micro_batch_size": hp.batch_size,
        "trained_tokens": history.trained_tokens,
        "real_token_share": sum(history.real_share) / len(history.real_share) if history.real_share else None,
        "final_loss": losses[-1][1] if losses else None,
        "loss_curve": [[s, round(v, 5)] for s, v in losses],
        "grad_norm_curve": [[s, None if v is None else round(v, 5)] for s, v in history.grad_norms],
        "resumed_from_step": history.start_step,
        "wall_time_s": round(time.time() - started, 2),
        "peak_gpu_memory_gib": _peak_gpu_memory_gib(),
        "model_dir": str(plan.run.model_dir),
        "seed": plan.seed,
        "trainer": {
            k: tr.get(k)
            for k in ("accelerator", "strategy", "strategy_options", "precision", "devices", "num_nodes")
        }
        | {"world_size": int(trainer.world_size), "fallback": tr.get("fallback")},
        "model": {
            "weights_dtype": module.hparams.dtype,
            "export_dtype": hp.dtype,
            "attn_implementation": module.hparams.attn_implementation,
            "optimizer": _optimizer_name(trainer),
        },
    }


def _loggers(plan: TrainingPlan) -> list[Any]:
    from pytorch_lightning.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(str(plan.run.path), name="logs")]
    settings = plan.logger or {}
    if settings.get("enabled", False):
        from pytorch_lightning.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        Path(settings.get("dir") or plan.run.path).mkdir(parents=True, exist_ok=True)
        loggers.append(
            WandbLogger(
                project=settings.get("project", "compute-optimal"),
                entity=settings.get("entity"),
                group=settings.get("group"),
                mode=settings.get("mode", "offline"),
                save_dir=str(settings.get("dir")),
                name=f"train-{plan.dataset.name}-{plan.regime.name}-{plan.student.name}-{plan.sampler}",
                job_type="train",
            )
        )
    return loggers


def _peak_gpu_memory_gib() -> float | None:
    """Peak memory this process allocated on its GPU (None on the CPU)."""
    import torch

    if not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _optimizer_name(trainer: Any) -> str | None:
    """The optimizer that updates the weights (DeepSpeed wraps it in its ZeRO optimizer)."""
    if not trainer.optimizers:
        return None
    optimizer = trainer.optimizers[0]
    return type(getattr(optimizer, "optimizer", optimizer)).__name__


def gathered_state_dict(trainer: Any) -> dict[str, Any] | None:
    """The student's full weights under ZeRO-3 (partitioned over ranks; a collective), keyed as the
    Hugging Face model names them; None where the module holds its weights already.

    DeepSpeed wraps the whole LightningModule, so its keys carry the module's attribute prefix
    (``model.model.layers.0...``); vLLM refuses those, so the prefix goes and every key is checked
    against the student's own parameter names.
    """
    strategy = trainer.strategy
    engine = getattr(strategy, "deepspeed_engine", None)
    if engine is None or not getattr(strategy, "zero_stage_3", False):
        return None
    full = engine._zero3_consolidated_16bit_state_dict()
    if full is None:  # ranks other than 0
        return None
    prefix = f"{WRAPPED}."
    state = {k.removeprefix(prefix): v for k, v in full.items()}
    model = getattr(trainer.lightning_module, WRAPPED)
    names, params = set(model.state_dict()), {n for n, _ in model.named_parameters()}  # tied: once
    if not params <= set(state) <= names:
        raise RuntimeError(
            "the gathered ZeRO-3 state dict does not match the student's parameter names: "
            f"unexpected {sorted(set(state) - names)[:5]}, missing {sorted(params - set(state))[:5]}"
        )
    return state


def _cast(state: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """Floating tensors cast to ``dtype`` once per storage: tied weights (Gemma's embeddings = LM head) stay
    one shared tensor, which save_pretrained writes once; two copies would add an ``lm_head.weight`` that
    vLLM's Gemma2 (which has no lm_head module) refuses."""
    cast: dict[tuple[int, tuple[int, ...]], Any] = {}
    out = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            out[name] = tensor
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key not in cast:
            cast[key] = tensor.to(dtype)
        out[name] = cast[key]
    return out


def export_model(
    module: Any,
    tokenizer: Any,
    target: Path,
    state_dict: dict[str, Any] | None = None,
    dtype: str | None = None,
) -> None:
    """Export the trained student as a Hugging Face checkpoint in ``dtype`` (default: as trained),
    atomically (tmp folder, then rename)."""
    import torch

    model = getattr(module, WRAPPED)
    state = state_dict if state_dict is not None else model.state_dict()
    if dtype:
        state = _cast(state, getattr(torch, dtype))
        model.config.dtype = getattr(torch, dtype)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
