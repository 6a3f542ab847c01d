"""Arith graph problems: grade-school word problems with several valid solutions, generated offline and seeded.

The successor of :mod:`compute_optimal.data.arith` (one running quantity, one valid chain of computations,
answers a guess often hits), built so that the paper's diversity argument can be tested: a problem has
several valid chains, and its answer cannot be guessed. As in arith, the **level is the number of
arithmetic operations** (1-5) that the answer needs.

Design (after the iGSM problems of *Physics of Language Models*, part 2.1):

* A problem is a small graph of quantities: people, each holding some number of one kind of object.
  A person's amount is given ("Mia has 14 apples."), a product of two given numbers ("Leo has 4 bags
  with 7 apples in each."), defined from another person's ("Zoe has 6 more apples than Mia.", "three
  times as many", "a third as many") or the sum of two or three other people's ("Ben has as many
  apples as Mia and Zoe together."). The question asks for one person's amount or for the total of
  two or three people.
* Quantities that do not depend on each other can be computed in any order, and a sum of three
  quantities in any grouping (``20 + 34 = 54, 54 + 7 = 61`` or ``34 + 7 = 41, 41 + 20 = 61``): a
  problem has several valid chains of computations. The reference solution is one of them: the
  needed quantities in a random order that respects the dependencies, each sum's terms shuffled, so
  the models trained on these solutions learn that the order is free.
* Half of the problems state one more quantity that the answer does not need (a distractor).
* The question's sentences come in a random order in which every person is introduced before a
  sentence refers to them.
* Every number of a problem differs from every other: the given numbers, each computed quantity and
  each partial sum of a three-term sum. So every value written in a solution names one thing, which
  is what lets :mod:`compute_optimal.process_check` tell a valid step from a lucky one by values alone.
* Numbers: given amounts in [10, 99], bags 2-9 of 3-15, "more"/"fewer" 3-30, factors 2-5; every
  quantity an integer in [2, MAX_VALUE], division exact. Answers spread over hundreds of values, so a
  guess is rarely right (``tests/test_arith.py`` measures the answer distribution).
* Reference solution: one sentence per computed quantity, which restates the question's sentence that
  defines it and then computes it (``Zoe has 6 more apples than Mia, so Zoe has 14 + 6 = 20 apples.``;
  a sum of three step by step: ``..., so Ben has 20 + 34 = 54 and 54 + 7 = 61 apples.``; the question's
  total: ``Together, Mia and Ben have ...``), then ``The answer is N.``; operators are ASCII. Restating
  the sentence is what lets models of a million parameters learn the task (measured: a 1M model trained
  on 6M tokens of solutions without it solved 0-7% of level 3-5 problems by process).
* Determinism: problem ``i`` of a split draws from
  ``random.Random("arith_graph:{seed}:{split}:{i}:{attempt}")``
  (string seeds are hashed with SHA-512 by ``random``, never with ``hash()``), so the same arguments
  give the same problems in any process. ``attempt`` goes up when a question repeats an earlier one of
  the split or, for train, any test question: train and test never share a question text, and the test
  split does not depend on ``num_train``.
* Levels are assigned round-robin, so the split is spread evenly over ``levels``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from compute_optimal.data.arith import SPLITS as SPLITS  # the generator interface: re-exported
from compute_optimal.data.arith import generated_split
from compute_optimal.data.problem import DatasetError, Problem

# Bumped whenever the same arguments generate other problems: a trained family's cache key includes it
# (tests/test_arith_graph.py pins a digest of a small split to it, so a change that forgets to bump it fails).
VERSION = 1
MAX_VALUE = 999  # largest quantity
GIVEN_RANGE = (10, 99)  # a given amount
BAGS_RANGE = (2, 9)  # bags (or boxes) ...
PER_BAG_RANGE = (3, 15)  # ... and what each holds
STEP_RANGE = (3, 30)  # "more" / "fewer"
FACTORS = (2, 3, 4, 5)  # "times as many" / "a third as many"
DISTRACTOR_SHARE = 0.5  # problems that state one quantity the answer does not need


NAMES: tuple[str, ...] = (
    "Mia", "Leo", "Ava", "Noah", "Zoe", "Liam", "Emma", "Omar", "Lucy", "Ravi", "Nora", "Sam", "Priya",
    "Ben", "Hana", "Diego", "Ella", "Kofi", "Grace", "Jack", "Aisha", "Tom", "Sofia", "Max", "Lily",
    "Ethan", "Yuki", "Felix", "Rosa", "Owen", "Maya", "Carlos",
)  # fmt: skip
OBJECTS: tuple[str, ...] = (
    "apples", "marbles", "stickers", "pencils", "books", "cookies", "seashells", "trading cards",
    "toy cars", "balloons", "stamps", "beads", "crayons", "coins", "ribbons", "oranges", "buttons",
    "postcards", "erasers", "muffins",
)  # fmt: skip
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_TIMES = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
_FRACTION = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}

# One sentence pattern per way a quantity is defined; {N} the person, {B} the one it is defined from.
GIVEN: tuple[str, ...] = (
    "{N} has {x} {obj}.",
    "{N} owns {x} {obj}.",
    "{N} collected {x} {obj}.",
    "There are {x} {obj} in {N}'s bag.",
)
BAGS: tuple[str, ...] = (
    "{N} has {k} bags with {m} {obj} in each bag.",
    "{N} has {k} boxes, and each box holds {m} {obj}.",
    "{N} buys {k} packs of {obj} with {m} {obj} in each pack.",
)
COMPARE: dict[str, tuple[str, ...]] = {
    "add": ("{N} has {k} more {obj} than {B}.", "{N} owns {k} more {obj} than {B} does."),
    "sub": ("{N} has {k} fewer {obj} than {B}.", "{N} owns {k} fewer {obj} than {B} does."),
    "mul": ("{N} has {kt} as many {obj} as {B}.", "{N} has {k} times as many {obj} as {B}."),
    "div": ("{N} has {frac} as many {obj} as {B}.", "{N} owns {frac} as many {obj} as {B} does."),
}
TOGETHER: tuple[str, ...] = (
    "{N} has as many {obj} as {members} together.",
    "{N} has as many {obj} as {members} combined.",
)
ASK_ONE: tuple[str, ...] = ("How many {obj} does {N} have?", "How many {obj} does {N} have in all?")
ASK_TOTAL: tuple[str, ...] = (
    "How many {obj} do {members} have together?",
    "How many {obj} do {members} have in total?",
)


@dataclass
class Quantity:
    """One person's amount (or, for the question's total, the unnamed sum) and how it is defined.

    kind: "given", "bags" (k * m), "compare" (from ``inputs[0]`` by ``op`` and ``k``), "together"
    (the sum of ``inputs``), "total" (the question's sum; no person).
    """

    name: str
    kind: str
    inputs: list[Quantity] = field(default_factory=list)
    op: str = ""
    k: int = 0
    m: int = 0
    value: int = 0

    @property
    def operations(self) -> int:
        return {"given": 0, "bags": 1, "compare": 1}.get(self.kind, len(self.inputs) - 1)


def _members(names: Sequence[str]) -> str:
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _structure(level: int, rng: random.Random, names: list[str]) -> Quantity:
    """A tree of quantities whose answer needs exactly ``level`` operations (values not yet drawn)."""
    if level >= 2 and rng.random() < 0.5:  # the question asks for a total of 2 or 3 people
        size = rng.choice([2, 3])
        root = Quantity("", "total", [Quantity(names.pop(), "given") for _ in range(size)])
        leaves = list(root.inputs)
    else:
        root = Quantity(names.pop(), "given")
        leaves = [root]
    spent = root.operations
    while spent < level:
        person = rng.choice(leaves)
        remaining = level - spent
        kinds = ["compare", "compare", "bags", "together2"] + (["together3"] if remaining >= 2 else [])
        kind = rng.choice(kinds)
        if kind == "bags":
            person.kind = "bags"
            leaves.remove(person)
        elif kind == "compare":
            base = Quantity(names.pop(), "given")
            person.kind, person.inputs = "compare", [base]
            leaves[leaves.index(person)] = base
        else:
            size = int(kind[-1])
            members = [Quantity(names.pop(), "given") for _ in range(size)]
            person.kind, person.inputs = "together", members
            leaves.remove(person)
            leaves += members
        spent += person.operations
        if not leaves:  # every person is computed from given numbers: nothing left to expand
            break
    return root


def _walk(q: Quantity) -> list[Quantity]:
    """``q`` and everything it depends on, inputs before the quantity that uses them."""
    out: list[Quantity] = []
    for i in q.inputs:
        out += _walk(i)
    return [*out, q]


def _compare_ops(base: int) -> list[str]:
    ops = []
    if base + STEP_RANGE[0] <= MAX_VALUE:
        ops.append("add")
    if base - STEP_RANGE[0] >= 2:
        ops.append("sub")
    if base * FACTORS[0] <= MAX_VALUE:
        ops.append("mul")
    if any(base % k == 0 and base // k >= 2 for k in FACTORS):
        ops.append("div")
    return ops


def _draw_compare(q: Quantity, rng: random.Random) -> None:
    """Draw the operation and number of a quantity defined from ``q.inputs[0]`` (whose value is drawn)."""
    base = q.inputs[0].value
    q.op = rng.choice(_compare_ops(base))
    if q.op == "add":
        q.k = rng.randint(STEP_RANGE[0], min(STEP_RANGE[1], MAX_VALUE - base))
        q.value = base + q.k
    elif q.op == "sub":
        q.k = rng.randint(STEP_RANGE[0], min(STEP_RANGE[1], base - 2))
        q.value = base - q.k
    elif q.op == "mul":
        q.k = rng.choice([k for k in FACTORS if base * k <= MAX_VALUE])
        q.value = base * q.k
    else:
        q.k = rng.choice([k for k in FACTORS if base % k == 0 and base // k >= 2])
        q.value = base // q.k


def _draw_values(root: Quantity, rng: random.Random) -> bool:
    """Draw every number bottom-up; False when a quantity falls out of [2, MAX_VALUE]."""
    for q in _walk(root):
        if q.kind == "given":
            q.value = rng.randint(*GIVEN_RANGE)
        elif q.kind == "bags":
            q.k, q.m = rng.randint(*BAGS_RANGE), rng.randint(*PER_BAG_RANGE)
            q.value = q.k * q.m
        elif q.kind == "compare":
            _draw_compare(q, rng)
        else:
            q.value = sum(i.value for i in q.inputs)
        if not 2 <= q.value <= MAX_VALUE:
            return False
    return True


def numbers(quantities: Sequence[Quantity]) -> list[int]:
    """Every number a problem's solutions may write: given numbers, computed quantities, partial sums."""
    out: list[int] = []
    for q in quantities:
        if q.kind == "given":
            out.append(q.value)
        elif q.kind == "bags":
            out += [q.k, q.m, q.value]
        elif q.kind == "compare":
            out += [q.k, q.value]
        else:
            values = [i.value for i in q.inputs]
            out.append(q.value)
            if len(values) == 3:
                out += [a + b for a, b in itertools.combinations(values, 2)]
    return out


def _statement(q: Quantity, obj: str, rng: random.Random) -> str:
    if q.kind == "given":
        return rng.choice(GIVEN).format(N=q.name, x=q.value, obj=obj)
    if q.kind == "bags":
        return rng.choice(BAGS).format(N=q.name, k=q.k, m=q.m, obj=obj)
    if q.kind == "compare":
        return rng.choice(COMPARE[q.op]).format(
            N=q.name, B=q.inputs[0].name, k=q.k, kt=_TIMES.get(q.k, ""), frac=_FRACTION.get(q.k, ""), obj=obj
        )
    return rng.choice(TOGETHER).format(N=q.name, members=_members([i.name for i in q.inputs]), obj=obj)


def _solution_step(q: Quantity, statement: str, obj: str, rng: random.Random) -> str:
    """One sentence computing ``q``: the question's sentence that defines it, then the computation (a sum
    of three step by step, its terms in a random order)."""
    if q.kind == "bags":
        expression = f"{q.k} * {q.m} = {q.value}"
    elif q.kind == "compare":
        expression = f"{q.inputs[0].value} {_SYMBOL[q.op]} {q.k} = {q.value}"
    else:
        terms = [i.value for i in q.inputs]
        rng.shuffle(terms)
        steps, total = [], terms[0]
        for t in terms[1:]:
            steps.append(f"{total} + {t} = {total + t}")
            total += t
        expression = " and ".join(steps)
    if not q.name:  # the question's total
        return f"Together, {_members([i.name for i in q.inputs])} have {expression} {obj}."
    return f"{statement[:-1]}, so {q.name} has {expression} {obj}."


def _linear_extension(items: list[Quantity], rng: random.Random) -> list[Quantity]:
    """A random order of ``items`` in which each comes after the items among its inputs."""
    pending, done, order = list(items), set(), []
    while pending:
        ready = [q for q in pending if all(id(i) in done for i in q.inputs if i in items)]
        q = rng.choice(ready)
        pending.remove(q)
        done.add(id(q))
        order.append(q)
    return order


def generate_problem(level: int, rng: random.Random) -> tuple[str, str, str]:
    """One problem whose answer needs ``level`` operations: (question, solution, answer).

    All randomness comes from ``rng``, so a seeded rng gives the same problem anywhere.
    """
    if not isinstance(level, int) or isinstance(level, bool) or level < 1:
        raise DatasetError(f"arith_graph level must be a positive integer, got {level!r}")
    for _ in range(1000):
        names = list(NAMES)
        rng.shuffle(names)  # people are drawn from this list without replacement
        root = _structure(level, rng, names)
        needed = _walk(root)
        if sum(q.operations for q in needed) != level or not _draw_values(root, rng):
            continue
        people = [q for q in needed if q.name]
        extra = []
        if rng.random() < DISTRACTOR_SHARE:  # a person defined from one of them, whom nobody needs
            extra = [Quantity(names.pop(), "compare", [rng.choice(people)])]
            _draw_compare(extra[0], rng)
        values = numbers(needed + extra)
        if len(set(values)) == len(values):
            break
    else:  # pragma: no cover - every level finds distinct numbers within a few draws
        raise DatasetError(f"arith_graph: no level-{level} problem with distinct numbers in 1000 draws")
    obj = rng.choice(OBJECTS)
    statements = {id(q): _statement(q, obj, rng) for q in _linear_extension(people + extra, rng)}
    question = list(statements.values())
    if root.kind == "total":
        members = [i.name for i in root.inputs]
        question.append(rng.choice(ASK_TOTAL).format(members=_members(members), obj=obj))
    else:
        question.append(rng.choice(ASK_ONE).format(N=root.name, obj=obj))
    computed = [q for q in needed if q.kind != "given"]
    solution = [
        _solution_step(q, statements.get(id(q), ""), obj, rng) for q in _linear_extension(computed, rng)
    ]
    solution.append(f"The answer is {root.value}.")
    return " ".join(question), " ".join(solution), str(root.value)


def generate_split(
    split: str,
    *,
    num_train: int = 1000,
    num_test: int = 200,
    levels: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
) -> list[Problem]:
    """The ``split`` ("train"/"test") of the arith_graph dataset, spread evenly over ``levels``.

    Same arguments -> the same list in any process. Train never repeats a test question,
    which is why building train also builds the (cheap) test split.
    """
    return generated_split(
        "arith_graph",
        generate_problem,
        split,
        num_train=num_train,
        num_test=num_test,
        levels=levels,
        seed=seed,
    )
