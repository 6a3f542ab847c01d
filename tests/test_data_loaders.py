"""GSM8K / MATH / MATH-500 loaders on the real files, malformed rows, and subset selection."""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import re
from pathlib import Path

import pytest

from compute_optimal.data import DatasetError, Problem, load_problems, select_subset

# ---------------------------------------------------------------- real data


def _load(shared: Path, fmt: str, split: str, rel: str) -> list[Problem]:
    return load_problems(fmt, split, files={split: str(shared / rel)})


def test_gsm8k_real_train(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="compute_optimal.data"):
        problems = _load(shared_data, "gsm8k", "train", "gsm8k/train.jsonl")
    assert len(problems) == 7473
    assert any(
        "reading local file" in r.getMessage() and "train.jsonl" in r.getMessage() for r in caplog.records
    )
    first = problems[0]
    assert first.id == "gsm8k-train-00000"
    assert first.question.startswith("Natalia sold clips to 48 of her friends in April")
    assert first.answer == "72"
    assert first.solution == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
    )
    assert (first.level, first.subject) == (None, None)
    assert problems[345].answer == "1080"  # "#### 1,080" in the file
    assert problems[5715].answer == "-7"
    assert sum(p.answer.startswith("-") for p in problems) == 3
    assert all(re.fullmatch(r"-?\d+", p.answer) for p in problems)
    assert not any("<<" in p.solution or ">>" in p.solution for p in problems)
    assert all(p.solution.rstrip().splitlines()[-1].startswith("####") for p in problems)  # kept
    assert len({p.id for p in problems}) == len(problems)


def test_gsm8k_real_test(shared_data: Path) -> None:
    problems = _load(shared_data, "gsm8k", "test", "gsm8k/test.jsonl")
    assert len(problems) == 1319
    assert problems[0].id == "gsm8k-test-00000"
    assert problems[0].answer == "18"
    assert problems[-1].id == "gsm8k-test-01318"
    assert sum(p.answer.startswith("-") for p in problems) == 2


def test_math_real_train_skips_empty_boxes(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="compute_optimal.data"):
        problems = _load(shared_data, "math", "train", "math/train.jsonl")
    assert len(problems) == 7500 - 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 2 row(s)" in warnings[0]
    assert "train/number_theory/7115.json" in warnings[0]
    assert "train/number_theory/7117.json" in warnings[0]
    by_id = {p.id: p for p in problems}
    assert "train/number_theory/7115.json" not in by_id
    first = problems[0]
    assert (first.id, first.answer, first.level, first.subject) == ("train/algebra/0.json", "0", 5, "Algebra")
    assert by_id["train/algebra/3.json"].answer == "8+4i"
    # "Level ?" -> None
    assert by_id["train/geometry/377.json"].level is None
    assert by_id["train/geometry/471.json"].level is None
    assert sum(p.level is None for p in problems) == 2
    assert {p.level for p in problems} == {None, 1, 2, 3, 4, 5}
    # "\boxed 2" without braces
    assert by_id["train/algebra/24014.json"].answer == "2"
    assert by_id["train/algebra/25040.json"].answer == "9"
    assert all(p.answer.strip() for p in problems)


def test_math_real_test_and_math500(shared_data: Path) -> None:
    test = _load(shared_data, "math", "test", "math/test.jsonl")
    assert len(test) == 5000
    assert all(p.level in {1, 2, 3, 4, 5} for p in test)
    m500 = _load(shared_data, "math500", "test", "math/math500_test.jsonl")
    assert len(m500) == 500
    first = m500[0]
    assert first.id == "test/precalculus/807.json"
    assert first.answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert (first.level, first.subject) == (2, "Precalculus")
    assert {p.level for p in m500} == {1, 2, 3, 4, 5}
    assert sum(p.level == 5 for p in m500) == 134
    # MATH-500 is a subset of the MATH test split.
    assert {p.id for p in m500} <= {p.id for p in test}


# ---------------------------------------------------------------- malformed rows


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD_GSM = json.dumps({"question": "Q?", "answer": "1 + 1 = <<1+1=2>>2\n#### 2"})
GOOD_MATH = json.dumps(
    {"problem": "P", "level": "Level 2", "type": "Algebra", "solution": r"$\boxed{3}$", "unique_id": "a"}
)
GOOD_500 = json.dumps(
    {"problem": "P", "solution": "s", "answer": "3", "subject": "Algebra", "level": 3, "unique_id": "u"}
)


