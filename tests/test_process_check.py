"""The exact process check (arith) and the arithmetic check (GSM8K, a lower bound) on hand-written
completions, and on the generated reference solutions themselves."""

from __future__ import annotations

import random
import re
import time
from fractions import Fraction

import pandas as pd
import pytest

from compute_optimal import judge
from compute_optimal.data.arith import generate_split
from compute_optimal.data.arith_graph import generate_split as generate_graph_split
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


# An arith_graph level-4 problem: "Mia has 14 apples. Leo has 6 more apples than Mia. Zoe has 3 bags with 9 apples
# in each bag. Ava has 31 apples. Ben has as many apples as Leo, Zoe and Ava together. Omar has twice as
# many apples as Mia. How many apples does Ben have?" Leo and Zoe are independent; Ben's sum takes its
# three terms in any grouping; Omar (28) is a distractor.
GRAPH_SOLUTION = "Leo has 14 + 6 = 20 apples. Zoe has 3 * 9 = 27 apples. Ben has 20 + 27 + 31 = 78 apples. The answer is 78."
GRAPH_GOLD = "78"


def check(completion: str):
    return check_process(completion, SOLUTION, GOLD)


def check_graph(completion: str):
    return check_process(completion, GRAPH_SOLUTION, GRAPH_GOLD)


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
        ("76 + 63 = 139 and 139 + 94 = 233", [("76", "+", "63", "139"), ("139", "+", "94", "233")]),
        ("1 and 1/2 + 2 = 3.5", []),  # a mixed number is not read
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


# --- arith_graph: several valid chains ---------------------------------------------------------


def _passes(text: str) -> bool:
    return check_graph(text).correct


def test_graph_every_reference_solution_passes() -> None:
    problems = generate_graph_split("test", num_test=500, levels=[1, 2, 3, 4, 5], seed=3)
    assert {p.level for p in problems} == {1, 2, 3, 4, 5}
    for p in problems:
        verdict = check_process(p.solution, p.solution, p.answer)
        assert verdict.correct and not verdict.reasons, (p.solution, verdict)
        assert verdict.matched == verdict.required == p.level


def test_graph_a_correct_solution_passes() -> None:
    verdict = check_graph("14 + 6 = 20. Zoe has 3 * 9 = 27. Then 20 + 27 + 31 = 78. The answer is 78.")
    assert verdict.correct and verdict.answer_correct and not verdict.false_positive
    assert (verdict.steps, verdict.matched, verdict.required, verdict.extra_steps) == (3, 4, 4, 0)


def test_graph_every_order_that_respects_the_dependencies_passes() -> None:
    # Independent quantities in either order; a sum's terms in any order and grouping, also interleaved
    # with the other computations.
    assert _passes("Zoe has 3 * 9 = 27. Leo has 14 + 6 = 20. Ben has 20 + 27 + 31 = 78. The answer is 78.")
    assert _passes("9 * 3 = 27. 6 + 14 = 20. 31 + 27 = 58, 58 + 20 = 78. The answer is 78.")
    assert _passes("14 + 6 = 20; 20 + 31 = 51; 3 * 9 = 27; 51 + 27 = 78. The answer is 78.")
    assert _passes("3 * 9 = 27, 27 + 31 = 58. 14 + 6 = 20. 20 + 58 = 78. The answer is 78.")
    assert _passes("14 + 6 = 20. 3 * 9 = 27. 31 + 20 + 27 = 78. The answer is 78.")


def test_graph_a_correct_solution_in_other_words_passes() -> None:
    text = (
        "Leo has 6 more than Mia's 14: 14 plus 6 is 20.\n"
        "Zoe has 3 bags of 9 apples, so 3 times 9 makes 27 apples.\n"
        "Ben has 20 + 27 + 31 = 78 apples.\nThe answer is 78."
    )
    assert _passes(text)
    # A repeated step, a check between known values, a trivial step.
    assert _passes(
        "14 + 6 = 20, and 20 - 6 = 14 checks. 3 * 9 = 27, so 3 * 9 = 27. 20 + 27 + 31 = 78 * 1 = 78. "
        "The answer is 78."
    )


