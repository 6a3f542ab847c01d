"""The typed nouns of the library: a model, a dataset, training settings.

A stage builds them once from its composed config (``Model.from_config(cfg.model)``); library functions
take these, never raw config mappings. An unknown field stops with a message that names it, so a typo in
a config file (``parms: 9e9``) cannot pass silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from .errors import UserError

T = TypeVar("T")

ORIGINS = ("hub", "embedded", "random", "trained", "local", "api")


class SpecError(UserError, ValueError):
    """A config that does not describe a model, dataset or training settings."""


def plain(node: Any) -> Any:
    """A config node as plain Python (resolved); anything else as it is."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _build(cls: type[T], node: Mapping[str, Any] | DictConfig, what: str) -> T:
    values = dict(plain(node))
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise SpecError(
            f"{what} {values.get('name', '')!r}: unknown field(s) {unknown}; known: {sorted(names)}"
        )
    try:
        return cls(**values)
    except TypeError as exc:  # a required field missing
        raise SpecError(f"{what} {values.get('name', '')!r}: {exc}") from None


@dataclass(frozen=True)
class Model:
    """A model config (``conf/model/<name>.yaml``): where its weights come from and what it costs.

    ``params`` is the nominal size that enters the FLOPs budget (``compute_optimal.budget``).
    """

    name: str
    params: float | None  # None only for an API model whose size is not published (price-matched budgets)
    # hub | embedded | random | trained (a family member, compute_optimal.family) | local (an exported
    # student) | api (an API-served model)
    origin: str = "hub"
    params_total: int | None = None  # exact count, embeddings included (recorded, never budgeted)
    hf_id: str | None = None
    embedded: str | None = None  # origin embedded: the GGUF package's model
    path: str | None = None  # origin local: the exported checkpoint folder
    arch: dict[str, Any] | None = (
        None  # origin random/trained, or a config-only checkpoint (vLLM dummy weights)
    )
    pretrain: dict[str, Any] | None = None  # origin trained: the family's recipe (conf/family/)
    # origin trained: this member's training tokens, in place of the recipe's train.tokens (members of one
    # family may train for different lengths: smaller models longer, as in practice)
    pretrain_tokens: float | None = None
    tokenizer_from: str | None = None
    init_seed: int = 0
    price_per_mtok: float | None = None  # $ per 1M output tokens (budget.mode=price matches on it)
    input_price_per_mtok: float | None = None  # $ per 1M prompt tokens (the dollar ledger)
    # origin api: {base_url, model (the provider's name), api_key_env, endpoint: completions|chat,
    # reproducible_seeds: does the provider promise equal samples for equal seeds}
    api: dict[str, Any] | None = None
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    attn_implementation: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)  # SLURM requests per stage (resolvers)

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise SpecError(f"model {self.name!r}: unknown origin {self.origin!r}; expected one of {ORIGINS}")
        if self.params is None and self.origin != "api":
            raise SpecError(f"model {self.name!r}: params is required (the nominal parameter count)")
        if self.params is not None:
            if float(self.params) <= 0:
                raise SpecError(f"model {self.name!r}: params must be > 0, got {self.params}")
            object.__setattr__(self, "params", float(self.params))
        if self.origin == "api" and not (self.api and self.api.get("base_url") and self.api.get("model")):
            raise SpecError(f"model {self.name!r}: origin api needs api.base_url and api.model")
        if self.pretrain_tokens is not None:
            if not self.pretrain or float(self.pretrain_tokens) <= 0:
                raise SpecError(
                    f"model {self.name!r}: pretrain_tokens needs a pretrain recipe and must be > 0"
                )
            # The member's recipe is the family's with its own length: what its cache key and runs record.
            train = {**self.pretrain.get("train", {}), "tokens": float(self.pretrain_tokens)}
            object.__setattr__(self, "pretrain", {**self.pretrain, "train": train})

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig) -> Model:
        return _build(cls, node, "model")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that decide what the model generates (a run's signature)."""
        keys = ("name", "origin", "hf_id", "embedded", "arch", "params")
        return {k: getattr(self, k) for k in keys} | ({"pretrain": self.pretrain} if self.pretrain else {})


@dataclass(frozen=True)
class Prompt:
    template: str
    num_shots: int | None = None


@dataclass(frozen=True)
class Dataset:
    """A dataset config (``conf/dataset/<name>.yaml``); ``loader`` stays a config for ``instantiate``."""

    name: str
    answer_format: str
    prompt: Prompt
    split: str = "train"
    train_dataset: str | None = None  # the training set of models evaluated on this one
    limit: int | None = None  # a seeded subset of this many problems
    max_new_tokens: int = 512
    loader: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig) -> Dataset:
        values = dict(plain(node))
        values["prompt"] = Prompt(**(values.get("prompt") or {"template": values.get("name")}))
        return _build(cls, values, "dataset")

    def with_prompt(self, num_shots: int | None) -> Dataset:
        return dataclasses.replace(self, prompt=dataclasses.replace(self.prompt, num_shots=num_shots))


@dataclass(frozen=True)
class TrainSettings:
    """``train:`` of ``conf/train.yaml``: what a fine-tuning run does, equal for WC and SE data."""

    max_steps: int
    batch_size: int
    lr: float
    max_length: int
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"
    num_shots: int | None = 0
    dedup: bool = True
    dtype: str = "float32"
    freeze_embeddings: bool = False
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for key in ("max_steps", "batch_size", "max_length"):
            if int(getattr(self, key)) < 1:
                raise SpecError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        object.__setattr__(self, "lr", float(self.lr))

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig) -> TrainSettings:
        return _build(cls, node, "train settings")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
