"""The generated arith_graph dataset: determinism, disjoint splits, levels, correct reference solutions,
several valid chains and answers that cannot be guessed."""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import random
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from compute_optimal.data import DatasetError, Problem, arith_graph
from compute_optimal.data.arith_graph import generate_problem, generate_split
from compute_optimal.resolvers import conf_dir

EQUATION_RE = re.compile(r"(\d+(?: [-+*/] \d+)+) = (\d+)")
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
        "from compute_optimal.data.arith_graph import generate_split\n"
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


def test_a_generator_change_bumps_its_version() -> None:
    """A family's cache key holds the generator's VERSION, not the problems: a change to what the generator writes
    must bump it (then record the new digest here), or a cached family trained on other problems is reused."""
    digests = {1: "52fa9399493ec7721f0b5b9b83fdac864724be089f46c9905b62aa0776674a40"}
    assert _digest(generate_split("test", num_test=20, seed=5)) == digests[arith_graph.VERSION]


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
            assert p.id == f"arith_graph-{split}-L{p.level}-{i:05d}"
            assert p.subject is None


def _equations(solution: str) -> list[tuple[list[int], str, int]]:
    """(terms, operator, result) of each quantity a reference solution computes: one per sentence; a
    sentence's equations (``20 + 34 = 54 and 54 + 7 = 61``) combine its terms step by step."""
    out = []
    for sentence in solution.split(". "):
        written = EQUATION_RE.findall(sentence)
        if not written:
            continue
        terms, op = [], ""
        for expression, result in written:
            op = next(o for o in "+-*/" if f" {o} " in expression)
            a, b = (int(x) for x in expression.split(f" {op} "))
            assert OPS[op](a, b) == int(result), sentence  # every written equation is exact
            terms += [a, b]
        for _, result in written[:-1]:
            terms.remove(int(result))  # a partial result is the next step's term, not the quantity's
        out.append((terms, op, int(written[-1][1])))
    return out


def test_reference_solutions_are_correct(train: list[Problem], test_split: list[Problem]) -> None:
    for p in train + test_split:
        equations = _equations(p.solution)
        assert sum(len(terms) - 1 for terms, _, _ in equations) == p.level, p.solution  # level = operations
        computed: set[int] = set()
        for terms, op, result in equations:
            value = terms[0]
            for t in terms[1:]:
                value = OPS[op](value, t)
            assert value == result and 2 <= result <= arith_graph.MAX_VALUE, (p.id, terms, op, result)
            assert op == "+" or len(terms) == 2  # only sums take more than two terms
            # a term is a number of the question (factors may be words: "three times") or a quantity computed before
            for t in terms:
                assert t in computed or t in arith_graph.FACTORS or re.search(rf"\b{t}\b", p.question), (
                    p.id,
                    t,
                )
            computed.add(result)
        assert p.answer == str(equations[-1][2])
        assert p.solution.endswith(f"The answer is {p.answer}.")
        assert p.solution.count("The answer is") == 1
        assert p.solution.count(". ") == len(equations)  # one sentence per computed quantity, then the answer
        assert p.solution.count(" = ") == p.level  # one written equation per operation


def test_every_number_of_a_problem_names_one_thing(train: list[Problem]) -> None:
    """Given numbers, computed quantities and partial sums all differ: what the process check relies on."""
    for p in train:
        given = [int(n) for n in re.findall(r"\d+", p.question)]
        written = given + [r for _, _, r in _equations(p.solution)]
        for terms, op, _ in _equations(p.solution):
            if op == "+" and len(terms) == 3:
                written += [a + b for a, b in itertools.combinations(terms, 2)]
        assert len(written) == len(set(written)), p


def test_answers_cannot_be_guessed(train: list[Problem], test_split: list[Problem]) -> None:
    """Over 1,000 train and 1,000 test problems: the most frequent answer is at most 1% of them and two
    random problems share an answer at most 0.5% of the time; with levels 1-5 and with the study's levels 1-3
    (conf/dataset/arith_graph.yaml), whose answers are smaller."""
    study = (1, 2, 3)
    assert list(OmegaConf.load(conf_dir() / "dataset" / "arith_graph.yaml").loader.levels) == list(study)
    for problems in (
        train + generate_split("test", num_test=1000),
        generate_split("train", num_train=1000, num_test=1000, levels=study)
        + generate_split("test", num_test=1000, levels=study),
    ):
        counts = collections.Counter(p.answer for p in problems)
        n = len(problems)
        assert max(counts.values()) / n <= 0.01, counts.most_common(3)
        assert sum((c / n) ** 2 for c in counts.values()) <= 0.005


def test_problems_have_several_valid_chains(train: list[Problem]) -> None:
    """Most problems have quantities computed independently (several orders) or a sum of three terms
    (several groupings), more so at higher levels; about half state a quantity the answer does not need."""
    for level, share in ((2, 0.3), (3, 0.7), (4, 0.8), (5, 0.9)):
        problems = [p for p in train if p.level == level]
        several = 0
        for p in problems:
            equations = _equations(p.solution)
            results = {r for _, _, r in equations}
            independent = any(not set(a[0]) & results for a in equations[1:])  # not only a chain
            several += independent or any(len(t) == 3 for t, _, _ in equations)
        assert several >= share * len(problems), (level, several)
    # A distractor: a person defined from another ("more than", "as many as") whom the solution never computes.
    distractors = sum(
        any(
            (" than " in sentence or " as many " in sentence) and sentence.split()[0] not in p.solution
            for sentence in p.question.split("? ")[0].split(". ")
        )
        for p in train
    )
    assert 0.4 * len(train) <= distractors <= 0.6 * len(train), distractors


def test_variety_of_sentences_names_and_objects(train: list[Problem]) -> None:
    used_ops = collections.Counter(op for p in train for _, op, _ in _equations(p.solution))
    assert all(used_ops[op] >= 100 for op in "+-*/"), used_ops
    assert sum("together" in p.question or "combined" in p.question for p in train) >= 300
    assert sum("bags" in p.question or "boxes" in p.question or "packs" in p.question for p in train) >= 150
    owners = {re.match(r"\w+", p.question).group() for p in train}
    assert len(owners) >= 20
    assert sum(any(obj in p.question for obj in ("apples", "marbles", "stickers")) for p in train) < 300


def test_level_one_example_shape() -> None:
    question, solution, answer = generate_problem(1, random.Random("example"))
    assert question.endswith("?") and question.count("?") == 1
    assert solution.endswith(f"The answer is {answer}.")
    assert len(_equations(solution)) == 1
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