@pytest.mark.parametrize(
    ("fmt", "good", "bad", "expected"),
    [
        ("gsm8k", GOOD_GSM, "{not json", "invalid JSON"),
        ("gsm8k", GOOD_GSM, "[1, 2]", "expected a JSON object, got list"),
        ("gsm8k", GOOD_GSM, '"a string"', "expected a JSON object, got str"),
        ("gsm8k", GOOD_GSM, json.dumps({"question": "Q"}), "missing required field 'answer'"),
        (
            "gsm8k",
            GOOD_GSM,
            json.dumps({"question": 5, "answer": "#### 1"}),
            "field 'question' must be a string",
        ),
        ("gsm8k", GOOD_GSM, json.dumps({"question": "Q", "answer": "42"}), "no '#### N'"),
        ("gsm8k", GOOD_GSM, json.dumps({"question": "Q", "answer": "so ####  "}), "nothing after '####'"),
        ("gsm8k", GOOD_GSM, json.dumps({"question": "  ", "answer": "#### 1"}), "empty question"),
        ("math", GOOD_MATH, json.dumps({"problem": "P", "level": "Level 1", "solution": "s"}), "'type'"),
        (
            "math",
            GOOD_MATH,
            json.dumps({"problem": "P", "level": "hard", "type": "Algebra", "solution": "s"}),
            "'level' must look like 'Level N'",
        ),
        (
            "math",
            GOOD_MATH,
            json.dumps({"problem": "", "level": "Level 1", "type": "Algebra", "solution": r"\boxed{1}"}),
            "empty question",
        ),
        (
            "math",
            GOOD_MATH,
            json.dumps({"problem": "P", "level": "Level 1", "type": "A", "solution": ["x"]}),
            "field 'solution' must be a string, got list",
        ),
        (
            "math500",
            GOOD_500,
            json.dumps({"problem": "P", "solution": "s", "answer": 3, "subject": "A", "level": 3}),
            "field 'answer' must be a string, got int",
        ),
        (
            "math500",
            GOOD_500,
            json.dumps({"problem": "P", "solution": "s", "answer": "3", "subject": "A", "level": True}),
            "field 'level' must be a string or an integer, got bool",
        ),
    ],
)
def test_malformed_row_names_file_and_line(
    tmp_path: Path, fmt: str, good: str, bad: str, expected: str
) -> None:
    split = "test"
    # A blank line before the bad row: line numbers count it.
    path = _write(tmp_path, f"bad_{fmt}.jsonl", [good, "", bad, good])
    with pytest.raises(DatasetError) as info:
        load_problems(fmt, split, files={split: str(path)})
    msg = str(info.value)
    assert f"bad_{fmt}.jsonl" in msg
    assert "line 3" in msg
    assert expected in msg


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(GOOD_GSM.encode() + b"\n" + b'{"question": "caf\xe9", "answer": "#### 1"}\n')
    with pytest.raises(DatasetError, match=r"latin1\.jsonl, line 2: not valid UTF-8"):
        load_problems("gsm8k", "train", files={"train": str(path)})


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "dup.jsonl", [GOOD_MATH, "", GOOD_MATH.replace('"a"', '"b"'), GOOD_MATH])
    with pytest.raises(DatasetError) as info:
        load_problems("math", "train", files={"train": str(path)})
    msg = str(info.value)
    assert "dup.jsonl" in msg
    assert "duplicate id 'a'" in msg
    assert "lines 1 and 4" in msg


def test_blank_lines_skipped_and_ids_by_row_index(tmp_path: Path) -> None:
    path = _write(tmp_path, "gsm.jsonl", ["", GOOD_GSM, "   ", "", GOOD_GSM.replace("Q?", "R?")])
    problems = load_problems("gsm8k", "train", files={"train": str(path)})
    assert [p.id for p in problems] == ["gsm8k-train-00000", "gsm8k-train-00001"]
    assert [p.question for p in problems] == ["Q?", "R?"]
    assert problems[0].solution == "1 + 1 = 2\n#### 2"
    assert problems[0].answer == "2"


