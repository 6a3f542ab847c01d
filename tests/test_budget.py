"""Budget arithmetic: the paper's numbers, non-integer ratios, the three matching modes, errors."""

from __future__ import annotations

import pytest

from compute_optimal.budget import Budget, BudgetError, Ledger, sampling_flops


def gemma2(samples: int, mode: str = "compute", **kw) -> Budget:
    return Budget(
        name="b",
        mode=mode,
        reference_model="gemma2_27b",
        reference_samples=samples,
        reference_params=27e9,
        **kw,
    )


@pytest.mark.parametrize(("ref_samples", "wc", "se"), [(1, 3, 1), (10, 30, 10)])
def test_paper_budgets_gemma2(ref_samples: int, wc: int, se: int) -> None:
    budget = gemma2(ref_samples)
    assert budget.samples_for("gemma2_9b", 9e9) == wc
    assert budget.samples_for("gemma2_27b", 27e9) == se


def test_flops_per_problem_and_equal_compute() -> None:
    budget = gemma2(10, tokens_per_solution=300)
    assert budget.flops_per_problem == pytest.approx(10 * 300 * 2 * 27e9)
    # WC spends the same FLOPs on 3x the samples.
    assert sampling_flops(9e9, 30 * 300) == pytest.approx(sampling_flops(27e9, 10 * 300))


def test_non_integer_ratio_floors() -> None:
    # 27 / 7 = 3.857...: Gemma-7B gets 3 samples at the low budget and 38 at the high one.
    assert gemma2(1).samples_for("gemma_7b", 7e9) == 3
    assert gemma2(10).samples_for("gemma_7b", 7e9) == 38
    # 2.5x: 1 -> 2, 10 -> 25 (floor, never more FLOPs than the budget)
    b = Budget("x", "compute", "big", 1, 250e6)
    assert b.samples_for("small", 100e6) == 2
    assert Budget("x", "compute", "big", 10, 250e6).samples_for("small", 100e6) == 25


def test_float_roundoff_does_not_lose_a_sample() -> None:
    # 0.7 / 0.1 is 6.999999999999999 in binary floating point; floor() alone would give 6.
    assert 0.7 / 0.1 < 7
    budget = Budget("p", "price", "pro", 1, 1e12, reference_price=0.7)
    assert budget.samples_for("flash", 1e11, price=0.1) == 7


def test_number_matched_gives_equal_samples() -> None:
    assert gemma2(10, mode="number").samples_for("gemma2_9b", 9e9) == 10
    assert gemma2(10, mode="number").samples_for("gemma2_27b", 27e9) == 10


def test_price_matched() -> None:
    # Flash vs Pro-like prices, 35x apart: 1 Pro sample buys 35 Flash samples.
    budget = Budget("p", "price", "pro", 1, 1e12, reference_price=10.5)
    assert budget.samples_for("flash", 1e11, price=0.3) == 35
    with pytest.raises(BudgetError, match="price"):
        budget.samples_for("flash", 1e11, price=None)


def test_budget_below_one_sample_names_the_fix() -> None:
    # 1 sample of a 9B model does not pay for one sample of a 27B model.
    budget = Budget("low", "compute", "gemma2_9b", 1, 9e9)
    with pytest.raises(BudgetError, match=r"buys 0\.333 samples of gemma2_27b.*at least 3"):
        budget.samples_for("gemma2_27b", 27e9)


@pytest.mark.parametrize("bad", [dict(mode="energy"), dict(reference_samples=0), dict(reference_params=0)])
def test_invalid_budget_fields(bad: dict) -> None:
    fields = (
        dict(name="b", mode="compute", reference_model="m", reference_samples=1, reference_params=1e9) | bad
    )
    with pytest.raises(BudgetError):
        Budget(**fields)


def test_ledger_planned_and_measured() -> None:
    ledger = Ledger(
        params=9e9,
        samples_per_problem=3,
        num_problems=100,
        tokens_per_solution=256,
        generated_tokens=70_000,
        prompt_tokens=90_000,
    )
    assert ledger.planned_flops == pytest.approx(2 * 9e9 * 3 * 100 * 256)
    assert ledger.measured_flops == pytest.approx(2 * 9e9 * 70_000)
    assert ledger.as_dict()["mean_tokens_per_solution"] == pytest.approx(70_000 / 300)
