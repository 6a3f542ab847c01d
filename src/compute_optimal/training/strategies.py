"""Training strategies from ``trainer/`` configs: CPU, single GPU, DDP, DeepSpeed ZeRO-2/3.

Lightning's ``DeepSpeedStrategy`` refuses anything but CUDA. ``CPUDeepSpeedStrategy`` lifts that
for tests and laptops: DeepSpeed's CPU accelerator with the gloo backend runs the very same ZeRO
code paths (partitioned optimizer states / parameters), just slowly.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.strategies import DeepSpeedStrategy


class MeanGradientDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeed strategy with the gradient of a step equal to the mean over its micro-batches.

    Lightning divides each micro-batch's loss by ``accumulate_grad_batches`` before the backward, and
    DeepSpeed's ``engine.backward`` divides it again by ``gradient_accumulation_steps`` (its
    ``scale_wrt_gas``), which Lightning sets to the same number (Lightning issue 6170): with 4
    micro-batches the gradient was 1/4 of the mean, clipping at 1.0 clipped the true gradient at 4, and
    DeepSpeed's gradient norms read 4x low. Lightning's division is the one kept.
    """

    strategy_name = "deepspeed_mean_gradient"

    def backward(self, closure_loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return super().backward(closure_loss, optimizer, *args, scale_wrt_gas=False, **kwargs)


class CPUDeepSpeedStrategy(MeanGradientDeepSpeedStrategy):
    strategy_name = "deepspeed_cpu"

    def setup_environment(self) -> None:
        # Skip DeepSpeedStrategy's CUDA check; keep the rest of the parallel set-up.
        super(DeepSpeedStrategy, self).setup_environment()

    @property
    def root_device(self) -> torch.device:
        # DeepSpeed reads the rank from the device index (None for a bare "cpu").
        return torch.device("cpu", self.local_rank)

    def setup_distributed(self) -> None:
        import deepspeed

        self.set_world_ranks()
        self._set_node_environment_variables()
        self._process_group_backend = "gloo"
        deepspeed.init_distributed(
            "gloo", distributed_port=self.cluster_environment.main_port, timeout=self._timeout
        )


def build_strategy(name: str, options: dict[str, Any] | None = None, *, on_cpu: bool) -> Any:
    """A Lightning strategy object (or name) for a trainer config's ``strategy`` entry."""
    options = dict(options or {})
    if name in ("auto", "ddp", "ddp_spawn", "single_device"):
        return name if not options else _ddp(name, options)
    if name == "deepspeed":
        cls = CPUDeepSpeedStrategy if on_cpu else MeanGradientDeepSpeedStrategy
        if on_cpu:
            options.setdefault("process_group_backend", "gloo")
        return cls(**options)
    raise ValueError(f"unknown strategy {name!r}; expected auto, ddp, ddp_spawn or deepspeed")


def _ddp(name: str, options: dict[str, Any]) -> Any:
    from pytorch_lightning.strategies import DDPStrategy

    return DDPStrategy(start_method="spawn" if name == "ddp_spawn" else "popen", **options)
