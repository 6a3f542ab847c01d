"""Fine-tuning regimes: who learns from whose data.

The paper's three regimes differ only in how the student relates to the two samplers of a
compute-matched pair (WC = weaker-cheaper, SE = stronger-expensive):

* ``knowledge_distillation``: a third model learns from WC data vs SE data (Gemma-7B from 9B / 27B)
* ``self_improvement``:       the WC model learns from its own data vs SE data (Gemma2-9B)
* ``weak_to_strong``:         the SE model learns from WC data vs its own data (Gemma2-27B)

A regime is a config (``conf/regime/``) that names the student's role; this module checks that
the student a config ends up with fits that role.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ROLES = {"knowledge_distillation": "other", "self_improvement": "wc", "weak_to_strong": "se"}
SOURCES = ("wc", "se")


class RegimeError(ValueError):
    """A student that does not fit its regime, or an unknown regime / data source."""


# Where a pair config (conf/pair/) names the model of each role.
PAIR_KEYS = {"wc": "wc", "se": "se", "other": "distill_student"}


def pair_student(regime: str, pair: Mapping[str, Any]) -> str | None:
    """The model a pair config names as ``regime``'s student (None where it names none)."""
    if regime not in ROLES:
        raise RegimeError(f"unknown regime {regime!r}; expected one of {sorted(ROLES)}")
    name = pair.get(PAIR_KEYS[ROLES[regime]])
    return str(name) if name else None


@dataclass(frozen=True)
class Sampler:
    name: str
    params: float


@dataclass(frozen=True)
class Regime:
    name: str
    student: Sampler
    wc: Sampler
    se: Sampler

    def __post_init__(self) -> None:
        if self.name not in ROLES:
            raise RegimeError(f"unknown regime {self.name!r}; expected one of {sorted(ROLES)}")
        if self.wc.params >= self.se.params:
            raise RegimeError(
                f"the WC sampler {self.wc.name} ({self.wc.params:.3g} params) must be cheaper than the SE sampler "
                f"{self.se.name} ({self.se.params:.3g})"
            )
        s, role = self.student, ROLES[self.name]
        if role == "wc" and s.name != self.wc.name:
            raise RegimeError(
                f"self_improvement trains the WC sampler on data: student must be {self.wc.name}, got {s.name}"
            )
        if role == "se" and s.name != self.se.name:
            raise RegimeError(
                f"weak_to_strong trains the SE sampler: student must be {self.se.name}, got {s.name}"
            )
        if role == "se" and s.params <= self.wc.params:
            raise RegimeError(
                f"weak_to_strong needs a student stronger than the data's sampler {self.wc.name}; "
                f"{s.name} has {s.params:.3g} <= {self.wc.params:.3g} params"
            )
        if role == "other" and s.name in (self.wc.name, self.se.name):
            raise RegimeError(
                f"knowledge_distillation needs a student other than the samplers ({self.wc.name}, {self.se.name}); "
                f"got {s.name}. Set regime.student to a third model (paper: gemma_7b)"
            )

    def sampler_for(self, source: str) -> Sampler:
        """The model whose samples make the training data of ``source`` ("wc" or "se")."""
        if source not in SOURCES:
            raise RegimeError(f"unknown data source {source!r}; expected wc or se")
        return self.wc if source == "wc" else self.se

    def relation(self, source: str) -> str:
        """How the data relates to the student, for reports: "own", "weaker model's", "stronger model's"..."""
        sampler = self.sampler_for(source)
        if sampler.name == self.student.name:
            return "own data"
        return "WC data" if source == "wc" else "SE data"
