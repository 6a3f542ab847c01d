"""The exact process check (arith) and the arithmetic check (GSM8K, a lower bound) on hand-written
completions, and on the generated reference solutions themselves."""

from __future__ import annotations

import time
from fractions import Fraction

import pandas as pd
import pytest

from compute_optimal import judge
from compute_optimal.data.arith import generate_split
from compute_optimal.data.problem import Problem
from compute_optimal.process_check import (
    EXACT_METHOD,
    check_arithmetic,
    check_process,
    parse_steps,
    sample_verdicts,
)

# A level-3 problem: 17 + 8 = 25, 25 * 3 = 75, 75 * 2 = 150.
SOLUTION = (
    "Ethan finds 8 more apples, so Ethan has 17 + 8 = 25 apples. Owen has 3 boxes, and each box holds as "
    "many apples as Ethan has now, so Owen has 25 * 3 = 75 apples. Owen's collection of apples grows to "
    "twice its size, so Owen has 75 * 2 = 150 apples. The answer is 150."
)
GOLD = "150"


def check(completion: str):
    return check_process(completion, SOLUTION, GOLD)


# --- the parser -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("so Mia has 7 + 5 = 12 apples.", [("7", "+", "5", "12")]),
        ("7 plus 5 is 12", [("7", "+", "5", "12")]),
        ("3 x 4 = 12, and 12 times 3 equals 36", [("3", "*", "4", "12"), ("12", "*", "3", "36")]),
        ("12 × 3 = 36; 36 ÷ 4 makes 9", [("12", "*", "3", "36"), ("36", "/", "4", "9")]),
        ("12 divided by 4 is 3", [("12", "/", "4", "3")]),
        ("7 + 5 - 3 = 9", [("7", "+", "5", "12"), ("12", "-", "3", "9")]),  # left to right
        ("3 + 4 * 2 = 11", [("4", "*", "2", "8"), ("3", "+", "8", "11")]),  # with precedence
        ("(12 - 5) * 3 = 21", [("12", "-", "5", "7"), ("7", "*", "3", "21")]),
        ("7 + 5 = 12 + 3 = 15", [("7", "+", "5", "12"), ("12", "+", "3", "15")]),  # a run-on
        ("12 = 7 + 5", [("7", "+", "5", "12")]),
        ("1,234 + 6 = 1,240", [("1234", "+", "6", "1240")]),
        ("$5 + $3 = $8", [("5", "+", "3", "8")]),
        ("7 apples + 5 apples = 12 apples", [("7", "+", "5", "12")]),
        ("Natalia sold 48/2 = <<48/2=24>>24 clips", [("48", "/", "2", "24")]),
        # Not computations: algebra, percentages, times of day, labels, mixed units.
        ("x - 3 + 4 = 7", []),
        ("22 - 16 = 16 + x", []),
        ("50 * 20% = 10", []),
        ("7:50 + 30 = 8:20", []),
        ("The answer is 12.", []),
        ("3 times as many as 12 = 36", []),
        ("4 pounds - 6 ounces = 58 ounces", []),
        ("60 mph is 60*1.5=90 feet", [("60", "*", "1.5", "90")]),
    ],
)
def test_parse_steps(text: str, read: list[tuple[str, ...]]) -> None:
    ops = [o for step in parse_steps(text) for o in step.operations]
    assert [(str(o.a), o.op, str(o.b), str(o.result)) for o in ops] == [
        tuple(str(Fraction(x)) if x[0].isdigit() else x for x in r) for r in read
    ]


def test_a_wrong_claim_is_reported_with_the_true_value() -> None:
    [step] = parse_steps("so 12 - 5 = 6 apples are left")
    assert not step.correct and step.errors == ("12 - 5 = 6 is wrong (12 - 5 = 7)",)
    assert step.operations[0].result == 6 and not step.operations[0].correct
    [zero] = parse_steps("5 / 0 = 0")
    assert zero.errors == ("5 / 0 = 0 is wrong (division by zero)",)


