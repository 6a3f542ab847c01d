"""Lightning callbacks of the training stage: the loss history, and resume state that survives a kill."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytorch_lightning as pl
import torch

from .. import runs

# The resume state lives in <run>/resume/ (runs.TrainRun.resume_dir): step-<N>.ckpt (a file, or a folder under DeepSpeed) and
# this pointer, which names the newest checkpoint that was written completely.
POINTER = "complete"


class LossHistory(pl.Callback):
    """One point per optimizer step for the summary and the report's loss curves: the mean loss over the
    step's micro-batches and ranks (the gradient is the mean of theirs) and the gradient norm before
    clipping; real-token share and trained tokens counted over every rank. Its state is saved in the
    checkpoint, so a resumed run reports the whole curve."""

    def __init__(self) -> None:
        self.start_step = 0
        self.history: list[tuple[int, float]] = []
        self.grad_norms: list[tuple[int, float | None]] = []
        self.real_share: list[float] = []
        self.trained_tokens = 0
        self._step = 0
        self._grad_norm: float | None = None
        # This rank's sums over the current step's micro-batches: loss, micro-batches, real, all, trained tokens.
        self._pending = torch.zeros(5, dtype=torch.float64)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = self._step = trainer.global_step  # > 0 when resumed from a checkpoint

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # Plain and DDP strategies: the (all-reduced) gradients, before Lightning clips them. Under
        # DeepSpeed they live in ZeRO's partitions; the engine reports its own norm after the step.
        grads = [p.grad.detach().double() for p in pl_module.parameters() if p.grad is not None]
        self._grad_norm = (
            float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else None
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # Lightning hands over the loss divided by accumulate_grad_batches (its share of the step's mean).
        mask, labels = batch["attention_mask"], batch["labels"]
        self._pending += torch.tensor(
            [
                float(loss.detach()) * trainer.accumulate_grad_batches,
                1,
                float(mask.sum()),
                mask.numel(),
                float((labels[:, 1:] != -100).sum()),
            ],
            dtype=torch.float64,
        )
        if trainer.global_step == self._step:
            return  # the step is still accumulating
        self._step = trainer.global_step
        # A collective: every rank ends its step here.
        loss_sum, micro, real, total, trained = trainer.strategy.reduce(
            self._pending.to(trainer.strategy.root_device), reduce_op="sum"
        ).tolist()
        self._pending.zero_()
        self.history.append((self._step, loss_sum / micro))
        self.grad_norms.append((self._step, self._engine_grad_norm(trainer)))
        self.real_share.append(real / total)
        self.trained_tokens += int(trained)

    def _engine_grad_norm(self, trainer: pl.Trainer) -> float | None:
        engine_norm = getattr(trainer.model, "get_global_grad_norm", None)  # a DeepSpeed engine
        norm = engine_norm() if engine_norm is not None else self._grad_norm
        return None if norm is None else float(norm)

    def state_dict(self) -> dict:
        return {
            "history": self.history,
            "grad_norms": self.grad_norms,
            "real_share": self.real_share,
            "trained_tokens": self.trained_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        self.history = [tuple(x) for x in state["history"]]
        self.grad_norms = [tuple(x) for x in state.get("grad_norms", [])]
        self.real_share = list(state["real_share"])
        self.trained_tokens = int(state["trained_tokens"])


class ResumeStates(pl.Callback):
    """Resume state every ``every_n_steps`` optimizer steps, written beside the previous one.

    DeepSpeed writes its checkpoint (a folder of per-rank files, ~380 GB for a 27B student) in place; a
    kill during the write would leave neither the old nor the new state. Here each checkpoint gets its own
    name; once every rank has written its part, rank 0 points ``complete`` at it (an atomic rename) and
    only then deletes the older ones. A kill at any moment leaves the pointer on a whole checkpoint; the
    price is room for two checkpoints during each switch.
    """

    def __init__(self, folder: Path, every_n_steps: int) -> None:
        self.folder = Path(folder)
        self.every = max(1, int(every_n_steps))
        self._saved_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # Several batches share a step under gradient accumulation: save once per step. The last step
        # needs no resume state (the export follows; a 27B ZeRO-3 state is ~380 GB).
        if step == 0 or step % self.every or step == self._saved_step or step >= trainer.max_steps:
            return
        self._saved_step = step
        path = self.folder / f"step-{step:08d}.ckpt"
        # A collective under DeepSpeed (every rank writes its shards), ending in a barrier: once it returns,
        # the checkpoint is whole on every rank.
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            runs.atomic_write_text(self.folder / POINTER, path.name)
            for old in self.folder.glob("step-*.ckpt"):
                if old.name != path.name:
                    shutil.rmtree(old) if old.is_dir() else old.unlink()


def latest_resume_state(folder: Path) -> Path | None:
    """The newest complete resume state under ``folder`` (None: start from the beginning)."""
    pointer = Path(folder) / POINTER
    if not pointer.is_file():
        return None
    path = Path(folder) / pointer.read_text().strip()
    return path if path.exists() else None
