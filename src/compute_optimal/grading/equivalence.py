"""The Math-Verify path: symbolic equivalence of two answer strings (runs inside pool workers).

Both answers are cleaned up (see ``prepare``), wrapped in ``\\boxed{}`` and parsed with
``math_verify.parse``; ``math_verify.verify(gold, pred)`` then decides (gold first: Math-Verify is
deliberately asymmetric, e.g. a gold ``x=3`` accepts ``3`` but a gold ``3`` does not accept an
equation ``2x=6``). What is added here by hand, because Math-Verify lacks it:

* thousands separators written as LaTeX spaces (``1\\,234`` parses as ``1*234`` otherwise);
* a percent sign on either side, inside the answer (``\\boxed{33.5\\%}``): x% equals x and x/100;
* scientific notation ``3.54e-07`` (parsed as ``3.54*E - 7`` otherwise), ``74°``;
* bare words (``odd``, ``White``, ``Evelyn``) compared as one ``\\text{}`` word, case-insensitively;
* multiple-choice letters ``(C)`` / ``\\text{(C)}`` / ``C``;
* ``x \\in [a, b]`` read as the set ``[a, b]``, ``x \\approx 11`` as ``11``; a trailing
  ``\\approx 0.577`` and a trailing backslash dropped;
* a chain of numbers ``0.56 = 56\\%`` read as its last member (sympy would evaluate it to False);
* Python-style ``sqrt(3)`` (mangled by Math-Verify after a space) and ``**``;
* primes: ``E'`` is not ``E`` (Math-Verify drops the prime);
* a relative numeric pre-check: two constant expressions whose values differ by more than 1e-5
  (relative) are unequal, without ``simplify`` (the slow part of ``verify``) and without
  Math-Verify's absolute ``chop`` (which makes ``1/2^{100}`` equal ``1/2^{98}``).

Nothing here has a time limit of its own: the caller (``pool``) runs it under a deadline.
Importing this module imports sympy (about 0.5 s); the parent process never needs to.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

import sympy
from math_verify import LatexExtractionConfig, parse, verify

from compute_optimal.grading.extract import strip_math_delimiters
from compute_optimal.grading.normalize import clean_separators

# Math-Verify logs a warning for every parse/verify call made with its own timeout disabled.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_LATEX_CONFIG = [LatexExtractionConfig(boxed_match_priority=0)]

_PERCENT_TAIL_RE = re.compile(
    r"\s*(?:\\?%|\\(?:text|mbox|textnormal|mathrm)\s*\{\s*(?:\\?%|percent(?:age)?|pct)\s*\}|\b(?:percent(?:age)?|pct)\b)\s*$",
    re.IGNORECASE,
)
_CHOICE_RE = re.compile(
    r"^\(?\s*(?:\\(?:text|textbf|mathrm|mathbf|mathcal)\s*\{\s*\(?\s*([A-Za-z])\s*\)?\s*\}|([A-E]))\s*\)?$"
)
_WORD_RE = re.compile(
    r"^(?:\\(?:text|textbf|mathrm|mathbf|mathcal|textit|mbox)\s*\{\s*([A-Za-z]{2,})\s*\}|([A-Za-z]{2,}))$"
)
_FUNCTION_WORDS = frozenset({"pi", "sin", "cos", "tan", "log", "ln", "exp", "sqrt", "infty", "inf"})


def prepare(answer: str) -> tuple[str, bool]:
    """Clean-up before parsing: (LaTeX string, whether it carried a percent sign)."""
    s = strip_math_delimiters(answer.strip())
    s = clean_separators(s).replace("−", "-").replace("**", "^")
    s = _python_sqrt(s)
    s = re.sub(r"^\s*[A-Za-z]\s*\\in\s*", "", s)  # "x \in [a, b]" is the set [a, b]
    s = re.sub(r"^\s*[A-Za-z]\s*\\approx\s*", "", s)  # "x \approx 11" states the value 11
    s = re.sub(r"\s*\\approx\s*[-+]?[\d.]+\s*$", "", s)  # "\frac{\sqrt3}{3} \approx 0.577"
    s = re.sub(r"(?<!\\)\\\s*$", "", s).strip()  # "185\"
    s = s.replace("°", "^\\circ")
    s = re.sub(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])", r"\1\\times 10^{\2}", s)
    percent = False
    m = _PERCENT_TAIL_RE.search(s)
    if m and m.start() > 0:
        percent, s = True, s[: m.start()].rstrip()
    s = s.rstrip(".").strip()
    # "0.56 = 56\%": a chain of numbers states one value; the last one carries the answer's form.
    parts = re.split(r"(?<![<>!\\])=", s)
    if len(parts) > 1 and not any(
        re.search(r"[A-Za-z]", part.replace("\\frac", "").replace("\\%", "")) for part in parts
    ):
        s = parts[-1].strip()
        m = _PERCENT_TAIL_RE.search(s)
        if m and m.start() > 0:
            percent, s = True, s[: m.start()].rstrip()
    m = _CHOICE_RE.match(s)
    if m:
        return f"\\text{{{(m.group(1) or m.group(2)).upper()}}}", percent
    m = _WORD_RE.match(s)
    if m:
        word = m.group(1) or m.group(2)
        if word.lower() not in _FUNCTION_WORDS:
            return f"\\text{{{word.lower()}}}", percent
    return s, percent


def _python_sqrt(s: str) -> str:
    """``sqrt(3)`` (Python style) -> ``\\sqrt{3}``; Math-Verify mangles it after a space."""
    out, i = [], 0
    for m in re.finditer(r"(?<![\\A-Za-z])sqrt\s*\(", s):
        if m.start() < i:
            continue
        depth, j = 0, m.end() - 1
        for j in range(m.end() - 1, len(s)):
            depth += {"(": 1, ")": -1}.get(s[j], 0)
            if depth == 0:
                break
        if depth != 0:
            return s
        out.append(s[i : m.start()] + "\\sqrt{" + _python_sqrt(s[m.end() : j]) + "}")
        i = j + 1
    return "".join(out) + s[i:]


@lru_cache(maxsize=4096)
def _parse(latex: str) -> tuple:
    # \boxed{} makes Math-Verify take the whole string as one LaTeX answer (no prose extraction).
    return tuple(parse("\\boxed{" + latex + "}", extraction_config=_LATEX_CONFIG, parsing_timeout=None))


def _constant(parsed: tuple) -> sympy.Expr | None:
    """The parsed value when it is a plain constant expression (no symbols, sets or relations)."""
    if not parsed or not isinstance(parsed[0], sympy.Expr):
        return None
    e = parsed[0]
    if not e.is_number or e.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        return None
    return e


def _clearly_different(gold: tuple, pred: tuple) -> bool:
    """Two constants whose values differ by more than 1e-5 relative: not equal.

    Saves the ``simplify`` in ``verify`` and fixes Math-Verify's absolute ``chop``, which calls
    ``1/2^{100}`` and ``1/2^{98}`` equal (both "round" to 0). Arbitrary-precision floats, so tiny and
    huge values compare correctly.
    """
    g, p = _constant(gold), _constant(pred)
    if g is None or p is None:
        return False
    try:
        gv, pv = g.evalf(30), p.evalf(30)
        scale = sympy.Max(abs(gv), abs(pv)).evalf(30)
        if not scale.is_comparable or scale == 0:
            return False
        ratio = (abs(gv - pv) / scale).evalf(30)
        return bool(ratio.is_comparable and ratio > sympy.Float("1e-5"))
    except (TypeError, ValueError, OverflowError, ArithmeticError, AttributeError):
        return False


def _verify(gold: tuple, pred: tuple) -> bool:
    if not gold or not pred:
        return False
    if _clearly_different(gold, pred):
        return False
    return bool(verify(list(gold), list(pred), timeout_seconds=None))


def math_equal(pred: str, gold: str) -> bool:
    """True when ``pred`` is mathematically equivalent to ``gold`` (both bare answer strings)."""
    p, p_pct = prepare(pred)
    g, g_pct = prepare(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    # Math-Verify drops primes ("E'" parses as E): a prime on one side only is a different answer.
    if p.count("'") != g.count("'"):
        return False
    gold_parsed, pred_parsed = _parse(g), _parse(p)
    if _verify(gold_parsed, pred_parsed):
        return True
    # Percent leniency: exactly one side says "%": also try it as a fraction of 100.
    if p_pct and not g_pct:
        return _verify(gold_parsed, _parse(f"\\frac{{{p}}}{{100}}"))
    if g_pct and not p_pct:
        return _verify(_parse(f"\\frac{{{g}}}{{100}}"), pred_parsed)
    return False


# Loads the LaTeX grammar (the first parse costs ~70 ms) and a few common shapes. A fuller warm-up
# (hundreds of answers) makes parsing ~1.7x faster, but a batch gets there by itself after a few
# hundred comparisons, and a worker that is ready sooner matters more for small calls.
_WARM_UP = (r"\frac{1}{2}", r"(1, 2)", r"[-2, 7)", r"x = 3\sqrt{5}", r"\{1, 2\}")
_warm = False


def warm_up() -> None:
    """Load the LaTeX grammar once per process (~0.1 s)."""
    global _warm
    if _warm:
        return
    _warm = True
    for latex in _WARM_UP:
        _parse(latex)
