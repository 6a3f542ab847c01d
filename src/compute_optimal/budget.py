"""Sampling budgets: pure FLOPs / price arithmetic, planned and measured.

Inference costs ``2 · P`` FLOPs per generated token (Kaplan et al., 2020), so ``T`` tokens cost
``2·P·T``. A budget is FLOPs per problem, written as "``S`` samples of a reference model of ``P_ref``
parameters at ``W`` tokens per solution": ``B = S · W · 2 · P_ref``. With ``W`` assumed equal for all
models (the paper's assumption), model ``m`` gets ``S_m = floor(B / (W · 2 · P_m))`` samples.

Which parameter count is ``P``: the model config's ``params`` field, the **nominal** size in the
model's name (9e9 for Gemma2-9B, 27e9 for Gemma2-27B), exactly as the paper computes its 3x ratio.
The exact counts are in each model config too (``params_total``), and they would break the paper's
budgets: Gemma2 has 9.24e9 / 27.23e9 total parameters (ratio 2.95 -> 2 and 29 samples, not 3 and
30) and 8.32e9 / 26.05e9 non-embedding ones (ratio 3.13 -> 3 and 31); the embedded pair has
134.5e6 / 268.1e6 (ratio 1.99 -> 1 sample instead of 2). The measured ledger uses the same ``P``,
so planned and measured FLOPs are comparable; the summary also records ``params_total``.

Three matching modes:

* ``compute``: equal FLOPs (the paper's main setting): ``S_m = floor(S_ref · P_ref / P_m)``
* ``number``:  equal samples per problem (the paper's ablation): ``S_m = S_ref``
* ``price``:   equal dollars at the models' output-token prices: ``S_m = floor(S_ref · $_ref / $_m)``
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UserError

MODES = ("compute", "number", "price")
# Guards floor() against binary round-off: 0.7 / 0.1 is 6.999999999999999 in floats.
_EPS = 1e-9


class BudgetError(UserError, ValueError):
    """A budget that cannot be applied (unknown mode, too small for one sample, missing prices)."""


@dataclass(frozen=True)
class Budget:
    """FLOPs (or dollars) per problem, expressed as ``reference_samples`` samples of the reference model."""

    name: str
    mode: str
    reference_model: str
    reference_samples: int
    reference_params: float | None  # None: an API model of unpublished size (price or number mode only)
    reference_price: float | None = None  # $ per 1M output tokens (price mode only)
    tokens_per_solution: float = 256.0  # W; cancels out of S_m, only scales the planned FLOPs

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BudgetError(f"budget {self.name!r}: unknown mode {self.mode!r}; expected one of {MODES}")
        if self.reference_samples < 1:
            raise BudgetError(
                f"budget {self.name!r}: reference_samples must be >= 1, got {self.reference_samples}"
            )
        if self.reference_params is not None and self.reference_params <= 0:
            raise BudgetError(
                f"budget {self.name!r}: reference_params must be > 0, got {self.reference_params}"
            )

    @property
    def flops_per_problem(self) -> float | None:
        """B = S_ref · W · 2 · P_ref (None where P_ref is not known: an API reference model)."""
        if self.reference_params is None:
            return None
        return self.reference_samples * self.tokens_per_solution * 2.0 * self.reference_params

    def samples_for(self, model: str, params: float | None, price: float | None = None) -> int:
        """Samples per problem that model ``model`` gets under this budget (>= 1, else BudgetError)."""
        if self.mode == "compute" and (params is None or self.reference_params is None):
            which = model if params is None else self.reference_model
            raise BudgetError(
                f"model {which!r} has no parameter count (an API model), so FLOPs cannot be matched: "
                "use budget.mode=price (equal dollars) or budget.mode=number"
            )
        if params is not None and params <= 0:
            raise BudgetError(f"model {model!r}: params must be > 0, got {params}")
        if self.mode == "number":
            exact = float(self.reference_samples)
        elif self.mode == "compute":
            exact = self.reference_samples * self.reference_params / params
        else:
            if price is None or self.reference_price is None:
                raise BudgetError(
                    f"budget {self.name!r} is price-matched but the price per output token of "
                    f"{model if price is None else self.reference_model!r} is not set (model.price_per_mtok)"
                )
            exact = self.reference_samples * self.reference_price / price
        samples = math.floor(exact + _EPS)
        if samples < 1:
            raise BudgetError(
                f"budget {self.name!r} ({self.reference_samples} sample(s) of {self.reference_model}, "
                f"{self.mode}-matched) buys {exact:.3g} samples of {model}: less than one. "
                f"Raise budget.reference_samples to at least {math.ceil(1 / exact - _EPS) * self.reference_samples}"
                " or pick a cheaper model."
            )
        return samples


def sampling_flops(params: float, tokens: int | float) -> float:
    """FLOPs of generating ``tokens`` tokens with a ``params``-parameter model: 2·P·T."""
    return 2.0 * params * tokens


@dataclass(frozen=True)
class Ledger:
    """What a sampling run planned and what it really spent, in FLOPs and, where prices are known, dollars."""

    params: float | None  # None: an API model of unpublished size (no FLOPs)
    samples_per_problem: int
    num_problems: int
    tokens_per_solution: float
    generated_tokens: int
    prompt_tokens: int
    price_per_mtok: float | None = None  # $ per 1M output tokens
    input_price_per_mtok: float | None = None  # $ per 1M prompt tokens

    @property
    def planned_tokens(self) -> float:
        return self.samples_per_problem * self.num_problems * self.tokens_per_solution

    @property
    def planned_flops(self) -> float | None:
        return None if self.params is None else sampling_flops(self.params, self.planned_tokens)

    @property
    def measured_flops(self) -> float | None:
        """Generated tokens only, as in the paper's 2·P·T; prompt tokens are recorded separately."""
        return None if self.params is None else sampling_flops(self.params, self.generated_tokens)

    @property
    def planned_dollars(self) -> float | None:
        """What the budget planned: S·N·W output tokens at the output price (as price-matching assumes)."""
        return None if self.price_per_mtok is None else self.planned_tokens * self.price_per_mtok / 1e6

    @property
    def measured_dollars(self) -> float | None:
        """What the tokens cost: generated at the output price, plus prompts at the input price if set."""
        if self.price_per_mtok is None:
            return None
        prompts = self.prompt_tokens * (self.input_price_per_mtok or 0.0)
        return (self.generated_tokens * self.price_per_mtok + prompts) / 1e6

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "planned_flops": self.planned_flops,
            "measured_flops": self.measured_flops,
            "planned_dollars": self.planned_dollars,
            "measured_dollars": self.measured_dollars,
            "generated_tokens": self.generated_tokens,
            "prompt_tokens": self.prompt_tokens,
            "mean_tokens_per_solution": self.generated_tokens
            / max(1, self.samples_per_problem * self.num_problems),
        }
