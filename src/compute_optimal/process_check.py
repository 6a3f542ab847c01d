"""Exact process checks: is the reasoning of an answer-correct completion right, not only its answer?

A false positive is a completion whose final answer matches the gold answer but whose reasoning is
wrong. An LLM judge or a human decides that by reading; here it is decided by checking:

* arith and arith_graph (:func:`check_process`): every problem carries a reference solution that
  computes what the answer needs, one sentence per quantity. A completion passes when (1) its final
  answer is correct as the grader reads it (``grading.extract_answer`` and ``grading.answers_equal`` with
  answer_format arith), (2) every computation it writes is exact, and (3) its computations are a valid
  chain for the reference:

  - an arith reference is one chain (one running quantity, each step on the previous result: ``..., so
    Mia has 7 + 5 = 12 apples.``): the completion's computations contain each reference step
    (previous quantity, the problem's operand, the new quantity; ``+`` and ``*`` commute) in order,
    and nothing else, except repeats, trivial steps (``12 * 1 = 12``) and checks between quantities of
    the chain (``12 - 5 = 7`` after ``7 + 5 = 12``);
  - an arith_graph reference computes several quantities, some independent of others, a sum of three
    terms step by step (``20 + 34 = 54 and 54 + 7 = 61``), and every number of the problem names one
    thing (the generator makes them distinct): each step must combine values already known (the
    problem's numbers, or results of earlier steps) into a quantity of the reference or a partial sum
    of one (``+`` and ``*`` in any order and grouping, ``-`` and ``/`` in order), every quantity must
    be computed, and every such step must lead to the answer; independent quantities may come in any
    order. Repeats, trivial steps and checks between known values are let through; any other step is
    extra.

  A quantity stated without its computation counts as missing.
* GSM8K (:func:`check_arithmetic`): there is no machine-readable reference chain, so only the
  arithmetic is checked: every computation written (and every ``<<48/2=24>>`` calculator annotation)
  must be right, a decimal rounded or truncated to the places written (``10/3 = 3.33``) and the
  whole result of a division rounded down or up (``100 / 6 = 16`` full packs). It finds errors and
  never certifies reasoning, so the rate of samples it flags is a LOWER BOUND on the false-positive
  rate.

Computations are read by one parser (:func:`parse_steps`) from text normalised for the purpose:
``a op b = c`` with op in ``+ - * /`` (also ``× x ÷ ·``, ``plus``, ``minus``, ``times``,
``multiplied by``, ``divided by``), ``=`` or ``is`` / ``equals`` / ``makes`` before the result,
integers with thousands commas and decimals, up to two unit words after a number (``7 apples + 5``),
chains (``7 + 5 - 3 = 9``, evaluated with precedence and split into their binary operations),
parentheses, ``a = b = c`` runs. Expressions are evaluated by walking Python's ``ast`` of a sanitised
string of digits and operators (never ``eval``), in exact rationals.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, NamedTuple

import pandas as pd

from . import judge
from .analysis import ALL_LEVELS, level_label
from .grading import answers_equal, extract_answer

EXACT_METHOD = "exact process check"
EXACT_LABEL = "exact"
ARITHMETIC_METHOD = "arithmetic check (lower bound)"
EXACT_DEFINITION = (
    "A sample passes the exact process check when its final answer is correct (the grader's arith "
    "extraction), every computation it writes is exact, and its computations are a valid chain for the "
    "problem's reference solution: for one running quantity (arith), every reference step (previous "
    "quantity, the problem's operand, new quantity; + and * may be commuted) in order and no other step; "
    "for several quantities (arith_graph), each step combines values already known (the problem's numbers "
    "or earlier results) into a quantity the answer needs or a partial sum of one (+ and * in any order and "
    "grouping), every such quantity is computed and nothing else is, independent quantities in any order. "
    "Repeats, trivial steps and checks between known quantities aside. An answer-correct sample that fails "
    "is a false positive: a lucky answer."
)
ARITHMETIC_DEFINITION = (
    "A sample fails the arithmetic check when a computation it writes (`a op b = c`, or a `<<a op b=c>>` "
    "calculator annotation) is wrong (a decimal rounded or truncated to its written places, and a "
    "division's whole result rounded down or up, count as right); the check cannot see wrong reasoning "
    "with right arithmetic, so its rate is a lower bound on the false-positive rate."
)
# Answer formats with a checker: arith is checked exactly, GSM8K for its arithmetic only.
EXACT_FORMATS = frozenset({"arith"})
ARITHMETIC_FORMATS = frozenset({"gsm8k"})


class Operation(NamedTuple):
    """One binary operation ``a op b = result``; ``result`` is what the writer has (the written result
    for the last operation of an expression, the exact value for the inner ones)."""

    a: Fraction
    op: str
    b: Fraction
    result: Fraction
    correct: bool


@dataclass(frozen=True)
class Step:
    """One written computation (an equation with at least one operation), in the order written."""

    text: str  # the equation as written, spaces normalised: "12 - 5 = 6"
    operations: tuple[Operation, ...]
    errors: tuple[str, ...]  # the equation's false claims: "12 - 5 = 6 is wrong (12 - 5 = 7)"

    @property
    def correct(self) -> bool:
        return not self.errors


# --- parsing ----------------------------------------------------------------------------------------

# "is" / "equals" / "makes" read as "=", marked apart: "60 mph is 60*1.5 = 90" states no "60 = 90".
_IS = "\ue000"
_SYMBOLS = str.maketrans(
    {"×": "*", "·": "*", "⋅": "*", "∙": "*", "∗": "*", "÷": "/", "⁄": "/", "−": "-", "–": "-"}
)
_WORD_OPERATORS = (
    (re.compile(r"\\times(?![A-Za-z])|\\cdot(?![A-Za-z])"), " * "),
    (re.compile(r"\\div(?![A-Za-z])"), " / "),
    (re.compile(r"(?<=[\d)])[ \t]*[xX][ \t]*(?=[\d(])"), " * "),
    (re.compile(r"\bmultiplied[ \t]+by\b", re.IGNORECASE), " * "),
    (re.compile(r"\bdivided[ \t]+by\b", re.IGNORECASE), " / "),
    (re.compile(r"\btimes\b", re.IGNORECASE), " * "),
    (re.compile(r"\bplus\b", re.IGNORECASE), " + "),
    (re.compile(r"\bminus\b", re.IGNORECASE), " - "),
    (re.compile(r"\b(?:is[ \t]+equal[ \t]+to|equals|is|makes)\b", re.IGNORECASE), f" {_IS} "),
    (re.compile(r"\\?\$(?=[ \t]?\d)"), ""),  # currency: "$5 + $3 = $8"
)
_S = r"[ \t]*"
# A number: "1,234", "3.5", ".01" (GSM8K); not "20%", "3b" or a list "3,4".
_NUM = r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?![\w%]|[.,]\d)"
_ATOM = rf"(?:\({_S}){{0,6}}{_NUM}(?:{_S}\)){{0,6}}"
_UNIT = r"(?:[ \t]+[A-Za-z]+){0,2}"  # "7 apples + 5 apples = 12"
# Unit words never before "/": "5 ml/100 drops" is a rate, not a division by 100.
# Bounded repeats (6 brackets, 24 operations a side, 8 sides): each start position costs at most
# that much, so a long run of operators or brackets without an "=" stays linear.
_SIDE = rf"{_ATOM}(?:(?:{_UNIT}{_S}[-+*]|{_S}/){_S}{_ATOM}){{0,24}}"
_EQUATION_RE = re.compile(rf"{_SIDE}(?:{_UNIT}{_S}[={_IS}]{_S}{_SIDE}){{1,7}}")
_SEPARATOR_RE = re.compile(f"([={_IS}])")
# A mixed number ("1 1/2") is not read: an equation that starts or ends inside one is skipped.
_MIXED_BEFORE = re.compile(r"\d[ \t]+(?:and[ \t]+)?$")  # only where the match starts with a fraction:
_FRACTION_START = re.compile(r"\(*\d+[ \t]*/[ \t]*\d")  # "139 and 139 + 94 = 233" is no mixed number
_MIXED_AFTER = re.compile(r"[ \t]+\d+/\d")
_MAX_EQUATION_CHARS = 300
# A match right after these is the tail of a bigger expression ("x - 3 + 4 = 7") or of a time ("7:50");
# one followed by an operator and a variable, a bracket or a number it could not read stops inside
# an expression ("16 = 16 + x", "= 12 + 16x"): neither is read. ("= 12 - so" is read: a dash.)
_OPERATOR_BEFORE = re.compile(r"(?:[-+*/^(][ \t]*|[\w.,:])$")
_CONTINUES_AFTER = re.compile(r"[ \t]*(?:[-+*/^][ \t]*(?:[A-Za-z]\b|[(\d])|=)|[\w:]")
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


class _NotArithmetic(ValueError):
    """A side that is not plain arithmetic (after all, a word or an odd token)."""


def _sanitise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_SYMBOLS)
    for pattern, replacement in _WORD_OPERATORS:
        text = pattern.sub(replacement, text)
    return text


def _balance(expr: str) -> str:
    """Drop unmatched outer parentheses: "(so 7 + 5 = 12)" gives "12)" as a side."""
    while expr.count(")") > expr.count("(") and expr.endswith(")"):
        expr = expr[:-1].rstrip()
    while expr.count("(") > expr.count(")") and expr.startswith("("):
        expr = expr[1:].lstrip()
    return expr


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b  # ZeroDivisionError: the side has no value


class _Side(NamedTuple):
    text: str
    value: Fraction | None  # None: a division by zero
    operations: tuple[Operation, ...]  # inner results exact; the last one's result is its value
    computes: bool  # has an operator (a side "5 / 0" computes, but has no value and no operations)
    worded: bool  # written with words ("8 degrees"): a label when an expression follows it
    lead: Fraction  # the first number ("12" of "12 + 3"): the reading of a run-on "7 + 5 = 12 + 3"
    decimals: int  # digits after the point of a plain number; 0 for an expression


def _evaluate(node: ast.AST, src: str, out: list[Operation]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(ast.get_source_segment(src, node) or str(node.value))  # exact, as written
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        a, b = _evaluate(node.left, src, out), _evaluate(node.right, src, out)
        op = _BINARY[type(node.op)]
        value = _apply(op, a, b)
        out.append(Operation(a, op, b, value, True))
        return value
    raise _NotArithmetic(ast.dump(node))


def _parse_side(written: str) -> _Side:
    """One side of an equation: "7 apples + 5" -> its value and operations (units and commas dropped).
    Terms in different units ("4 pounds - 6 ounces") are not plain arithmetic."""
    units = {" ".join(re.findall(r"[A-Za-z]+", term)) for term in re.split(r"[-+*/]", written)}
    if len(units - {""}) > 1:
        raise _NotArithmetic(written)
    expr = re.sub(r"[A-Za-z]+", " ", written)
    expr = re.sub(r"(?<=\d),(?=\d{3})", "", expr)
    expr = _balance(" ".join(expr.split()))
    # A tight fraction after a spaced division is the divisor: "25 / 1/3" is 25 / (1/3).
    expr = re.sub(r"/ (\d+/\d+)(?![\d./])", r"/ (\1)", expr)
    if not re.fullmatch(r"[\d.+\-*/() ]+", expr):
        raise _NotArithmetic(expr)
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError):  # "007", a number too long to convert
        raise _NotArithmetic(expr) from None
    lead = Fraction(re.search(r"\d+(?:\.\d+)?|\.\d+", expr).group())  # type: ignore[union-attr]
    operations: list[Operation] = []
    try:
        value: Fraction | None = _evaluate(tree.body, expr, operations)
    except ZeroDivisionError:
        value, operations = None, []
    plain = re.fullmatch(r"(?=[\d.])\d*(?:\.(\d+))?", expr)
    decimals = len(plain.group(1) or "") if plain else 0
    computes = isinstance(tree.body, ast.BinOp)
    worded = bool(re.search(r"[A-Za-z]", written))
    return _Side(expr, value, tuple(operations), computes, worded, lead, decimals)


def _close(true: Fraction, written: _Side, tolerant: bool, division: bool) -> bool:
    """The written value equals the true one: exactly, or (tolerant) a plain number rounded or
    truncated to the decimals written (10/3 = 3.33, 2/3 = 0.67 or 0.66; not 10/3 = 3.4), or the
    whole result of a division rounded down or up (100 / 6 = 16 full packs, 10 / 3 = 4 boxes needed)."""
    if true == written.value:
        return True
    if not tolerant or written.value is None or written.computes or (true < 0) != (written.value < 0):
        return False
    if written.decimals == 0:
        return division and written.value in (math.floor(true), math.ceil(true))
    scale = 10**written.decimals
    scaled = abs(true) * scale
    candidates = {math.floor(scaled), math.floor(scaled + Fraction(1, 2)), round(scaled)}
    return abs(written.value) * scale in candidates


def _fmt(value: Fraction | None) -> str:
    if value is None:
        return "undefined"
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6g}"


def _run_on(left: _Side, right: _Side) -> bool:
    """ "7 + 5 = 12 + 3 = 15": false as written, but plainly "7 + 5 = 12, 12 + 3 = 15"."""
    return (
        bool(left.operations and right.operations)
        and left.value is not None
        and right.value != left.value
        and right.lead == left.value
    )


def _claim_error(left: _Side, right: _Side, tolerant: bool) -> str | None:
    """Why ``left = right`` is false, or None when it holds."""
    if _run_on(left, right):
        return None
    claim = f"{left.text} = {right.text}"
    if left.value is None or right.value is None:
        return f"{claim} is wrong (division by zero)"
    division = any(side.operations and side.operations[-1].op == "/" for side in (left, right))
    if _close(left.value, right, tolerant, division) or _close(right.value, left, tolerant, division):
        return None
    shown = left if left.operations else right
    return f"{claim} is wrong ({shown.text} = {_fmt(shown.value)})"


def _step(sides: list[_Side], tolerant: bool) -> Step | None:
    """The equation ``s1 = s2 = ...`` checked claim by claim; None when no side computes anything."""
    if not any(s.computes for s in sides):
        return None
    errors: list[str] = []
    wrong = [False] * len(sides)
    for i, (left, right) in enumerate(itertools.pairwise(sides)):
        if not (left.computes or right.computes):
            continue  # "12 inches = 1 foot" states no computation
        error = _claim_error(left, right, tolerant)
        if error:
            errors.append(error)
            wrong[i] = wrong[i + 1] = True
    operations: list[Operation] = []
    for i, side in enumerate(sides):
        if not side.operations:
            continue
        # The result the text gives this expression: the side after it ("12 - 5 = 6"), else before it.
        if i + 1 < len(sides):
            nxt = sides[i + 1]
            said = nxt.lead if _run_on(side, nxt) else nxt.value
        else:
            said = sides[i - 1].value
        *inner, last = side.operations
        result = last.result if said is None else said
        operations += [*inner, Operation(last.a, last.op, last.b, result, not wrong[i])]
    return Step(" = ".join(s.text for s in sides), tuple(operations), tuple(errors))


def parse_steps(text: str, *, tolerant: bool = False) -> list[Step]:
    """Every computation written in ``text``, in order (see the module docstring for what is read).

    ``tolerant``: a decimal result may be rounded to the precision written (``10/3 = 3.33``);
    otherwise every claim must be exact.
    """
    clean = _sanitise(text or "")
    steps: list[Step] = []
    pos = 0
    while (m := _EQUATION_RE.search(clean, pos)) is not None:
        pos = m.end()  # a match not read is skipped whole: what starts inside it is a tail of it
        before = clean[max(0, m.start() - 16) : m.start()]
        if (
            _OPERATOR_BEFORE.search(before)
            or (_MIXED_BEFORE.search(before) and _FRACTION_START.match(m.group()))
            or _MIXED_AFTER.match(clean, m.end())
            or _CONTINUES_AFTER.match(clean, m.end())
            or len(m.group()) > _MAX_EQUATION_CHARS
        ):
            continue
        try:
            groups = _equations(m.group())
        except _NotArithmetic:
            continue
        steps += [step for sides in groups if (step := _step(sides, tolerant)) is not None]
    return steps


def _quantity(side: _Side) -> bool:
    """A side that names a quantity rather than computes one: a plain number, or a fraction that is
    not a whole number ("4/7 is equal to $24": four sevenths of her money)."""
    if not side.computes:
        return True
    return (
        bool(re.fullmatch(r"\d+/\d+", side.text)) and side.value is not None and side.value.denominator != 1
    )


def _label(sides: list[_Side]) -> bool:
    """The first side labels the computation after it: "Drop 8 degrees = 2 - 8 = -6" computes 2 - 8."""
    first, second = sides[0], sides[1]
    return not first.computes and second.computes and (len(sides) > 2 or first.worded)


def _equations(written: str) -> list[list[_Side]]:
    """The sides of each equation in a match. A word "is" after a quantity starts a new one ("the 90
    lines is 90 - 24 = 66" is the equation "90 - 24 = 66", not "90 = 66"), and a leading label is
    dropped."""
    parts = _SEPARATOR_RE.split(written)
    groups = [[_parse_side(parts[0])]]
    for separator, part in zip(parts[1::2], parts[2::2], strict=True):
        side = _parse_side(part)
        if separator == _IS and _quantity(groups[-1][-1]):
            groups.append([side])
        else:
            groups[-1].append(side)
    groups = [sides[1:] if len(sides) > 1 and _label(sides) else sides for sides in groups]
    return [sides for sides in groups if len(sides) > 1]


def _numbered_errors(steps: list[Step]) -> list[str]:
    return [f"step {i}: {error}" for i, step in enumerate(steps, 1) for error in step.errors]


# --- arith: the exact process check -------------------------------------------------------------


@dataclass(frozen=True)
class ProcessVerdict:
    """The exact verdict on one completion of an arith problem.

    correct: passes every check (final answer, arithmetic, reference chain); process_correct: every
    check but the final answer; a false positive is answer-correct and not process-correct.
    """

    correct: bool
    answer_correct: bool
    process_correct: bool
    reasons: tuple[str, ...]  # every failed check, e.g. "step 2: 12 - 5 = 6 is wrong (12 - 5 = 7)"
    steps: int  # computations written
    wrong_steps: int
    required: int  # steps of the reference solution
    matched: int  # reference steps found in order
    extra_steps: int

    @property
    def false_positive(self) -> bool:
        return self.answer_correct and not self.process_correct


def _key(o: Operation) -> tuple[str, tuple[Fraction, ...], Fraction]:
    operands = tuple(sorted((o.a, o.b))) if o.op in "+*" else (o.a, o.b)
    return o.op, operands, o.result


def _show(o: Operation) -> str:
    return f"{_fmt(o.a)} {o.op} {_fmt(o.b)} = {_fmt(o.result)}"


@dataclass(frozen=True)
class _Node:
    """One quantity the reference solution computes: ``op`` over ``terms``. A sum or product may take
    its terms in any order and grouping; a difference or quotient takes its two in order."""

    op: str
    terms: tuple[Fraction, ...]
    value: Fraction
    text: str  # as the reference writes it: "14 + 6 + 20 = 40"

    @property
    def parts(self) -> dict[Fraction, frozenset[int]]:
        """value -> the terms it combines: every term, and for a sum or product of three or more terms
        every partial sum or product of some of them (the operands a valid step may combine)."""
        out = {t: frozenset([i]) for i, t in enumerate(self.terms)}
        if self.op in "+*":
            for size in range(2, len(self.terms)):
                for combo in itertools.combinations(range(len(self.terms)), size):
                    out[self._combine(combo)] = frozenset(combo)
        return out

    def _combine(self, indices: Sequence[int]) -> Fraction:
        values = [self.terms[i] for i in indices]
        return sum(values, Fraction(0)) if self.op == "+" else math.prod(values, start=Fraction(1))

    def fits(self, o: Operation) -> bool:
        """``o`` computes this quantity or a partial sum or product of it from two disjoint parts."""
        if o.op != self.op:
            return False
        if o.op in "-/":
            return (o.a, o.b) == self.terms
        parts = self.parts
        a, b = parts.get(o.a), parts.get(o.b)
        return a is not None and b is not None and not a & b


@dataclass(frozen=True)
class _Graph:
    nodes: tuple[_Node, ...]
    givens: frozenset[Fraction]  # numbers the reference uses without computing them
    derived: frozenset[Fraction]  # quantities it computes, and partial sums or products of them
    required: int  # operations a solution needs: a sum of k terms takes k - 1 in any grouping


def _node(sentence: str, steps: list[Step]) -> _Node:
    """One sentence of a reference solution computes one quantity: one operation, or a sum (product) of
    several terms written flat (``20 + 34 + 7 = 61``) or step by step (``20 + 34 = 54 and 54 + 7 = 61``)."""
    ops = [o for s in steps for o in s.operations]
    op = ops[0].op
    results = [o.result for o in ops[:-1]]
    terms = [v for o in ops for v in (o.a, o.b)]
    for r in results:  # each partial result is a term of exactly one later operation, not a term itself
        terms.remove(r)
    if len(ops) > 1 and not (op in "+*" and all(o.op == op for o in ops) and len(terms) == len(ops) + 1):
        raise ValueError(
            f"a reference sentence that is neither one operation nor one sum or product: {sentence!r}"
        )
    text = " = ".join([f" {op} ".join(_fmt(t) for t in terms), _fmt(ops[-1].result)])
    return _Node(op, tuple(terms), ops[-1].result, text)


@dataclass(frozen=True)
class _Chain:
    """An arith reference: one running quantity, each step on the previous one's result."""

    steps: tuple[Operation, ...]
    values: frozenset[Fraction]  # the chain's quantities
    operands: frozenset[Fraction]  # the problem's operands

    @property
    def required(self) -> int:
        return len(self.steps)


@lru_cache(maxsize=4096)
def _reference(solution: str) -> _Chain | _Graph:
    """What a reference solution computes (cached: every sample of a problem shares it): a chain (arith:
    one operation per sentence, each on the previous result) or a graph of quantities (arith_graph)."""
    sentences = [(text, parse_steps(text)) for text in re.split(r"(?<=\.)\s+", solution)]
    sentences = [(text, steps) for text, steps in sentences if steps]
    if not sentences or any(not s.correct for _, steps in sentences for s in steps):
        raise ValueError(f"not an arith reference solution (no exact computations): {solution!r}")
    ops = [op for _, steps in sentences for step in steps for op in step.operations]
    if len(ops) == len(sentences) and all(nxt.a == prev.result for prev, nxt in itertools.pairwise(ops)):
        values = frozenset([ops[0].a, *(o.result for o in ops)])
        return _Chain(tuple(ops), values, frozenset(o.b for o in ops))
    return _graph(solution, sentences)


def _graph(solution: str, sentences: list[tuple[str, list[Step]]]) -> _Graph:
    """The quantities of a graph reference and what each is computed from. Raises ValueError unless every
    number in it names one thing."""
    nodes = tuple(_node(text, steps) for text, steps in sentences)
    values = [n.value for n in nodes]
    computed: set[Fraction] = set()
    givens: set[Fraction] = set()
    for n in nodes:
        for t in n.terms:
            if t in values and t not in computed:
                raise ValueError(f"the reference uses {_fmt(t)} before computing it: {solution!r}")
            if t not in computed:
                givens.add(t)
        computed.add(n.value)
    partials = [v for n in nodes for v, part in n.parts.items() if len(part) > 1]
    named = [*givens, *values, *partials]
    if len(set(named)) != len(named):
        raise ValueError(
            f"a number of the reference names two things, so steps cannot be told apart: {solution!r}"
        )
    required = sum(len(n.terms) - 1 for n in nodes)
    return _Graph(nodes, frozenset(givens), frozenset([*values, *partials]), required)


def _trivial(o: Operation) -> bool:
    """``a * 1``, ``a / 1``, ``a + 0``, ``a - 0``: a step that changes nothing."""
    identity = {"+": 0, "-": 0, "*": 1, "/": 1}[o.op]
    return o.correct and (o.b == identity or (o.op in "+*" and o.a == identity))


def _chain_reasons(ops: list[tuple[int, Operation]], ref: _Chain) -> tuple[list[str], int, int]:
    """Reference steps missing or out of order, and extra steps: (reasons, matched, extra)."""
    keys = [_key(o) for _, o in ops]
    used: set[int] = set()
    reasons: list[str] = []
    pos = -1
    for r in ref.steps:  # each reference step, in order, after the previous one's match
        found = next((p for p in range(pos + 1, len(ops)) if keys[p] == _key(r)), None)
        if found is None:
            reasons.append(f"missing intermediate {_fmt(r.result)} ({_show(r)})")
        else:
            used.add(found)
            pos = found
    ref_keys = {_key(r) for r in ref.steps}
    allowed = ref.values | ref.operands
    extra = 0
    for p, (number, o) in enumerate(ops):
        if p in used or keys[p] in keys[:p] or not o.correct or _trivial(o):
            continue  # matched, a repeat, a wrong step (reported already), or a step that changes nothing
        if keys[p] in ref_keys:
            reasons.append(f"step {number}: {_show(o)} is out of order")
        elif o.result in ref.values and {o.a, o.b} <= allowed:
            continue  # a check between quantities of the chain ("12 - 5 = 7")
        else:
            reasons.append(f"extra step {_show(o)} (step {number})")
            extra += 1
    return reasons, len(used), extra


def _graph_reasons(ops: list[tuple[int, Operation]], ref: _Graph) -> tuple[list[str], int, int]:
    """Check the written computations against the reference's quantities: (reasons, matched, extra).

    Walks the steps in order with the set of values known so far (the given numbers, then each result).
    A step is valid when it combines two disjoint parts of one quantity (its terms, or partial sums of
    them) into another; it is out of order when it uses a value not yet known. Repeats, trivial steps
    and checks (a known result from known values: ``54 - 7 = 47`` after ``47 + 7 = 54``) are let
    through; any other step is extra. Every quantity must be computed, and every valid step must lead to
    the answer (the last quantity): one that does not is extra.
    """
    known = set(ref.givens)
    producer: dict[Fraction, int] = {}  # value -> the valid step that first computed it
    valid: dict[int, tuple[Fraction, Fraction]] = {}  # valid step -> its operands
    seen: set[tuple] = set()
    reasons: list[str] = []
    extra = 0
    for p, (number, o) in enumerate(ops):
        key = _key(o)
        if not o.correct or _trivial(o) or key in seen:
            continue  # a wrong step (reported already), a step that changes nothing, or a repeat
        seen.add(key)
        if {o.a, o.b, o.result} <= known:
            continue  # a check between known values
        if any(n.fits(o) for n in ref.nodes):
            late = [v for v in (o.a, o.b) if v not in known]
            if late:
                reasons.append(
                    f"step {number}: {_show(o)} is out of order (uses {_fmt(late[0])} before computing it)"
                )
            known.add(o.result)
            producer.setdefault(o.result, p)
            valid[p] = (o.a, o.b)
        else:
            reasons.append(f"extra step {_show(o)} (step {number})")
            extra += 1
    reasons += [f"missing intermediate {_fmt(n.value)} ({n.text})" for n in ref.nodes if n.value not in known]
    # The steps the answer is computed from, back from the step that computed it.
    used: set[int] = set()
    stack = [producer[ref.nodes[-1].value]] if ref.nodes[-1].value in producer else []
    while stack:
        p = stack.pop()
        if p not in used:
            used.add(p)
            stack += [producer[v] for v in valid[p] if v in producer]
    for p in sorted(set(valid) - used):
        number, o = ops[p]
        reasons.append(f"extra step {_show(o)} (step {number}): the answer does not use it")
        extra += 1
    return reasons, len(used), extra


def _answer_reason(completion: str, gold: str) -> tuple[bool, str | None]:
    pred = extract_answer(completion, "arith")
    if pred is None:
        return False, "no final answer: not an answer-correct sample"
    if not answers_equal(pred, gold, "arith"):
        return False, f"final answer {pred} is not the gold answer {gold}: not an answer-correct sample"
    return True, None


def check_process(completion: str, solution: str, gold: str) -> ProcessVerdict:
    """The exact verdict on ``completion`` for the arith problem with reference ``solution`` and ``gold``.

    Raises ValueError when ``solution`` is not an arith reference solution (no exact chain).
    """
    ref = _reference(solution)
    answer_ok, answer_reason = _answer_reason(completion, gold)
    steps = parse_steps(completion)
    reasons = _numbered_errors(steps)
    if not steps:
        reasons.append("no computation written")
    ops = [(i, o) for i, step in enumerate(steps, 1) for o in step.operations]
    check = _chain_reasons if isinstance(ref, _Chain) else _graph_reasons
    chain, matched, extra = check(ops, ref)  # type: ignore[arg-type]
    reasons += chain
    process_ok = not reasons
    if answer_reason:
        reasons.append(answer_reason)
    return ProcessVerdict(
        correct=answer_ok and process_ok,
        answer_correct=answer_ok,
        process_correct=process_ok,
        reasons=tuple(reasons),
        steps=len(steps),
        wrong_steps=sum(not s.correct for s in steps),
        required=ref.required,
        matched=matched,
        extra_steps=extra,
    )


def reasoning_chain(completion: str) -> tuple[str, ...]:
    """The computations a completion writes, in order, each as ``a op b = c`` (the operands of ``+`` and
    ``*`` sorted): two solutions with one chain differ in their words only."""
    chain = []
    for step in parse_steps(completion):
        for o in step.operations:
            op, (a, b), result = _key(o)
            chain.append(f"{_fmt(a)} {op} {_fmt(b)} = {_fmt(result)}")
    return tuple(chain)


# --- GSM8K: the arithmetic check (a lower bound) ------------------------------------------------


@dataclass(frozen=True)
class ArithmeticVerdict:
    """The arithmetic of one completion: ``correct`` means no error was found, never that the
    reasoning is right (this check can only find errors: a lower bound on false positives)."""

    correct: bool
    reasons: tuple[str, ...]
    steps: int
    wrong_steps: int


def check_arithmetic(completion: str) -> ArithmeticVerdict:
    """Every computation in ``completion`` (also GSM8K's ``<<48/2=24>>``) checked; decimals to the
    precision written (``10/3 = 3.33`` is right, ``10/3 = 3.4`` is not), a division's whole result
    rounded down or up (``100 / 6 = 16``)."""
    steps = parse_steps(completion, tolerant=True)
    reasons = tuple(_numbered_errors(steps))
    return ArithmeticVerdict(not reasons, reasons, len(steps), sum(not s.correct for s in steps))


# --- a run's false-positive rate by the checkers --------------------------------------------------


def _sort_level(label: str) -> tuple[int, int | str]:
    return (0, int(label)) if label.isdigit() else (1, label)


def fpr_by_level(frame: pd.DataFrame, method: str) -> dict[str, judge.FPR]:
    """One FPR per level and overall (``"all"``) from a table with columns ``level`` (a level label)
    and ``verdict`` (correct / incorrect / unknown)."""
    rates = {
        str(level): judge.fpr_from_verdicts(group["verdict"], method)
        for level, group in frame.groupby("level", sort=False)
        if str(level) != ALL_LEVELS
    }
    rates = dict(sorted(rates.items(), key=lambda item: _sort_level(item[0])))
    rates[ALL_LEVELS] = judge.fpr_from_verdicts(frame["verdict"], method)
    return rates


def _exact_verdict(completion: str, problem: Any, gold: str) -> tuple[str, str]:
    """(verdict, reasons) of one answer-correct arith sample; unknown where the problem's reference is
    not the run's (another loader config) or today's grader does not find the answer correct."""
    if problem is None or str(problem.answer) != str(gold) or not problem.solution:
        return judge.UNKNOWN, "the problem's reference solution is not available"
    try:
        result = check_process(completion, problem.solution, str(gold))
    except ValueError as exc:  # a reference without an exact chain: nothing to check against
        return judge.UNKNOWN, str(exc)
    if not result.answer_correct:
        return judge.UNKNOWN, "; ".join(result.reasons)  # graded correct when sampled, not now
    return (judge.CORRECT if result.process_correct else judge.INCORRECT), "; ".join(result.reasons)


def _arithmetic_verdict(completion: str) -> tuple[str, str]:
    result = check_arithmetic(completion)
    return (judge.CORRECT if result.correct else judge.INCORRECT), "; ".join(result.reasons)


def sample_verdicts(frame: pd.DataFrame, problems: Mapping[str, Any] | None) -> pd.DataFrame:
    """The checker's verdict on every answer-correct sample of a run's samples table.

    ``problems`` (id -> Problem with ``solution`` and ``answer``): the exact arith check; None: the
    arithmetic check. Columns: problem_id, sample_index, level (label), verdict, reasons.
    """
    correct = frame[frame["correct"].astype(bool)]
    memo: dict[tuple[str, str], tuple[str, str]] = {}  # sampled completions repeat: check each once
    rows = []
    for row in correct.itertuples(index=False):
        pid, text = str(row.problem_id), str(row.completion)
        if (pid, text) not in memo:
            memo[pid, text] = (
                _arithmetic_verdict(text)
                if problems is None
                else _exact_verdict(text, problems.get(pid), row.gold_answer)
            )
        verdict, reasons = memo[pid, text]
        rows.append((pid, int(row.sample_index), level_label(row.level), verdict, reasons))
    return pd.DataFrame(rows, columns=["problem_id", "sample_index", "level", "verdict", "reasons"])


def process_coverage(
    samples: pd.DataFrame, verdicts: pd.DataFrame, model: str, budget: str
) -> list[dict[str, Any]]:
    """Per level and overall: the share of problems with an answer-correct sample (coverage at k = S, as
    the data report counts it) and with a process-correct one; problems with an unknown verdict count as
    covered by answer only."""
    ok = verdicts[verdicts["verdict"] == judge.CORRECT]
    good = set(zip(ok["problem_id"], ok["sample_index"], strict=True))
    frame = samples.assign(
        level=samples["level"].map(level_label),
        answer=samples["correct"].astype(bool),
        process=[
            (str(p), int(i)) in good
            for p, i in zip(samples["problem_id"], samples["sample_index"], strict=True)
        ],
    )
    per_problem = frame.groupby("problem_id", sort=False).agg(
        level=("level", "first"), answer=("answer", "any"), process=("process", "any")
    )
    groups = sorted(per_problem.groupby("level"), key=lambda item: _sort_level(str(item[0])))
    rows = []
    for level, table in [*groups, (ALL_LEVELS, per_problem)]:
        answer, process = float(table["answer"].mean()), float(table["process"].mean())
        rows.append(
            {
                "model": model,
                "budget": budget,
                "level": str(level),
                "problems": len(table),
                "coverage_answer": answer,
                "coverage_process": process,
                "lucky_share": None if answer == 0 else (answer - process) / answer,
            }
        )
    return rows


@dataclass
class ProcessFPR:
    """The checker's false-positive rate of each run of a report, over all its answer-correct samples,
    and (with an LLM judge) the judge scored against the exact verdicts on the items it judged."""

    method: str  # EXACT_METHOD or ARITHMETIC_METHOD
    label: str  # the rows' label in the report: "exact" / "arithmetic check (lower bound)"
    definition: str
    rates: dict[tuple[str, str], dict[str, judge.FPR]] = field(default_factory=dict)  # (model, budget)
    verdicts: dict[str, str] = field(default_factory=dict)  # judge.make_item_id -> verdict
    calibration: dict[str, judge.Calibration] = field(default_factory=dict)  # run label or "all"
    judge_name: str | None = None
    coverage: list[dict[str, Any]] = field(default_factory=list)  # coverage by answer and by process

    @property
    def exact(self) -> bool:
        return self.method == EXACT_METHOD

    def add_run(
        self, model: str, budget: str, verdicts: pd.DataFrame, samples: pd.DataFrame | None = None
    ) -> None:
        """Add one run's verdicts; with its ``samples`` table and the exact check, also its coverage
        counting only process-correct samples beside coverage by answer."""
        self.rates[model, budget] = fpr_by_level(verdicts, self.method)
        for row in verdicts.itertuples(index=False):
            self.verdicts[judge.make_item_id(model, budget, row.problem_id, row.sample_index)] = row.verdict
        if samples is not None and self.exact:
            self.coverage += process_coverage(samples, verdicts, model, budget)

    def coverage_table(self) -> pd.DataFrame:
        """One row per run and level: coverage at k = S by answer and by process, and the lucky share of
        the problems covered by answer (covered by answer-correct samples only, none process-correct)."""
        return pd.DataFrame(self.coverage)

    def table(self) -> pd.DataFrame:
        """One row per run and level (``all``: the run overall)."""
        rows = [
            {"model": model, "budget": budget, "level": level, "label": self.label, **fpr.as_dict()}
            for (model, budget), levels in self.rates.items()
            for level, fpr in levels.items()
        ]
        return pd.DataFrame(rows)

    def calibrate(self, judged: Mapping[str, Sequence[tuple[str, str]]], judge_name: str) -> None:
        """Score the judge: ``judged`` maps a run label to its (item_id, judge verdict) pairs."""
        self.judge_name = judge_name
        everything = []
        for run, pairs in judged.items():
            matched = [(verdict, self.verdicts.get(item, judge.UNKNOWN)) for item, verdict in pairs]
            self.calibration[run] = judge.calibrate(matched)
            everything += matched
        self.calibration[ALL_LEVELS] = judge.calibrate(everything)

    def calibration_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"run": run, **c.as_dict()} for run, c in self.calibration.items()])


def checker_for(answer_format: str) -> ProcessFPR | None:
    """An empty ProcessFPR for the dataset's answer format, or None where there is no checker (MATH)."""
    if answer_format in EXACT_FORMATS:
        return ProcessFPR(EXACT_METHOD, EXACT_LABEL, EXACT_DEFINITION)
    if answer_format in ARITHMETIC_FORMATS:
        return ProcessFPR(ARITHMETIC_METHOD, ARITHMETIC_METHOD, ARITHMETIC_DEFINITION)
    return None
