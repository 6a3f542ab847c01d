"""Hugging Face transformers back end: the fallback where vLLM does not install, the arith family's tiny
models, and fast unit tests.

Every ``generate`` call runs up to ``batch_size`` rows, left-padded: for tiny models one call per prompt is
all Python overhead. A greedy request is one row (its n completions are one completion repeated); a sampled
request is n rows. Rows are batched shortest prompt first (stable), so a call's rows end at about the same
step.

Sampled rows draw from their own generators: the i-th sample of a request is seeded ``request.seed + i``
(as vLLM does) and picked by the Gumbel-max trick (argmax of the tempered, top-p filtered logits minus the
log of an Exp(1) draw, which is a draw from their softmax), so a sample does not depend on what else shares
its call, or on resumed runs and shards batching it differently. (Padding can change a logit in the last
bits, hence a near-tie token, as in greedy batches.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence

from .base import Completion, Engine, Generation, K, Request, SamplingSettings, clip_at_stop

log = logging.getLogger(__name__)

# Sampled requests are pulled this many calls' worth of rows at a time and sorted by prompt length within
# that window: sorting the whole run would hold back every chunk's writing until the end.
WINDOW_CALLS = 4


class HFEngine(Engine):
    name = "hf"

    def __init__(
        self,
        checkpoint: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 64,
        attn_implementation: str | None = None,
        grow_kv_cache: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(int(threads))
        if int(batch_size) < 1:
            raise ValueError(f"engine.hf.batch_size must be at least 1, got {batch_size}")
        self._torch = torch
        self.device = device
        self.batch_size = int(batch_size)
        self.grow_kv_cache = bool(grow_kv_cache)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = (
            AutoModelForCausalLM.from_pretrained(
                checkpoint, dtype=getattr(torch, dtype), attn_implementation=attn_implementation
            )
            .to(device)
            .eval()
        )
        eos = self.tokenizer.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        gen_eos = self.model.generation_config.eos_token_id
        if gen_eos is not None:
            self._eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self._pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else min(self._eos, default=0)
        )
        # A pad token that is a special token never appears in text: where a row has one, the row ended.
        special = set(self.tokenizer.all_special_ids)
        self._pad_special = {self._pad} & special

    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> list[Generation]:
        done = dict(self.stream(enumerate(requests), settings))  # in batch order: shortest prompt first
        return [done[i] for i in range(len(requests))]

    def stream(
        self, requests: Iterable[tuple[K, Request]], settings: SamplingSettings
    ) -> Iterator[tuple[K, Generation]]:
        """Requests in windows, rows sorted by prompt length within a window and run ``batch_size`` per
        call; a request is yielded once all its rows are back. Greedy requests are all one window."""
        greedy = settings.temperature <= 0
        pending = iter(requests)
        window_rows = math.inf if greedy else self.batch_size * WINDOW_CALLS
        while window := _take_rows(pending, window_rows, greedy):
            yield from self._run_window(window, settings, greedy)

    def _run_window(
        self, window: list[tuple[K, Request]], settings: SamplingSettings, greedy: bool
    ) -> Iterator[tuple[K, Generation]]:
        prompts = {key: self.tokenizer(r.prompt).input_ids for key, r in window}
        # Shortest prompt first (stable): a longer question has a longer solution (arith: one sentence per
        # step), and a call runs until its longest row ends.
        ordered = sorted(window, key=lambda item: len(prompts[item[0]]))
        requests = dict(window)
        back: dict[K, list[Completion]] = {key: [] for key in requests}
        for call in self._calls(ordered, greedy):
            seeds = None if greedy else [seed for _, seed in call]
            outs = self._generate_rows([prompts[key] for key, _ in call], settings, seeds)
            for (key, _), completion in zip(call, outs, strict=True):
                back[key].append(completion)
                n = requests[key].n
                if greedy:  # one row: greedy decoding is deterministic, so its n completions are one
                    yield key, Generation(len(prompts[key]), (completion,) * n)
                elif len(back[key]) == n:
                    yield key, Generation(len(prompts[key]), tuple(back[key]))

    def _calls(self, ordered: list[tuple[K, Request]], greedy: bool) -> Iterator[list[tuple[K, int]]]:
        """Rows ``(key, seed)`` in calls of at most ``batch_size``: one row per greedy request, n per sampled
        one (the i-th seeded ``request.seed + i``). A call holds whole requests where they fit (splitting
        them measured 1.14x slower at n = 30: benchmarks/hf_batching.py); a larger one is split alone."""
        call: list[tuple[K, int]] = []
        for key, request in ordered:
            rows = [(key, request.seed + i) for i in range(1 if greedy else request.n)]
            if call and len(call) + len(rows) > self.batch_size:
                yield call
                call = []
            while len(rows) > self.batch_size:
                yield rows[: self.batch_size]
                rows = rows[self.batch_size :]
            call += rows
        if call:
            yield call

    def _generate_rows(
        self, prompts: Sequence[list[int]], settings: SamplingSettings, seeds: Sequence[int] | None
    ) -> list[Completion]:
        """One left-padded ``generate`` call: greedy where ``seeds`` is None, else row i sampled with its
        own generator seeded ``seeds[i]``."""
        torch = self._torch
        from transformers import LogitsProcessorList

        width = max(len(ids) for ids in prompts)
        ids = torch.tensor([[self._pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        from .kv_cache import growing_cache

        processors = LogitsProcessorList()
        if seeds is not None:
            processors.append(_SeededSampling(seeds, settings.temperature, settings.top_p))
        with torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=mask,
                do_sample=False,  # sampled rows: argmax of the Gumbel-perturbed scores (_SeededSampling)
                logits_processor=processors,
                max_new_tokens=settings.max_new_tokens,
                stop_strings=list(settings.stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self._pad,
                past_key_values=growing_cache(self.model.config) if self.grow_kv_cache else None,
            )
        return [self._completion(row, settings) for row in out[:, width:].tolist()]

    def _completion(self, row: list[int], settings: SamplingSettings) -> Completion:
        """One generated row: text up to EOS or a stop sequence; the padding of a row that finished
        before the longest one in its call (a special pad token) is not counted."""
        n_tokens, hit_eos = len(row), False
        for i, tok in enumerate(row):
            if tok in self._eos or tok in self._pad_special:
                n_tokens, hit_eos = i, True  # EOS itself and the padding after it are not counted
                break
        text = self.tokenizer.decode(row[:n_tokens], skip_special_tokens=True)
        clipped = clip_at_stop(text, settings.stop)
        stopped = hit_eos or clipped != text or n_tokens < settings.max_new_tokens
        return Completion(clipped, n_tokens, "stop" if stopped else "length")


def _take_rows(pending: Iterator[tuple[K, Request]], limit: float, greedy: bool) -> list[tuple[K, Request]]:
    """Requests from ``pending`` until they hold at least ``limit`` rows (or ``pending`` ends): pulls no
    request beyond them."""
    window, rows = [], 0
    for key, request in pending:
        window.append((key, request))
        rows += 1 if greedy else request.n
        if rows >= limit:
            break
    return window


class _SeededSampling:
    """A logits processor that makes greedy decoding sample: row i's tempered, top-p filtered scores minus
    log E, E ~ Exp(1) drawn per step from row i's own generator, whose argmax is a draw from their softmax
    (torch's CPU multinomial does the same race with the same draws)."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self._torch = torch
        self._generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        self._warpers = [TemperatureLogitsWarper(temperature)]
        if top_p < 1.0:
            self._warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids, scores):
        for warper in self._warpers:
            scores = warper(input_ids, scores)
        torch = self._torch
        # Per step, not all steps up front: rows x steps x vocab would be GBs for a 50k-token vocabulary.
        # float64 draws: a float32 one is exactly 0 once in 2^24, and -log 0 would pick any token.
        draws = torch.empty(len(self._generators), scores.shape[-1], dtype=torch.float64)
        for row, generator in zip(draws, self._generators, strict=True):
            row.exponential_(generator=generator)
        return scores - draws.log_().to(scores.dtype).to(scores.device)
