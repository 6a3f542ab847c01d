"""Arith: grade-school arithmetic word problems the project generates itself, offline and seeded.

Why it exists: GSM8K and MATH are far beyond the tiny models an offline laptop or CI run
can afford, so every solve rate there is ~0 and compute-matched comparisons say nothing.
Arith gives a difficulty knob small models can actually move along: the **level is the
number of arithmetic operations** (1-5) a solution has to chain. A 135M instruct model
solves some level-1 problems and almost no level-5 ones, so solve rates, coverage@k and
the weak-vs-strong sampling trade-off of the paper all have room to show up.

Design:

* A problem tracks one running quantity: an owner (a named person) holding some objects.
  The question opens with one sentence giving the start value, then has exactly one
  sentence per operation, then one question sentence, e.g. (level 1)
  ``Mia has 7 apples. She buys 5 more apples. How many apples does Mia have now?``
* Each operation (add, subtract, multiply, divide) has 8-10 story templates. Some change
  the owner ("Leo has 3 times as many apples as Mia has.") or the object ("She trades each
  of her apples for 2 stickers."), so problems are not one fixed sentence pattern.
  Pronouns are used only when the previous sentence mentioned nobody but the owner.
* Numbers stay small and positive: every intermediate value is an integer in
  [2, MAX_VALUE]; subtraction never goes below 2, division is always exact. An operation
  that cannot keep those bounds is not drawn at that step.
* The reference solution has one sentence per operation showing the computation
  (``... so Mia has 7 + 5 = 12 apples.``) and ends with ``The answer is N.``; the gold
  answer is ``str(N)``. Operators are ASCII ``+ - * /`` so solutions are easy to check.
* Determinism: problem ``i`` of a split draws from ``random.Random("arith:{seed}:{split}:{i}:{attempt}")``
  (string seeds are hashed with SHA-512 by ``random``, never with ``hash()``), so the same
  arguments give the same problems in any process. ``attempt`` goes up when a question
  repeats an earlier one of the split or, for train, any test question: train and test
  never share a question text, and the test split does not depend on ``num_train``.
* Levels are assigned round-robin, so the split is spread evenly over ``levels``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compute_optimal.data.problem import DatasetError, Problem

MAX_VALUE = 200  # largest intermediate quantity
START_RANGE = (2, 20)  # first quantity
STEP_RANGE = (2, 15)  # amounts added or taken away
FACTORS = (2, 3, 4, 5)  # multipliers and divisors

SPLITS = ("train", "test")

# (name, gender); gender picks the pronouns.
NAMES: tuple[tuple[str, str], ...] = (
    ("Mia", "f"), ("Leo", "m"), ("Ava", "f"), ("Noah", "m"), ("Zoe", "f"), ("Liam", "m"),
    ("Emma", "f"), ("Omar", "m"), ("Lucy", "f"), ("Ravi", "m"), ("Nora", "f"), ("Sam", "m"),
    ("Priya", "f"), ("Ben", "m"), ("Hana", "f"), ("Diego", "m"), ("Ella", "f"), ("Kofi", "m"),
    ("Grace", "f"), ("Jack", "m"), ("Aisha", "f"), ("Tom", "m"), ("Sofia", "f"), ("Max", "m"),
    ("Lily", "f"), ("Ethan", "m"), ("Yuki", "f"), ("Felix", "m"), ("Rosa", "f"), ("Owen", "m"),
    ("Maya", "f"), ("Carlos", "m"),
)  # fmt: skip
OBJECTS: tuple[str, ...] = (
    "apples", "marbles", "stickers", "pencils", "books", "cookies", "seashells", "trading cards",
    "toy cars", "balloons", "stamps", "beads", "crayons", "coins", "ribbons", "oranges", "buttons",
    "postcards", "erasers", "muffins",
)  # fmt: skip
_PRONOUNS = {
    "f": {"subj": "she", "obj": "her", "pos": "her", "refl": "herself"},
    "m": {"subj": "he", "obj": "him", "pos": "his", "refl": "himself"},
}
_TIMES = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
_FRACTION = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}
_MULTIPLY_VERB = {2: "doubles", 3: "triples", 4: "quadruples"}
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


@dataclass(frozen=True)
class Template:
    """One sentence pattern for one operation.

    kind: "event" (the owner's amount changes), "compare" (a new person {N} becomes the
    owner), "trade" (the owner swaps to a new object {obj2}).
    solo: the sentence mentions no one but the owner, so the next one may say "she"/"he".
    Placeholders: {S}/{s} owner as subject/object (pronoun or name), {pos} possessive
    pronoun, {Pos} "Her"/"Mia's", {owner} the owner's name, {O} another person, {N} the new
    owner, {than} "Mia has" / "Mia has now", {b} amount, {k} factor, {kt} "three times",
    {frac} "a third", {kverb} "triples", {obj}/{obj2} objects.
    """

    op: str
    text: str
    kind: str = "event"
    solo: bool = True
    factors: tuple[int, ...] = FACTORS


TEMPLATES: tuple[Template, ...] = (
    # add
    Template("add", "{S} buys {b} more {obj}."),
    Template("add", "{S} finds {b} more {obj}."),
    Template("add", "{O} gives {s} {b} more {obj}.", solo=False),
    Template("add", "{S} wins {b} {obj} at the school fair."),
    Template("add", "{S} receives {b} {obj} as a birthday present."),
    Template("add", "{S} collects another {b} {obj}."),
    Template("add", "{S} gets {b} more {obj} from {O}.", solo=False),
    Template("add", "{S} earns {b} {obj} for helping {O}.", solo=False),
    Template("add", "{N} has {b} more {obj} than {than}.", kind="compare", solo=False),
    Template("add", "{N} brings {b} more {obj} to school than {than}.", kind="compare", solo=False),
    # subtract
    Template("sub", "{S} gives {b} {obj} to {O}.", solo=False),
    Template("sub", "{S} sells {b} of {pos} {obj}."),
    Template("sub", "{S} loses {b} {obj} on the way home."),
    Template("sub", "{S} uses {b} {obj} for a school project."),
    Template("sub", "{S} donates {b} {obj} to a charity."),
    Template("sub", "{S} trades away {b} of {pos} {obj}."),
    Template("sub", "{O} borrows {b} of {owner}'s {obj}.", solo=False),
    Template("sub", "{S} drops {b} {obj} and cannot find them."),
    Template("sub", "{N} has {b} fewer {obj} than {than}.", kind="compare", solo=False),
    Template("sub", "{N} owns {b} fewer {obj} than {than}.", kind="compare", solo=False),
    # multiply
    Template("mul", "{S} {kverb} the number of {pos} {obj}.", factors=(2, 3, 4)),
    Template("mul", "{S} ends up with {kt} as many {obj} as before."),
    Template("mul", "{Pos} collection of {obj} grows to {kt} its size."),
    Template("mul", "{S} trades each of {pos} {obj} for {k} {obj2}.", kind="trade"),
    Template("mul", "{N} has {kt} as many {obj} as {than}.", kind="compare", solo=False),
    Template("mul", "{N} collects {kt} as many {obj} as {than}.", kind="compare", solo=False),
    Template("mul", "{N} buys {kt} as many {obj} as {than}.", kind="compare", solo=False),
    Template(
        "mul", "{N} has {k} boxes, and each box holds as many {obj} as {than}.", kind="compare", solo=False
    ),
    # divide
    Template("div", "{S} keeps {frac} of {pos} {obj} and gives away the rest."),
    Template("div", "{S} puts {pos} {obj} into {k} equal piles and keeps one pile."),
    Template("div", "{S} splits {pos} {obj} into {k} equal groups and keeps only one group."),
    Template("div", "{S} loses all but {frac} of {pos} {obj}."),
    Template("div", "{S} packs {pos} {obj} equally into {k} bags and gives away all but one bag."),
    Template(
        "div",
        "{Pos} {obj} are shared equally among {k} children, and {N} is one of them.",
        kind="compare",
        solo=False,
    ),
    Template("div", "{N} has {frac} as many {obj} as {than}.", kind="compare", solo=False),
    Template("div", "{N} collects only {frac} as many {obj} as {than}.", kind="compare", solo=False),
)
OPENERS: tuple[str, ...] = (
    "{owner} has {x} {obj}.",
    "{owner} owns {x} {obj}.",
    "{owner} starts the day with {x} {obj}.",
    "{owner} keeps {x} {obj} in a box.",
    "There are {x} {obj} in {owner}'s bag.",
    "{owner} collected {x} {obj} last week.",
)
QUESTIONS: tuple[str, ...] = (
    "How many {obj} does {owner} have now?",
    "How many {obj} does {owner} have in the end?",
    "How many {obj} does {owner} end up with?",
    "How many {obj} does {owner} have at the end?",
)


def _factors(template: Template, x: int) -> list[int]:
    """Factors that keep the result an integer in [2, MAX_VALUE] for this template."""
    if template.op == "mul":
        return [k for k in template.factors if x * k <= MAX_VALUE]
    return [k for k in template.factors if x % k == 0 and x // k >= 2]


def _feasible(template: Template, x: int) -> bool:
    if template.op == "add":
        return x + STEP_RANGE[0] <= MAX_VALUE
    if template.op == "sub":
        return x - STEP_RANGE[0] >= 2
    return bool(_factors(template, x))


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def generate_problem(level: int, rng: random.Random) -> tuple[str, str, str]:
    """One problem with ``level`` chained operations: (question, solution, answer).

    All randomness comes from ``rng``, so a seeded rng gives the same problem anywhere.
    """
    if not isinstance(level, int) or isinstance(level, bool) or level < 1:
        raise DatasetError(f"arith level must be a positive integer, got {level!r}")
    names = list(NAMES)
    rng.shuffle(names)  # people are drawn from this list without replacement

    owner, gender = names.pop()
    obj = rng.choice(OBJECTS)
    x = rng.randint(*START_RANGE)
    question = [rng.choice(OPENERS).format(owner=owner, x=x, obj=obj)]
    solution: list[str] = []
    prev_solo, changed = True, False

    for _ in range(level):
        ops = [op for op in _SYMBOL if any(t.op == op and _feasible(t, x) for t in TEMPLATES)]
        op = rng.choice(ops)
        template = rng.choice([t for t in TEMPLATES if t.op == op and _feasible(t, x)])
        if op == "add":
            v = rng.randint(STEP_RANGE[0], min(STEP_RANGE[1], MAX_VALUE - x))
            y = x + v
        elif op == "sub":
            v = rng.randint(STEP_RANGE[0], min(STEP_RANGE[1], x - 2))
            y = x - v
        else:
            v = rng.choice(_factors(template, x))
            y = x * v if op == "mul" else x // v
        pron = _PRONOUNS[gender]
        fields = {
            "owner": owner,
            "pos": pron["pos"],
            "refl": pron["refl"],
            "O": names.pop()[0] if "{O}" in template.text else "",
            "N": "",
            "than": f"{owner} has now" if changed else f"{owner} has",
            "b": v,
            "k": v,
            "kt": _TIMES.get(v, ""),
            "frac": _FRACTION.get(v, ""),
            "kverb": _MULTIPLY_VERB.get(v, ""),
            "obj": obj,
            "obj2": rng.choice([o for o in OBJECTS if o != obj]) if template.kind == "trade" else "",
        }
        new_gender = gender
        if template.kind == "compare":
            fields["N"], new_gender = names.pop()
        use_pronoun = prev_solo and rng.random() < 0.8
        as_pronoun = {"S": pron["subj"].capitalize(), "s": pron["obj"], "Pos": pron["pos"].capitalize()}
        as_name = {"S": owner, "s": owner, "Pos": f"{owner}'s"}
        question.append(
            _capitalize(template.text.format(**fields, **(as_pronoun if use_pronoun else as_name)))
        )

        if template.kind == "compare":
            owner, gender, changed = fields["N"], new_gender, False
        else:
            changed = True
        if template.kind == "trade":
            obj = fields["obj2"]
        reason = _capitalize(template.text.format(**fields, **as_name)).rstrip(".")
        solution.append(f"{reason}, so {owner} has {x} {_SYMBOL[op]} {v} = {y} {obj}.")
        prev_solo = template.solo
        x = y

    question.append(rng.choice(QUESTIONS).format(obj=obj, owner=owner))
    solution.append(f"The answer is {x}.")
    return " ".join(question), " ".join(solution), str(x)


ProblemMaker = Callable[
    [int, random.Random], tuple[str, str, str]
]  # (level, rng) -> question, solution, answer


def _generate(
    name: str,
    make: ProblemMaker,
    split: str,
    count: int,
    levels: Sequence[int],
    seed: int,
    reserved: frozenset[str],
) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for index in range(count):
        level = levels[index % len(levels)]
        for attempt in range(1000):
            rng = random.Random(f"{name}:{seed}:{split}:{index}:{attempt}")
            question, solution, answer = make(level, rng)
            if question not in seen and question not in reserved:
                break
        else:  # pragma: no cover - the question space is far larger than any split
            raise DatasetError(f"{name}: could not find a new level-{level} question for {split}[{index}]")
        seen.add(question)
        problems.append(
            Problem(f"{name}-{split}-L{level}-{index:05d}", question, answer, solution, level, None)
        )
    return problems


def generated_split(
    name: str,
    make: ProblemMaker,
    split: str,
    *,
    num_train: int,
    num_test: int,
    levels: Sequence[int],
    seed: int,
) -> list[Problem]:
    """The ``split`` of a generated dataset ``name`` whose problem ``i`` is ``make(level, rng)``, spread evenly
    over ``levels`` (shared by arith and arith_graph: ids, seeding, the held-out test questions, validation)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown {name} split {split!r}; valid splits: {', '.join(SPLITS)}")
    for key, n in (("num_train", num_train), ("num_test", num_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DatasetError(f"{name} {key} must be a non-negative integer, got {n!r}")
    levels = list(levels)
    if not levels or any(isinstance(lv, bool) or not isinstance(lv, int) or lv < 1 for lv in levels):
        raise DatasetError(f"{name} levels must be a non-empty list of positive integers, got {levels!r}")
    test = _generate(name, make, "test", num_test, levels, seed, frozenset())
    if split == "test":
        return test
    return _generate(name, make, "train", num_train, levels, seed, frozenset(p.question for p in test))


def generate_split(
    split: str,
    *,
    num_train: int = 1000,
    num_test: int = 200,
    levels: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
) -> list[Problem]:
    """The ``split`` ("train"/"test") of the arith dataset, spread evenly over ``levels``.

    Same arguments -> the same list in any process. Train never repeats a test question,
    which is why building train also builds the (cheap) test split.
    """
    return generated_split(
        "arith", generate_problem, split, num_train=num_train, num_test=num_test, levels=levels, seed=seed
    )