def test_graph_a_right_answer_by_luck_fails() -> None:
    verdict = check_graph("Ben has lots of apples. The answer is 78.")
    assert verdict.false_positive and not verdict.correct and verdict.answer_correct
    assert verdict.reasons == (
        "no computation written",
        "missing intermediate 20 (14 + 6 = 20)",
        "missing intermediate 27 (3 * 9 = 27)",
        "missing intermediate 78 (20 + 27 + 31 = 78)",
    )
    guessed = check_graph("14 * 6 = 84, 84 - 6 = 78. The answer is 78.")
    assert guessed.false_positive and "extra step 14 * 6 = 84 (step 1)" in guessed.reasons


def test_graph_two_errors_that_cancel_fail_and_both_are_reported() -> None:
    verdict = check_graph("14 + 6 = 21. 3 * 9 = 26. 21 + 26 + 31 = 78. The answer is 78.")
    assert verdict.false_positive and verdict.wrong_steps == 2
    assert verdict.reasons[:2] == (
        "step 1: 14 + 6 = 21 is wrong (14 + 6 = 20)",
        "step 2: 3 * 9 = 26 is wrong (3 * 9 = 27)",
    )


def test_graph_a_skipped_step_fails() -> None:
    verdict = check_graph("Leo has 20 apples. 3 * 9 = 27. 20 + 27 + 31 = 78. The answer is 78.")
    assert verdict.false_positive
    assert verdict.reasons == (
        "step 2: 20 + 27 = 47 is out of order (uses 20 before computing it)",
        "missing intermediate 20 (14 + 6 = 20)",
    )
    # A partial sum used without computing it (so the 27 computed before leads nowhere).
    assert check_graph("14 + 6 = 20. 3 * 9 = 27. 20 + 58 = 78. The answer is 78.").reasons == (
        "step 3: 20 + 58 = 78 is out of order (uses 58 before computing it)",
        "extra step 3 * 9 = 27 (step 2): the answer does not use it",
    )


def test_graph_an_extra_computation_fails() -> None:
    # The distractor (Omar), a sum nobody asked for, and a valid partial sum the answer does not use.
    for extra in ("Omar has 14 * 2 = 28.", "Mia and Ava have 14 + 31 = 45."):
        verdict = check_graph(f"14 + 6 = 20. {extra} 3 * 9 = 27. 20 + 27 + 31 = 78. The answer is 78.")
        assert verdict.false_positive and verdict.extra_steps == 1, verdict
        assert verdict.reasons[0].startswith("extra step ") and verdict.reasons[0].endswith("(step 2)")
    unused = check_graph(
        "14 + 6 = 20, 3 * 9 = 27, 27 + 31 = 58, 20 + 31 = 51, 51 + 27 = 78. The answer is 78."
    )
    assert unused.reasons == ("extra step 27 + 31 = 58 (step 3): the answer does not use it",)


def test_graph_steps_out_of_order_fail() -> None:
    verdict = check_graph("20 + 27 + 31 = 78. 14 + 6 = 20. 3 * 9 = 27. The answer is 78.")
    assert verdict.false_positive
    assert verdict.reasons == ("step 1: 20 + 27 = 47 is out of order (uses 20 before computing it)",)


def test_graph_a_difference_or_quotient_keeps_its_order() -> None:
    solution = "Leo has 90 - 12 = 78 apples. Zoe has 78 / 3 = 26 apples. The answer is 26."
    assert check_process("90 - 12 = 78. 78 / 3 = 26. The answer is 26.", solution, "26").correct
    # A check between known values passes; the operands swapped (a value used before it is known) do not.
    assert check_process("90 - 12 = 78. 78 / 3 = 26. 26 * 3 = 78. The answer is 26.", solution, "26").correct
    assert not check_process(
        "90 - 78 = 12. 90 - 12 = 78. 78 / 3 = 26. The answer is 26.", solution, "26"
    ).correct
    assert not check_process("90 - 12 = 78. 78 / 26 = 3. The answer is 26.", solution, "26").correct


def test_graph_a_wrong_final_answer_is_not_a_false_positive() -> None:
    verdict = check_graph("14 + 6 = 20. 3 * 9 = 27. 20 + 27 + 31 = 78. The answer is 79.")
    assert not verdict.correct and not verdict.answer_correct and not verdict.false_positive
    assert verdict.process_correct
    assert verdict.reasons[-1] == "final answer 79 is not the gold answer 78: not an answer-correct sample"