def test_parsing_stays_fast_on_pathological_text() -> None:
    start = time.monotonic()
    texts = ["1 + " * 5000 + "= 5", "x - " + "1 + " * 5000 + "1 = 5", "(" * 20000 + "1", "1 = " * 10000]
    for text in [*texts, "1 apples + " * 5000 + "= 3", "(" * 20000 + "1 + 1 = 2"]:
        parse_steps(text)
    assert time.monotonic() - start < 2.0


# --- arith: the exact process check -------------------------------------------------------------


def test_every_reference_solution_passes() -> None:
    problems = generate_split("test", num_test=200, levels=[1, 2, 3, 4, 5], seed=3)
    assert {p.level for p in problems} == {1, 2, 3, 4, 5}
    for p in problems:
        verdict = check_process(p.solution, p.solution, p.answer)
        assert verdict.correct and not verdict.reasons, (p.solution, verdict)
        assert verdict.matched == verdict.required == p.level


def test_a_correct_solution_passes() -> None:
    verdict = check("17 + 8 = 25. Owen has 25 * 3 = 75. Then 75 * 2 = 150. The answer is 150.")
    assert verdict.correct and verdict.answer_correct and not verdict.false_positive
    assert (verdict.steps, verdict.matched, verdict.required, verdict.extra_steps) == (3, 3, 3, 0)


def test_a_correct_solution_in_other_words_passes() -> None:
    text = (
        "Ethan starts with 17 apples and finds 8 more: 8 plus 17 is 25.\n"
        "Owen has 3 boxes of 25 apples each, so 3 times 25 makes 75 apples.\n"
        "Doubling gives 75 x 2 = 150.\nThe answer is 150."
    )
    assert check(text).correct
    # A chain of operations, a repeated step, a check between quantities of the chain, a trivial step.
    assert check("(17 + 8) * 3 * 2 = 150. The answer is 150.").correct
    assert check(
        "17 + 8 = 25, and 25 - 8 = 17 checks. 25 * 3 = 75, so 25 * 3 = 75. 75 * 2 * 1 = 150. The answer is 150."
    ).correct


def test_a_right_answer_by_luck_fails() -> None:
    verdict = check("Owen has lots of apples. The answer is 150.")
    assert verdict.false_positive and not verdict.correct and verdict.answer_correct
    assert verdict.reasons[0] == "no computation written"
    assert "missing intermediate 25 (17 + 8 = 25)" in verdict.reasons
    guessed = check("17 * 8 = 136, 136 + 14 = 150. The answer is 150.")
    assert guessed.false_positive and "extra step 17 * 8 = 136 (step 1)" in guessed.reasons


def test_two_errors_that_cancel_fail_and_both_are_reported() -> None:
    verdict = check("17 + 8 = 26. 26 * 3 = 75. 75 * 2 = 150. The answer is 150.")
    assert verdict.false_positive and verdict.wrong_steps == 2
    assert verdict.reasons[:2] == (
        "step 1: 17 + 8 = 26 is wrong (17 + 8 = 25)",
        "step 2: 26 * 3 = 75 is wrong (26 * 3 = 78)",
    )


def test_a_skipped_step_fails() -> None:
    verdict = check("17 + 8 = 25. Owen then has 75 apples, and 75 * 2 = 150. The answer is 150.")
    assert verdict.false_positive
    assert verdict.reasons == ("missing intermediate 75 (25 * 3 = 75)",)
    assert (verdict.matched, verdict.required) == (2, 3)


def test_an_extra_unrelated_computation_fails() -> None:
    verdict = check(
        "17 + 8 = 25. 25 * 3 = 75. 75 * 2 = 150. He also has 4 + 9 = 13 pears. The answer is 150."
    )
    assert verdict.false_positive and verdict.extra_steps == 1
    assert verdict.reasons == ("extra step 4 + 9 = 13 (step 4)",)


