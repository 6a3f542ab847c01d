"""Hugging Face transformers back end: the fallback where vLLM does not install, and fast unit tests.

Sampling: ``generate(num_return_sequences=n)`` per prompt. (Encoding the prompt once and repeating its KV
cache n times was measured *slower* here with transformers 5.19: 10.8 vs 20.0 tokens/s,
benchmarks/sampling_throughput.py.) Sampled requests run one at a time and are seeded one at a time, so a
request's samples do not depend on what else is in the batch (resumed runs reproduce them).

Greedy decoding draws nothing at random, so greedy requests run ``greedy_batch_size`` prompts per
``generate`` call, left-padded: for the arith family's tiny models one call per prompt is all Python
overhead. They are batched shortest prompt first (stable), so a batch's rows end at about the same step.
(Padding can change a logit in the last bits, hence a near-tie token; the batches are the same slices of the
sorted request list on every run.)
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence

from .base import Completion, Engine, Generation, K, Request, SamplingSettings, clip_at_stop

log = logging.getLogger(__name__)


class HFEngine(Engine):
    name = "hf"

    def __init__(
        self,
        checkpoint: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        threads: int | None = None,
        greedy_batch_size: int = 64,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(int(threads))
        if int(greedy_batch_size) < 1:
            raise ValueError(f"engine.hf.greedy_batch_size must be at least 1, got {greedy_batch_size}")
        self._torch = torch
        self.device = device
        self.greedy_batch_size = int(greedy_batch_size)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = (
            AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).to(device).eval()
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
        if settings.temperature > 0:
            return [self._generate_one(r, settings) for r in requests]
        done = dict(self.stream(enumerate(requests), settings))  # in batch order: shortest prompt first
        return [done[i] for i in range(len(requests))]

    def stream(
        self, requests: Iterable[tuple[K, Request]], settings: SamplingSettings
    ) -> Iterator[tuple[K, Generation]]:
        """Sampled requests one at a time (the default). Greedy ones are all taken at once, sorted by
        prompt length, and run ``greedy_batch_size`` at a time."""
        if settings.temperature > 0:
            yield from super().stream(requests, settings)
            return
        # A call runs until its longest row ends, and a longer question has a longer solution (arith: one
        # sentence per step), so batching prompts of similar length wastes fewer steps: shortest first.
        pending = iter(sorted(requests, key=lambda item: len(item[1].prompt)))
        while batch := list(itertools.islice(pending, self.greedy_batch_size)):
            keys = [key for key, _ in batch]
            yield from zip(keys, self._generate_greedy([r for _, r in batch], settings), strict=True)

    def _generate_greedy(self, requests: Sequence[Request], settings: SamplingSettings) -> list[Generation]:
        """Greedy completions of several prompts in one left-padded ``generate`` call; a request's n
        greedy completions are one completion repeated (greedy decoding is deterministic)."""
        torch = self._torch
        prompts = [self.tokenizer(r.prompt).input_ids for r in requests]
        width = max(len(ids) for ids in prompts)
        ids = torch.tensor([[self._pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        with torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=settings.max_new_tokens,
                stop_strings=list(settings.stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self._pad,
            )
        rows = out[:, width:].tolist()
        return [
            Generation(prompt_tokens=len(p), completions=(self._completion(row, settings),) * r.n)
            for p, r, row in zip(prompts, requests, rows, strict=True)
        ]

    def _generate_one(self, request: Request, settings: SamplingSettings) -> Generation:
        torch = self._torch
        ids = self.tokenizer(request.prompt, return_tensors="pt").input_ids.to(self.device)
        prompt_len = ids.shape[1]
        with torch.inference_mode():
            torch.manual_seed(request.seed)
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                num_return_sequences=request.n,
                do_sample=settings.temperature > 0,
                temperature=settings.temperature if settings.temperature > 0 else None,
                **({"top_p": settings.top_p, "top_k": 0} if settings.temperature > 0 else {}),
                max_new_tokens=settings.max_new_tokens,
                stop_strings=list(settings.stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self._pad,
            )
        completions = tuple(self._completion(row, settings) for row in out[:, prompt_len:].tolist())
        return Generation(prompt_tokens=prompt_len, completions=completions)

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
