"""Generation back ends behind one interface (:class:`Engine`); the sampling stage does not know which it drives."""

from __future__ import annotations

import logging
from typing import Any

from .base import Borrowed, Completion, Engine, Generation, Request, SamplingSettings

log = logging.getLogger(__name__)

__all__ = ["Borrowed", "Completion", "Engine", "Generation", "Request", "SamplingSettings", "build_engine"]


def _vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def build_engine(
    checkpoint: str,
    backend: str = "auto",
    *,
    vllm: dict[str, Any] | None = None,
    vllm_cpu: dict[str, Any] | None = None,
    hf: dict[str, Any] | None = None,
) -> Engine:
    """Start the engine named by ``backend`` ("vllm", "hf" or "auto") on ``checkpoint``.

    "auto" picks vLLM with the GPU settings where CUDA is available, vLLM with the CPU settings
    (eager mode, an explicit KV-cache size) where only vllm-cpu is installed, and transformers
    otherwise, so one command runs on a laptop and on a cluster.
    """
    if backend == "auto":
        import torch

        if _vllm_available():
            backend = "vllm" if torch.cuda.is_available() else "vllm_cpu"
        else:
            log.warning("vLLM is not installed: falling back to the transformers engine (slower)")
            backend = "hf"
    if backend in ("vllm", "vllm_cpu"):
        from .vllm_engine import VLLMEngine

        return VLLMEngine(checkpoint, **dict((vllm if backend == "vllm" else vllm_cpu) or {}))
    if backend == "hf":
        from .hf_engine import HFEngine

        return HFEngine(checkpoint, **dict(hf or {}))
    raise ValueError(f"unknown engine backend {backend!r}; expected auto, vllm, vllm_cpu or hf")
