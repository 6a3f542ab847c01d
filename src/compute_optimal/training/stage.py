"""The training stage: fine-tune one student on one data source (WC or SE samples) for a fixed length.

``plan_training`` validates the regime and finds the sampling run the data comes from (by config:
dataset, sampler, budget, seed), before any model is loaded. ``run_training`` trains with
Lightning, checkpointing every few steps so a killed run resumes, then writes the student as a
Hugging Face checkpoint (safetensors + config + tokenizer) and, last, ``train_summary.json``.
"""

from __future__ import annotations

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
from ..prompts import get_template
from .regimes import Regime

log = logging.getLogger(__name__)

SUMMARY = "train_summary.json"
CHECKPOINT = "checkpoint"
LIGHTNING = "lightning"


@dataclass
class TrainingPlan:
    run_dir: Path
    regime: Regime
    source: str
    student: Mapping[str, Any]
    samples_dir: Path
    dataset: Mapping[str, Any]
    hparams: Mapping[str, Any]
    trainer: Mapping[str, Any]
    seed: int
    logger: Mapping[str, Any] | None = None
    signature: dict[str, Any] = field(default_factory=dict)


def effective_trainer(
    trainer: Mapping[str, Any], *, cuda: bool, processes_per_node: int = 1
) -> dict[str, Any]:
    """The trainer settings this machine can run.

    GPU configs say ``accelerator: auto``: with CUDA they run as written; without it they fall back
    to the CPU in fp32 (bf16 autocast is slower than fp32 on CPUs), and ``devices: -1`` ("all GPUs")
    becomes ``processes_per_node`` (the SLURM tasks per node under SLURM, else 1). DeepSpeed then runs
    through ``CPUDeepSpeedStrategy``. The fallback is stated in ``fallback`` and in the run's summary.
    """
    tr = dict(trainer)
    if tr.get("accelerator", "auto") != "auto" or cuda:
        return tr
    tr["accelerator"] = "cpu"
    changed = []
    if "16" in str(tr.get("precision", "32-true")):
        changed.append(f"precision {tr['precision']} -> 32-true")
        tr["precision"] = "32-true"
    if tr.get("devices", 1) in (-1, "-1", "auto", None):
        changed.append(f"devices {tr.get('devices')} -> {processes_per_node}")
        tr["devices"] = processes_per_node
    tr["fallback"] = "no CUDA device: CPU" + (f" ({', '.join(changed)})" if changed else "")
    log.warning("trainer: %s", tr["fallback"])
    return tr


def plan_training(
    *,
    run_dir: str | Path,
    regime: Regime,
    source: str,
    student: Mapping[str, Any],
    samples_dir: str | Path,
    sample_command: str,
    dataset: Mapping[str, Any],
    hparams: Mapping[str, Any],
    trainer: Mapping[str, Any],
    seed: int,
    logger: Mapping[str, Any] | None = None,
) -> TrainingPlan:
    """Check the regime and that the data's sampling run is finished; raises RegimeError / RunError."""
    sampler = regime.sampler_for(source)
    samples_dir = Path(samples_dir)
    if not runs.is_finished(samples_dir):
        state = "unfinished" if samples_dir.exists() else "missing"
        raise runs.RunError(
            f"the {source.upper()} data for {regime.name} comes from {sampler.name}'s sampling run {samples_dir}, "
            f"which is {state}. Make it with: {sample_command}"
        )
    summary = runs.read_summary(samples_dir)
    if summary.get("dataset") != dataset["name"] or summary.get("model") != sampler.name:
        raise runs.RunError(
            f"{samples_dir} holds {summary.get('model')} on {summary.get('dataset')}, "
            f"expected {sampler.name} on {dataset['name']}"
        )
    for key in ("max_steps", "batch_size", "lr", "max_length"):
        if key not in hparams:
            raise ValueError(f"train.{key} is not set")
    signature = {
        "stage": "train",
        "regime": regime.name,
        "student": {k: student.get(k) for k in ("name", "source", "hf_id", "embedded", "arch")},
        "source": source,
        "sampler": sampler.name,
        "samples": {"run": str(samples_dir), "finished_at": summary.get("finished_at")},
        "hparams": dict(hparams),
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
        Path(run_dir),
        regime,
        source,
        dict(student),
        samples_dir,
        dict(dataset),
        dict(hparams),
        dict(trainer),
        seed,
        dict(logger) if logger else None,
        signature,
    )


