"""Model families the project trains itself (``origin: trained``): the laptop-scale organism of the paper.

A member's config (``conf/model/arith_{student,wc,se}.yaml``) gives its ``arch`` and, through
``${co.family:<name>}``, the family's shared recipe (``conf/family/<name>.yaml``). :func:`checkpoint`
returns the member's cached checkpoint, training it (and the family's tokenizer) first when missing.
``python -m compute_optimal.family <model> ...`` builds members one after another (the study's first
stage: two trainings at once on two cores are each ~4x slower).
"""

from __future__ import annotations

from pathlib import Path

from ..specs import Model
from .build import FamilyError, dataset_loader

__all__ = ["FamilyError", "checkpoint", "tokenizer_dir"]


def _held_out(recipe: dict) -> dict:
    """What decides a member's training problems besides its recipe: the study's splits, left out, and
    the generator's version (the same arguments give other problems after a generator change; version 1,
    the first of each generator, keeps the keys its families were built with)."""
    from .build import generator

    loader = dataset_loader(str(recipe["data"]["dataset"]))
    version = getattr(generator(loader), "VERSION", 1)
    return loader if version == 1 else {**loader, "generator_version": version}


def tokenizer_dir(model: Model) -> Path:
    """The family's tokenizer (one per data + tokenizer recipe), built once."""
    from ..models import _atomic_build, _cache_key, cache_dir
    from .build import build_tokenizer

    recipe = dict(model.pretrain or {})
    key = _cache_key({k: recipe[k] for k in ("data", "tokenizer", "template")}, held_out=_held_out(recipe))
    target = cache_dir() / "tokenizers" / f"{recipe['name']}-{key}"
    return _atomic_build(target, lambda tmp: build_tokenizer(recipe, tmp), marker="tokenizer.json")


def checkpoint(model: Model) -> Path:
    """The trained checkpoint of family member ``model``, trained once per machine."""
    from ..models import _atomic_build, _cache_key, cache_dir
    from .build import kernels, train_in_child

    if not model.pretrain or not model.arch:
        raise FamilyError(f"model {model.name!r}: origin trained needs an arch and a pretrain recipe")
    recipe = dict(model.pretrain)
    key = _cache_key(dict(model.arch), pretrain=recipe, held_out=_held_out(recipe))
    target = cache_dir() / "models" / f"trained-{model.name}-{key}"
    kernels(recipe)  # an unknown value stops here, before any work
    tokenizer = tokenizer_dir(model)
    return _atomic_build(
        target, lambda tmp: train_in_child(dict(model.arch), recipe, tokenizer, tmp, target.name)
    )
