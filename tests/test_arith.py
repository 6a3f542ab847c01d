"""The generated arith dataset: determinism, disjoint splits, levels and correct reference solutions."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import re
import subprocess
import sys

import pytest

from compute_optimal.data import DatasetError, Problem, arith
from compute_optimal.data.arith import generate_problem, generate_split

STEP_RE = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


@pytest.fixture(scope="module")
def train() -> list[Problem]:
    return generate_split("train")


@pytest.fixture(scope="module")
def test_split() -> list[Problem]:
    return generate_split("test")


def _digest(problems: list[Problem]) -> str:
    return hashlib.sha256(json.dumps([p.to_dict() for p in problems]).encode()).hexdigest()


def test_same_arguments_same_problems(train: list[Problem]) -> None:
    assert generate_split("train") == train
    assert generate_split("test", num_test=50, seed=7) == generate_split("test", num_test=50, seed=7)


def test_different_seed_different_problems(test_split: list[Problem]) -> None:
    other = generate_split("test", seed=1)
    assert len(other) == len(test_split)
    assert sum(a.question != b.question for a, b in zip(other, test_split, strict=True)) > 190


def test_deterministic_across_processes(train: list[Problem], test_split: list[Problem]) -> None:
    """Another interpreter with another hash seed builds byte-identical splits."""
    code = (
        "import hashlib, json\n"
        "from compute_optimal.data.arith import generate_split\n"
        "for split in ('train', 'test'):\n"
        "    ps = generate_split(split)\n"
        "    print(hashlib.sha256(json.dumps([p.to_dict() for p in ps]).encode()).hexdigest())\n"
    )
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
        ).stdout.split()
        assert out == [_digest(train), _digest(test_split)]


def test_train_and_test_are_disjoint(train: list[Problem], test_split: list[Problem]) -> None:
    assert not {p.question for p in train} & {p.question for p in test_split}
    assert len({p.question for p in train}) == len(train)
    assert len({p.question for p in test_split}) == len(test_split)


def test_test_split_does_not_depend_on_num_train(test_split: list[Problem]) -> None:
    assert generate_split("test", num_train=5) == test_split
    small_train = generate_split("train", num_train=40, num_test=200)
    assert not {p.question for p in small_train} & {p.question for p in test_split}


def test_sizes_and_level_counts(train: list[Problem], test_split: list[Problem]) -> None:
    assert len(train) == 1000
    assert len(test_split) == 200
    assert collections.Counter(p.level for p in train) == {lv: 200 for lv in range(1, 6)}
    assert collections.Counter(p.level for p in test_split) == {lv: 40 for lv in range(1, 6)}
    few = generate_split("test", num_test=5, levels=(1, 3))
    assert [p.level for p in few] == [1, 3, 1, 3, 1]
    assert generate_split("train", num_train=0) == []


def test_ids_unique_and_well_formed(train: list[Problem], test_split: list[Problem]) -> None:
    for split, problems in (("train", train), ("test", test_split)):
        assert len({p.id for p in problems}) == len(problems)
        for i, p in enumerate(problems):
            assert p.id == f"arith-{split}-L{p.level}-{i:05d}"
            assert p.subject is None


def test_reference_solutions_are_correct(train: list[Problem], test_split: list[Problem]) -> None:
    for p in train + test_split:
        steps = STEP_RE.findall(p.solution)
        assert len(steps) == p.level, p.solution
        prev = None
        for a, op, b, c in steps:
            a, b, c = int(a), int(b), int(c)
            assert OPS[op](a, b) == c, (p.id, a, op, b, c)
            assert 2 <= c <= arith.MAX_VALUE
            if prev is not None:
                assert a == prev, p.solution  # each step works on the previous result
            prev = c
        assert p.answer == str(prev)
        assert p.solution.endswith(f"The answer is {p.answer}.")
        assert p.solution.count("The answer is") == 1
        # one sentence per step, then the answer sentence
        assert p.solution.count(". ") + 1 == p.level + 1
        # the first operand is the start value stated in the question's first sentence
        first_sentence = p.question.split(". ")[0]
        assert re.search(rf"\b{steps[0][0]}\b", first_sentence), p.question


def test_questions_have_one_sentence_per_step(train: list[Problem]) -> None:
    for p in train:
        assert p.question.endswith("?")
        assert p.question.count("?") == 1
        assert p.question.count(".") == p.level + 1  # start sentence + one per operation
        assert not re.search(r"-\s*\d", p.question)  # no negative numbers
        assert all(int(n) >= 2 for n in re.findall(r"\d+", p.question))


def test_variety_of_templates_names_and_objects(train: list[Problem]) -> None:
    per_op = collections.Counter(t.op for t in arith.TEMPLATES)
    assert set(per_op) == {"add", "sub", "mul", "div"}
    assert min(per_op.values()) >= 8
    used_ops = collections.Counter(op for p in train for _, op, _, _ in STEP_RE.findall(p.solution))
    assert all(used_ops[op] >= 150 for op in "+-*/"), used_ops
    owners = {p.question.split()[0] for p in train}
    assert len(owners) >= 20
    assert sum(any(obj in p.question for obj in ("apples", "marbles", "stickers")) for p in train) < 500


def test_level_one_example_shape() -> None:
    question, solution, answer = generate_problem(1, random.Random("example"))
    assert question.count(".") == 2
    assert question.endswith("?")
    assert solution.endswith(f"The answer is {answer}.")
    assert len(STEP_RE.findall(solution)) == 1
    assert generate_problem(1, random.Random("example")) == (question, solution, answer)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split": "validation"},
        {"split": "train", "levels": ()},
        {"split": "train", "levels": (0, 1)},
        {"split": "test", "num_test": -1},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    split = kwargs.pop("split")
    with pytest.raises(DatasetError):
        generate_split(split, **kwargs)