def test_math_rows_without_answer_are_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    row = {"problem": "P", "level": "Level ?", "type": "Geometry"}
    lines = [
        json.dumps({**row, "solution": r"so $\boxed{\frac{1}{2}}$"}),  # no unique_id -> generated id
        json.dumps({**row, "solution": r"empty $\boxed{}$", "unique_id": "x/empty"}),
        json.dumps({**row, "solution": "no box at all", "unique_id": "x/none"}),
        json.dumps({**row, "solution": r"$\boxed{7}$", "unique_id": "x/ok"}),
    ]
    path = _write(tmp_path, "m.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="compute_optimal.data"):
        problems = load_problems("math", "test", files={"test": str(path)})
    assert [(p.id, p.answer, p.level) for p in problems] == [
        ("math-test-00000", r"\frac{1}{2}", None),
        ("x/ok", "7", None),
    ]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 2 row(s)" in warning
    assert "x/empty" in warning
    assert "x/none" in warning


# ---------------------------------------------------------------- sources and arguments


def test_missing_file_without_hub_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "train.jsonl"
    with pytest.raises(DatasetError) as info:
        load_problems("gsm8k", "train", files={"train": str(missing)})
    msg = str(info.value)
    assert str(missing) in msg
    assert "hub_id" in msg
    assert "files.train" in msg


def test_no_file_configured_without_hub() -> None:
    with pytest.raises(DatasetError, match="no local file is set for split 'test'"):
        load_problems("math", "test", files={"train": "x.jsonl"})
    with pytest.raises(DatasetError, match="no local file"):
        load_problems("math500", "test")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="`datasets` is installed")
def test_hub_fallback_without_datasets_package(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="pip install datasets"):
        load_problems("gsm8k", "test", files={"test": str(tmp_path / "no.jsonl")}, hub_id="openai/gsm8k")


def test_local_file_wins_over_hub(tmp_path: Path) -> None:
    path = _write(tmp_path, "g.jsonl", [GOOD_GSM])
    # hub_id is never used (and `datasets` is not needed) when the file exists.
    problems = load_problems("gsm8k", "test", files={"test": str(path)}, hub_id="openai/gsm8k")
    assert len(problems) == 1


def test_unknown_format_and_split_list_valid_ones() -> None:
    with pytest.raises(DatasetError) as info:
        load_problems("arith", "train")
    assert all(name in str(info.value) for name in ("gsm8k", "math", "math500"))
    with pytest.raises(DatasetError) as info:
        load_problems("math500", "train")
    assert "valid splits: test" in str(info.value)
    with pytest.raises(DatasetError, match="valid splits: train, test"):
        load_problems("gsm8k", "validation")


# ---------------------------------------------------------------- select_subset


def _problems(n: int) -> list[Problem]:
    return [Problem(id=f"p{i:03d}", question=f"q{i}", answer=str(i), solution="") for i in range(n)]


def test_select_subset_all_when_no_limit() -> None:
    ps = _problems(10)
    assert select_subset(ps, None, seed=0) == ps
    assert select_subset(ps, 10, seed=0) == ps
    assert select_subset(ps, 50, seed=3) == ps
    assert select_subset(tuple(ps), None, seed=0) == ps  # always a list


def test_select_subset_seeded_and_in_original_order() -> None:
    ps = _problems(100)
    a = select_subset(ps, 10, seed=1)
    assert len(a) == 10
    assert len({p.id for p in a}) == 10
    assert a == select_subset(ps, 10, seed=1)
    assert [p.id for p in a] == sorted(p.id for p in a)  # original order kept
    assert a != select_subset(ps, 10, seed=2)
    assert a != ps[:10]  # random, not a prefix
    # Pinned: random.Random(1).sample(range(100), 10), sorted.
    assert [p.id for p in a] == [f"p{i:03d}" for i in sorted(random.Random(1).sample(range(100), 10))]


def test_select_subset_rejects_limit_below_one() -> None:
    for limit in (0, -1):
        with pytest.raises(DatasetError, match="limit must be >= 1"):
            select_subset(_problems(5), limit, seed=0)