def test_graph_the_final_answer_is_read_as_the_grader_reads_it() -> None:
    # The grader's arith extraction: the first number after the last "The answer is".
    assert _passes("14 + 6 = 20. 3 * 9 = 27. 20 + 27 + 31 = 78. The answer is 78 apples.")
    assert not check_graph(
        "14 + 6 = 20. 3 * 9 = 27. 20 + 27 + 31 = 78. The answer is 78. The answer is 7."
    ).answer_correct


def test_graph_a_solution_that_is_not_a_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="not an arith reference solution"):
        check_process("1 + 1 = 2. The answer is 2.", "The answer is 2.", "2")
    with pytest.raises(ValueError, match="names two things"):  # 12 given, and 10 + 2 a partial sum
        check_process("x", "Leo has 12 + 3 = 15 apples. Ben has 15 + 10 + 2 = 27. The answer is 27.", "27")


_SENTENCE = re.compile(r"^(.* ha(?:s|ve)) (\d.*\d) (\D+)$")  # "Zoe has 14 + 6 = 20 apples"


def _quantity(sentence: str) -> tuple[str, str, list[str], str, str]:
    """(who, operator, terms, result, object) of a reference sentence; a sum's steps give its terms."""
    who, equations, obj = _SENTENCE.match(sentence).groups()
    steps = [re.fullmatch(r"(\d+) ([-+*/]) (\d+) = (\d+)", e).groups() for e in equations.split(" and ")]
    terms = [steps[0][0], *(b for _, _, b, _ in steps)]
    return who, steps[0][1], terms, steps[-1][3], obj


@pytest.mark.parametrize("seed", [11, 12])
def test_graph_every_valid_reordering_of_generated_solutions_passes_and_every_dropped_step_fails(
    seed: int,
) -> None:
    """Property check on generated problems: the reference's quantities in another order that respects
    the dependencies, each sum written flat with its terms reversed, passes; the reference without one
    of its sentences fails."""
    rng = random.Random(seed)
    problems = generate_graph_split("test", num_test=300, levels=[2, 3, 4, 5], seed=seed)
    reordered = 0
    for p in problems:
        quantities = [_quantity(s) for s in p.solution.split(". ")[:-1]]
        made = {q[3] for q in quantities}
        order: list[tuple] = []
        while len(order) < len(quantities):
            known = {q[3] for q in order}
            ready = [q for q in quantities if q not in order and set(q[2]) & made <= known]
            order.append(rng.choice(ready))
        text = ". ".join(
            f"{who} {f' {op} '.join(reversed(terms) if op in '+*' else terms)} = {result} {obj}"
            for who, op, terms, result, obj in order
        )
        text += f". The answer is {p.answer}."
        reordered += text != p.solution
        assert check_process(text, p.solution, p.answer).correct, (p.solution, text)
        sentences = p.solution.split(". ")
        for i in range(len(quantities)):
            dropped = ". ".join(sentences[:i] + sentences[i + 1 :])
            assert check_process(dropped, p.solution, p.answer).false_positive, (p.solution, dropped)
    assert reordered > 200


def test_sample_verdicts_count_unknowns_apart() -> None:
    problem = Problem("p1", "q", GRAPH_GOLD, GRAPH_SOLUTION, 4, None)
    frame = pd.DataFrame(
        {
            "problem_id": ["p1", "p1", "p1", "p1", "p2"],
            "sample_index": [0, 1, 2, 3, 0],
            "level": [4, 4, 4, 4, 1],
            "gold_answer": [GRAPH_GOLD] * 4 + ["7"],
            "completion": [GRAPH_SOLUTION, "The answer is 78.", "wrong", GRAPH_SOLUTION, "The answer is 7."],
            "correct": [True, True, False, True, True],
        }
    )
    verdicts = sample_verdicts(frame, {"p1": problem})  # p2's reference is not available: unknown
    assert list(verdicts["verdict"]) == ["correct", "incorrect", "correct", "unknown"]
    assert list(verdicts["level"]) == ["4", "4", "4", "1"]
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