def test_steps_out_of_order_fail() -> None:
    verdict = check("25 * 3 = 75. 17 + 8 = 25. 75 * 2 = 150. The answer is 150.")
    assert verdict.false_positive
    assert set(verdict.reasons) == {
        "missing intermediate 75 (25 * 3 = 75)",
        "step 1: 25 * 3 = 75 is out of order",
    }


def test_a_wrong_final_answer_is_not_a_false_positive() -> None:
    verdict = check("17 + 8 = 25. 25 * 3 = 75. 75 * 2 = 140. The answer is 140.")
    assert not verdict.correct and not verdict.answer_correct and not verdict.false_positive
    assert verdict.reasons[-1] == "final answer 140 is not the gold answer 150: not an answer-correct sample"


def test_the_final_answer_is_read_as_the_grader_reads_it() -> None:
    # The grader's arith extraction: the first number after the last "The answer is".
    assert check("17 + 8 = 25. 25 * 3 = 75. 75 * 2 = 150. The answer is 150 apples.").correct
    assert not check(
        "17 + 8 = 25. 25 * 3 = 75. 75 * 2 = 150. The answer is 150. The answer is 15."
    ).answer_correct


def test_a_solution_that_is_not_a_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="not an arith reference solution"):
        check_process("1 + 1 = 2. The answer is 2.", "The answer is 2.", "2")


def test_sample_verdicts_count_unknowns_apart() -> None:
    problem = Problem("p1", "q", GOLD, SOLUTION, 3, None)
    frame = pd.DataFrame(
        {
            "problem_id": ["p1", "p1", "p1", "p1", "p2"],
            "sample_index": [0, 1, 2, 3, 0],
            "level": [3, 3, 3, 3, 1],
            "gold_answer": [GOLD] * 4 + ["7"],
            "completion": [SOLUTION, "The answer is 150.", "wrong", SOLUTION, "The answer is 7."],
            "correct": [True, True, False, True, True],
        }
    )
    verdicts = sample_verdicts(frame, {"p1": problem})  # p2's reference is not available: unknown
    assert list(verdicts["verdict"]) == ["correct", "incorrect", "correct", "unknown"]
    assert list(verdicts["level"]) == ["3", "3", "3", "1"]
    rates = judge.fpr_from_verdicts(verdicts["verdict"], EXACT_METHOD)
    assert (rates.correct, rates.incorrect, rates.unknown) == (2, 1, 1)


# --- GSM8K: the arithmetic check ----------------------------------------------------------------


def test_arithmetic_check_finds_errors_and_tolerates_rounding() -> None:
    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert check_arithmetic(gold).correct and check_arithmetic(gold).steps == 2
    rounded = check_arithmetic(
        "Each gets 10/3 = 3.33 cups, 2/3 = 0.67 or 2/3 = 0.66; 100 / 6 = 16 full packs."
    )
    assert rounded.correct and rounded.steps == 4
    wrong = check_arithmetic("So 10/3 = 3.4 and <<14*20=140>>140 minutes; 7/2 = 3.5")
    assert not wrong.correct and wrong.wrong_steps == 2
    assert wrong.reasons == (
        "step 1: 10/3 = 3.4 is wrong (10/3 = 3.33333)",
        "step 2: 14*20 = 140 is wrong (14*20 = 280)",
    )
    # Right arithmetic, wrong reasoning: the check cannot see it (it is a lower bound).
    assert check_arithmetic("She has 5 + 3 = 8 apples, so 8 * 2 = 16. #### 16").correct


def test_arithmetic_check_on_gsm8k_reference_solutions(shared_data) -> None:
    """The check flags few of GSM8K's own reference solutions (32 of the 8,792 of train and test when
    this was written, most of them slips in the dataset itself: "14*20=140", "4200+3000 = 8600")."""
    import json

    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").open(encoding="utf-8")]
    flagged = [r["answer"] for r in rows if not check_arithmetic(r["answer"]).correct]
    assert len(flagged) <= 0.01 * len(rows)
