"""Lightning pieces: causal-LM SFT on any Hugging Face model, and its data module."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch

from .sft_data import LengthBucketBatches, SFTDataset, collate


def lr_lambda(
    step: int, *, warmup_steps: int, max_steps: int, schedule: str, min_ratio: float = 0.1
) -> float:
    """Linear warm-up, then cosine or linear decay to ``min_ratio`` of the peak at ``max_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - (1 - min_ratio) * progress
    raise ValueError(f"unknown lr schedule {schedule!r}; expected cosine, linear or constant")


class SFTModule(pl.LightningModule):
    """Loss = next-token cross-entropy on solution tokens (prompt and padding labels are -100)."""

    def __init__(
        self,
        checkpoint: str,
        *,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        max_steps: int = 100,
        schedule: str = "cosine",
        dtype: str = "float32",
        freeze_embeddings: bool = False,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
        cpu_optimizer: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model: torch.nn.Module | None = None

    def configure_model(self) -> None:
        # Called by Lightning inside the strategy's context (ZeRO-3 can shard the weights as they load).
        if self.model is not None:
            return
        from transformers import AutoModelForCausalLM

        hp = self.hparams
        strategy = self._trainer.strategy if self._trainer is not None else None
        if getattr(strategy, "zero_stage_3", False):
            # Tell transformers that ZeRO-3 is on, so from_pretrained loads into partitioned parameters.
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_deepspeed_config = HfDeepSpeedConfig(strategy.config)  # must stay alive (weak ref)
        self.model = AutoModelForCausalLM.from_pretrained(
            hp.checkpoint, dtype=getattr(torch, hp.dtype), attn_implementation=hp.attn_implementation
        )
        if hp.freeze_embeddings:
            # Big-vocabulary models (Gemma: 262k x d) spend most of a step on the embedding's gradient.
            self.model.get_input_embeddings().weight.requires_grad_(False)
        if hp.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.config.use_cache = False
        self.model.train()  # from_pretrained returns eval mode (dropout off)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        real = batch["attention_mask"].sum()
        trained = (batch["labels"][:, 1:] != -100).sum()
        self.log("train/loss", out.loss, prog_bar=True, on_step=True, batch_size=batch["input_ids"].shape[0])
        self.log(
            "train/real_token_share",
            real / batch["attention_mask"].numel(),
            on_step=True,
            prog_bar=False,
            batch_size=batch["input_ids"].shape[0],
        )
        self.log(
            "train/trained_tokens",
            trained.float(),
            on_step=True,
            reduce_fx="sum",
            batch_size=batch["input_ids"].shape[0],
        )
        return out.loss

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        adam = dict(lr=hp.lr, weight_decay=hp.weight_decay, betas=(0.9, 0.95))
        if hp.cpu_optimizer:  # ZeRO-Offload: optimizer states live in CPU memory, stepped there
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(params, adamw_mode=True, **adam)
        else:
            optimizer = torch.optim.AdamW(params, **adam)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            partial(lr_lambda, warmup_steps=hp.warmup_steps, max_steps=hp.max_steps, schedule=hp.schedule),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class SFTDataModule(pl.LightningDataModule):
    def __init__(
        self, items: Sequence[dict[str, list[int]]], *, batch_size: int, pad_id: int, seed: int = 0
    ) -> None:
        super().__init__()
        self.items = list(items)
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.seed = seed

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = LengthBucketBatches(
            [len(x["input_ids"]) for x in self.items], self.batch_size, self.seed, rank=rank, world_size=world
        )
        if self.trainer is not None and self.trainer.global_step:
            # Resumed: Lightning cannot fast-forward this sampler, so it skips the batches already trained.
            sampler.resume_after(self.trainer.global_step * self.trainer.accumulate_grad_batches)
        return torch.utils.data.DataLoader(
            SFTDataset(self.items), batch_sampler=sampler, collate_fn=partial(collate, pad_id=self.pad_id)
        )