def build_examples(
    plan: TrainingPlan, problems: list[Problem], tokenizer: Any
) -> tuple[list[dict], dict[str, Any]]:
    """Correct samples of the plan's sampling run -> tokenized SFT examples, and their statistics."""
    from .sft_data import select_examples, tokenize

    samples = pd.read_parquet(plan.samples_dir / "samples.parquet")
    prompt = plan.dataset.get("prompt") or {}
    template = get_template(
        str(prompt.get("template", plan.dataset["name"])), plan.hparams.get("num_shots", 0)
    )
    examples, stats = select_examples(
        samples,
        {p.id: p.question for p in problems},
        template.render,
        dedup=bool(plan.hparams.get("dedup", True)),
        max_per_problem=plan.hparams.get("max_per_problem"),
        seed=plan.seed,
    )
    if not examples:
        raise runs.RunError(
            f"{plan.samples_dir} has no correct samples: nothing to train {plan.student['name']} on. "
            "Sample more problems or at a higher budget."
        )
    items = tokenize(examples, tokenizer, int(plan.hparams["max_length"]))
    info = {
        "correct_samples": stats.correct_samples,
        "after_dedup": stats.after_dedup,
        "num_examples": len(items),
        "num_problems": stats.problems,
        "dedup": bool(plan.hparams.get("dedup", True)),
        "max_per_problem": plan.hparams.get("max_per_problem"),
        "example_tokens": sum(len(x["input_ids"]) for x in items),
        "solution_tokens": sum(sum(1 for t in x["labels"] if t != -100) for x in items),
    }
    return items, info


class _LossHistory:
    """A Lightning callback that keeps (step, loss) pairs for the summary and the report's loss curves."""

    def __new__(cls):
        import pytorch_lightning as pl

        class LossHistory(pl.Callback):
            def __init__(self) -> None:
                self.start_step = 0
                self.history: list[tuple[int, float]] = []
                self.real_share: list[float] = []
                self.trained_tokens = 0

            def on_train_start(self, trainer, pl_module) -> None:
                self.start_step = trainer.global_step  # > 0 when resumed from a checkpoint

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                self.history.append((trainer.global_step, float(loss.detach())))
                mask = batch["attention_mask"]
                self.real_share.append(float(mask.sum() / mask.numel()))
                self.trained_tokens += int((batch["labels"][:, 1:] != -100).sum())

            # Kept in Lightning's checkpoint, so a resumed run reports the whole curve.
            def state_dict(self) -> dict:
                return {
                    "history": self.history,
                    "real_share": self.real_share,
                    "trained_tokens": self.trained_tokens,
                }

            def load_state_dict(self, state: dict) -> None:
                self.history = [tuple(x) for x in state["history"]]
                self.real_share = list(state["real_share"])
                self.trained_tokens = int(state["trained_tokens"])

        return LossHistory()


