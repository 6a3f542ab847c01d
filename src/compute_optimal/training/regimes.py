"""Fine-tuning regimes: who learns from whose data.

The paper's three regimes differ only in how the student relates to the two samplers of a
compute-matched pair (WC = weaker-cheaper, SE = stronger-expensive):

* ``knowledge_distillation``: a third model learns from WC data vs SE data (Gemma-7B from 9B / 27B)
* ``self_improvement``:       the WC model learns from its own data vs SE data (Gemma2-9B)
* ``weak_to_strong``:         the SE model learns from WC data vs its own data (Gemma2-27B)

A regime config (``conf/regime/``) is just its name: which model of a pair it trains is decided here,
once (:data:`ROLES`, :func:`pair_student`), and :class:`Regime` checks that the models fit their roles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..specs import Model

ROLES = {"knowledge_distillation": "other", "self_improvement": "wc", "weak_to_strong": "se"}
REFERENCE = "reference"
# Whose solutions a student learns from: the pair's WC or SE model's samples, or the dataset's own
# reference solutions of the same problems (the ceiling check: what the students can learn at most).
SAMPLERS = ("wc", "se", REFERENCE)


class RegimeError(UserError, ValueError):
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
class Regime:
    """A regime with its three models: the student, and the pair whose samples it learns from."""

    name: str
    student: Model
    wc: Model
    se: Model

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

    def sampler_model(self, sampler: str) -> Model | None:
        """The model whose samples make the training data: the pair's ``sampler`` ("wc" or "se"); None
        for the dataset's reference solutions."""
        if sampler not in SAMPLERS:
            raise RegimeError(f"unknown data sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
        if sampler == REFERENCE:
            return None
        return self.wc if sampler == "wc" else self.se

    def relation(self, sampler: str) -> str:
        """How the data relates to the student, for reports: "own data", "WC data", "SE data",
        "reference solutions"."""
        model = self.sampler_model(sampler)
        if model is None:
            return "reference solutions"
        if model.name == self.student.name:
            return "own data"
        return "WC data" if sampler == "wc" else "SE data"
