"""Reference logits of a soft-capped (Gemma2) checkpoint under eager attention, which applies the attention
cap, and sdpa, which drops it: what a component that must keep the cap is compared against."""

from __future__ import annotations

import torch


def eager_and_sdpa_logits(checkpoint: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Seeded input ids, and the fp32 logits of ``checkpoint`` on them per attention kernel."""
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 1000, (2, 48), generator=torch.Generator().manual_seed(0))
    kinds = {}
    for kind in ("eager", "sdpa"):
        ref = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation=kind)
        with torch.inference_mode():
            kinds[kind] = ref.eval()(ids).logits
    return ids, kinds