def run_training(
    plan: TrainingPlan,
    *,
    problems: list[Problem],
    resolve_checkpoint: Callable[[Mapping[str, Any]], str],
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume, or skip when finished); returns the run's train_summary."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from transformers import AutoTokenizer

    from .module import SFTDataModule, SFTModule
    from .strategies import build_strategy

    if (plan.run_dir / SUMMARY).is_file():
        log.info("skipping %s: already finished", plan.run_dir)
        return runs.read_json(plan.run_dir / SUMMARY)
    runs.claim_run_dir(plan.run_dir, plan.signature)
    started = time.time()
    checkpoint = resolve_checkpoint(plan.student)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    items, data_info = build_examples(plan, problems, tokenizer)
    hp, tr = plan.hparams, plan.trainer
    pl.seed_everything(plan.seed, workers=True, verbose=False)
    module = SFTModule(
        checkpoint,
        lr=float(hp["lr"]),
        weight_decay=float(hp.get("weight_decay", 0.0)),
        warmup_steps=int(hp.get("warmup_steps", 0)),
        max_steps=int(hp["max_steps"]),
        schedule=str(hp.get("schedule", "cosine")),
        dtype=str(hp.get("dtype", "float32")),
        freeze_embeddings=bool(hp.get("freeze_embeddings", False)),
        gradient_checkpointing=bool(hp.get("gradient_checkpointing", False)),
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data = SFTDataModule(items, batch_size=int(hp["batch_size"]), pad_id=pad_id, seed=plan.seed)
    ckpt_dir = plan.run_dir / LIGHTNING
    history = _LossHistory()
    callbacks = [
        history,
        ModelCheckpoint(
            dirpath=ckpt_dir,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=int(tr.get("checkpoint_every_n_steps", 5)),
        ),
    ]
    on_cpu = tr.get("accelerator", "auto") == "cpu" or not _cuda()  # see effective_trainer
    trainer = pl.Trainer(
        accelerator=tr.get("accelerator", "auto"),
        devices=tr.get("devices", "auto"),
        num_nodes=int(tr.get("num_nodes", 1)),
        strategy=build_strategy(str(tr.get("strategy", "auto")), tr.get("strategy_options"), on_cpu=on_cpu),
        precision=tr.get("precision", "32-true"),
        max_steps=int(hp["max_steps"]),
        accumulate_grad_batches=int(tr.get("accumulate_grad_batches", 1)),
        gradient_clip_val=tr.get("gradient_clip_val"),
        log_every_n_steps=1,
        enable_progress_bar=progress,
        enable_model_summary=False,
        logger=_loggers(plan),
        callbacks=callbacks,
        default_root_dir=str(plan.run_dir),
        deterministic=False,
        use_distributed_sampler=False,  # LengthBucketBatches shards batches over ranks itself
    )
    last = ckpt_dir / "last.ckpt"
    if last.exists():
        log.info("resuming %s from %s", plan.run_dir, last)
    # Our own Lightning checkpoints (trusted: written by this run) hold the optimizer state too.
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.exists() else None)
    state_dict = gathered_state_dict(trainer)  # a collective under ZeRO-3: every rank takes part
    summary: dict[str, Any] = {}
    if trainer.is_global_zero:
        export_checkpoint(module, tokenizer, plan.run_dir / CHECKPOINT, state_dict)
        losses = history.history
        summary = {
            "regime": plan.regime.name,
            "student": plan.student["name"],
            "data_source": plan.source,
            "data_relation": plan.regime.relation(plan.source),
            "sampler": plan.regime.sampler_for(plan.source).name,
            "dataset": plan.dataset["name"],
            "samples_run": str(plan.samples_dir),
            **data_info,
            "steps": int(trainer.global_step),
            "max_steps": int(hp["max_steps"]),
            "training_length": f"{int(hp['max_steps'])} optimizer steps (fixed, equal for WC and SE data)",
            "batch_size": int(hp["batch_size"]) * int(tr.get("accumulate_grad_batches", 1)),
            "trained_tokens": history.trained_tokens,
            "real_token_share": sum(history.real_share) / len(history.real_share)
            if history.real_share
            else None,
            "final_loss": losses[-1][1] if losses else None,
            "loss_curve": [[s, round(v, 5)] for s, v in losses],
            "resumed_from_step": history.start_step,
            "wall_time_s": round(time.time() - started, 2),
            "checkpoint": str(plan.run_dir / CHECKPOINT),
            "seed": plan.seed,
            "trainer": {
                k: tr.get(k)
                for k in ("accelerator", "strategy", "strategy_options", "precision", "devices", "num_nodes")
            }
            | {"world_size": int(trainer.world_size), "fallback": tr.get("fallback")},
        }
        runs.atomic_write_json(plan.run_dir / SUMMARY, summary)  # completion marker: last
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # the HF checkpoint supersedes the resume state
    return summary


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _loggers(plan: TrainingPlan) -> list[Any]:
    from pytorch_lightning.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(str(plan.run_dir), name="logs")]
    settings = plan.logger or {}
    if settings.get("enabled", False):
        from pytorch_lightning.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        Path(settings.get("dir") or plan.run_dir).mkdir(parents=True, exist_ok=True)
        loggers.append(
            WandbLogger(
                project=settings.get("project", "compute-optimal"),
                entity=settings.get("entity"),
                group=settings.get("group"),
                mode=settings.get("mode", "offline"),
                save_dir=str(settings.get("dir")),
                name=f"train-{plan.dataset['name']}-{plan.regime.name}-{plan.student['name']}-{plan.source}",
                job_type="train",
            )
        )
    return loggers


def gathered_state_dict(trainer: Any) -> dict[str, Any] | None:
    """Full weights under ZeRO-3 (partitioned over ranks), None where the module holds them already."""
    strategy = trainer.strategy
    engine = getattr(strategy, "deepspeed_engine", None)
    if engine is not None and getattr(strategy, "zero_stage_3", False):
        return engine._zero3_consolidated_16bit_state_dict()
    return None


def export_checkpoint(
    module: Any, tokenizer: Any, target: Path, state_dict: dict[str, Any] | None = None
) -> None:
    """Save the trained student as a Hugging Face checkpoint, atomically (tmp folder, then rename)."""
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    module.model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
