"""Hugging Face transformers back end: the fallback where vLLM does not install, and fast unit tests.

``generate(num_return_sequences=n)`` per prompt. (Encoding the prompt once and repeating its KV cache
n times was measured *slower* here with transformers 5.19: 10.8 vs 20.0 tokens/s,
benchmarks/sampling_throughput.py.) Requests run one at a time and are seeded one at a time, so a
request's samples do not depend on what else is in the batch (resumed runs reproduce them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .base import Completion, Engine, Generation, Request, SamplingSettings, clip_at_stop

log = logging.getLogger(__name__)


class HFEngine(Engine):
    name = "hf"

    def __init__(
        self, checkpoint: str, *, dtype: str = "float32", device: str = "cpu", threads: int | None = None
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.device = device
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

    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> list[Generation]:
        return [self._generate_one(r, settings) for r in requests]

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
        completions = []
        for row in out[:, prompt_len:].tolist():
            n_tokens, hit_eos = len(row), False
            for i, tok in enumerate(row):
                if tok in self._eos:
                    n_tokens, hit_eos = i, True  # EOS itself and the padding after it are not counted
                    break
            text = self.tokenizer.decode(row[:n_tokens], skip_special_tokens=True)
            clipped = clip_at_stop(text, settings.stop)
            stopped = hit_eos or clipped != text or n_tokens < settings.max_new_tokens
            completions.append(Completion(clipped, n_tokens, "stop" if stopped else "length"))
        return Generation(prompt_tokens=prompt_len, completions=tuple(completions))
