"""What "distinct" means, and the per-run data quality (curves and per-level / per-subject tables)."""

from __future__ import annotations

import pandas as pd
import pytest

from compute_optimal import analysis
from compute_optimal.analysis import AnalysisError, data_quality, normalize_solution, solution_classes


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("3 + 4 = 7. The answer is 7.", "3+4 = 7 .  The  answer is 7.\n"),
        ("He pays $1,000 in total.", "He pays 1000 in total."),
        ("The cost is 2.50 dollars.", "The cost is 2.5 dollars."),
        ("x = 3.0", "x = 3"),
        ("5 x 3 = 15", "5 × 3 = 15"),
        ("$2 \\times 3 = 6$", "2 \\cdot 3 = 6"),
        ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("ＴＨＥ ANSWER IS 7", "the answer is 7"),
        ("12{,}000 apples", "12000 apples"),
    ],
)
def test_formatting_differences_are_not_distinct(a: str, b: str) -> None:
    assert normalize_solution(a) == normalize_solution(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("3 + 4 = 7. The answer is 7.", "4 + 3 = 7. The answer is 7."),  # order of terms
        ("So 3 + 4 = 7.", "Thus 3 + 4 = 7."),  # wording
        ("2.05 + 1 = 3.05", "2.5 + 1 = 3.5"),  # numbers
        ("The values are 3, 400 and 5.", "The values are 3400 and 5."),  # a list is not a thousands separator
    ],
)
def test_content_differences_are_distinct(a: str, b: str) -> None:
    assert normalize_solution(a) != normalize_solution(b)


def test_solution_classes_exact_and_near_duplicates() -> None:
    texts = ["So 3 + 4 = 7.", "So 3+4=7.", "Thus 3 + 4 = 7.", "Completely different reasoning here: 7."]
    assert solution_classes(texts) == [2, 1, 1]
    assert solution_classes(texts, near_duplicate=0.8) == [3, 1]  # "so" vs "thus": near-duplicates
    assert solution_classes(texts, near_duplicate=1.0) == [2, 1, 1]
    assert solution_classes([]) == []
    with pytest.raises(AnalysisError):
        solution_classes(texts, near_duplicate=0)


def test_definition_is_documented_once() -> None:
    text = analysis.distinct_definition()
    assert "thousands separators" in text and "Near-duplicates: off" in text
    assert "threshold 0.9" in analysis.distinct_definition(0.9)


def frame_of(rows: list[tuple[str, int | None, str | None, str, bool]]) -> pd.DataFrame:
    """(problem_id, level, subject, completion, correct) rows -> a samples table."""
    out = []
    index: dict[str, int] = {}
    for pid, level, subject, text, ok in rows:
        out.append(
            {
                "problem_id": pid,
                "sample_index": index.setdefault(pid, 0),
                "level": level,
                "subject": subject,
                "completion": text,
                "correct": ok,
            }
        )
        index[pid] += 1
    return pd.DataFrame(out).astype({"level": "Int64"})


def test_data_quality_hand_computed() -> None:
    frame = frame_of(
        [
            ("p1", 1, None, "A", True),
            ("p1", 1, None, " A ", True),  # the same solution, other whitespace
            ("p1", 1, None, "B", True),
            ("p2", 1, None, "C", True),
            ("p2", 1, None, "wrong", False),
            ("p2", 1, None, "wrong", False),
            ("p3", 2, None, "wrong", False),
            ("p3", 2, None, "wrong", False),
            ("p3", 2, None, "wrong", False),
        ]
    )
    q = data_quality(frame, 3)
    # coverage@1 = mean(3/3, 1/3, 0); coverage@3 = 2/3.
    assert q["coverage_at_k"] == pytest.approx([(1 + 1 / 3) / 3, (1 + 2 / 3) / 3, 2 / 3])
    # diversity: p1 has classes [2, 1]: k=1 -> 2/3 + 1/3 = 1; k=3 -> 2. p2: [1]: 1/3, 2/3, 1.
    assert q["diversity_at_k"] == pytest.approx([(1 + 1 / 3) / 3, ((1 + 2 / 3) + 2 / 3) / 3, 1.0])
    assert q["distinct_correct"] == 3
    assert set(q["per_level"]) == {"1", "2"}
    level1 = q["per_level"]["1"]
    assert level1["num_problems"] == 2 and level1["coverage"] == 1.0
    assert level1["diversity"] == pytest.approx(1.5) and level1["accuracy"] == pytest.approx(4 / 6)
    assert level1["coverage_ci"][1] == 1.0 and 0 < level1["coverage_ci"][0] < 1
    assert q["per_level"]["2"]["coverage"] == 0.0 and q["per_level"]["2"]["coverage_ci"][0] == 0.0
    assert q["per_subject"] == {}


def test_diversity_by_reasoning_chain_counts_other_computations_not_other_words() -> None:
    frame = frame_of(
        [
            # p1: three texts, two chains (the first two write the same computations in other words)
            ("p1", 3, None, "Leo has 14 + 6 = 20. Zoe has 3 * 9 = 27. 20 + 27 = 47. The answer is 47.", True),
            ("p1", 3, None, "6 plus 14 is 20; 9 x 3 = 27, so 27 + 20 = 47 apples. The answer is 47.", True),
            ("p1", 3, None, "Zoe has 3 * 9 = 27. Leo has 14 + 6 = 20. 20 + 27 = 47. The answer is 47.", True),
            # p2: two samples with no computation are one (empty) chain; a wrong sample counts for nothing
            ("p2", 1, None, "It is 9. The answer is 9.", True),
            ("p2", 1, None, "Nine. The answer is 9.", True),
            ("p2", 1, None, "4 + 4 = 8. The answer is 8.", False),
        ]
    )
    q = data_quality(frame, 3)
    assert q["distinct_correct"] == 5 and q["distinct_chains"] == 3
    assert q["diversity_at_k"][-1] == pytest.approx((3 + 2) / 2)
    assert q["diversity_chains_at_k"][-1] == pytest.approx((2 + 1) / 2)
    # k = 1: one sample, one chain, for a problem with any correct sample: p1 3/3, p2 2/3.
    assert q["diversity_chains_at_k"][0] == pytest.approx((1 + 2 / 3) / 2)
    assert q["per_level"]["3"]["diversity_chains"] == pytest.approx(2.0)
    assert q["per_level"]["3"]["diversity"] == pytest.approx(3.0)


def test_groups_gsm8k_and_math_subjects() -> None:
    gsm = frame_of([("g1", None, None, "A", True), ("g2", None, None, "B", False)])
    assert list(data_quality(gsm, 1)["per_level"]) == ["all"]
    math = frame_of(
        [
            ("m1", 5, "Algebra", "A", True),
            ("m2", 3, "Geometry", "B", False),
            ("m3", 10, "Algebra", "C", False),
        ]
    )
    q = data_quality(math, 1)
    assert list(q["per_level"]) == ["3", "5", "10"]  # numeric order
    assert (
        q["per_subject"]["Algebra"]["coverage"] == 0.5 and q["per_subject"]["Geometry"]["num_problems"] == 1
    )


def test_bad_tables_are_refused() -> None:
    frame = frame_of([("p1", 1, None, "A", True), ("p1", 1, None, "A", True), ("p2", 1, None, "A", True)])
    with pytest.raises(AnalysisError, match="do not have 2 samples"):
        data_quality(frame, 2)
    with pytest.raises(AnalysisError, match="empty"):
        data_quality(frame.iloc[0:0], 2)
    with pytest.raises(AnalysisError, match="lacks columns"):
        data_quality(frame.drop(columns=["completion"]), 2)
