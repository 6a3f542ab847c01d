"""The fast path: string clean-up and plain-number comparison without sympy.

Decides a pair when both answers are plain numbers (integers, decimals, ``\\frac{a}{b}``, ``a/b``,
scientific notation; with thousands separators, currency, units, degrees or a percent sign around
them) or when both answers are the same string after removing layout-only LaTeX. Everything else
returns None and goes to Math-Verify.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from compute_optimal.grading.extract import strip_math_delimiters

# ---------------------------------------------------------------------------------------------------
# Clean-up shared with the Math-Verify path


def clean_separators(s: str) -> str:
    """Thousands separators written in LaTeX: ``12{,}000`` ``12,\\!000`` ``1\\,234`` -> ``12,000`` / ``1234``."""
    s = s.replace("{,}", ",")
    s = re.sub(r",\\!\s*(?=\d{3}(?!\d))", ",", s)  # "11,\! 111" is one number, "32, 349" is a list
    s = s.replace("\\!", "")
    # A thin/medium space between digit groups is a thousands separator, never multiplication.
    return re.sub(r"(?<=\d)(?:\\[,;:]|\\ |~)(?=\d{3}(?!\d))", "", s)


_TEXT_CMD = r"\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf|mathit|operatorname)\s*"
_DEGREE_RE = re.compile(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree)(?:\s*\\?(?:text\{)?\s*C\}?)?")
_PERCENT_RE = re.compile(
    rf"\s*(?:\\?%|{_TEXT_CMD}\{{\s*(?:\\?%|percent(?:age)?|pct)\s*\}}|\b(?:percent(?:age)?|pct)\b)\s*$",
    re.IGNORECASE,
)
_CURRENCY_RE = re.compile(r"^(?:\\\$|\$|€|£|¥|₹|\\(?:text|mbox)\{\s*\\?\$\s*\})\s*|\s*(?:\\\$|\$|€|£|¥|₹)$")
# Single letters that are unit symbols; any other lone letter after a number is a variable.
_LETTER_UNITS = frozenset({"m", "g", "s", "h", "L"})
# Words that are mathematics, not units: "2 pi", "3 i", "5 sqrt".
_NOT_UNITS = frozenset(
    {"pi", "i", "e", "sqrt", "sin", "cos", "tan", "log", "ln", "exp", "mod", "and", "or", "x"}
)
_UNIT_TEXT_RE = re.compile(rf"\s*{_TEXT_CMD}\{{\s*(?P<w>[^{{}}]*)\}}(?:\s*\^\s*\{{?\d\}}?)?\s*$")
# Unit words need a space after the number: "4k" or "3x" is algebra, "18 apples" is a unit.
_UNIT_WORDS_RE = re.compile(
    r"(?<=[\d}])\s+(?P<w>[A-Za-z][A-Za-z.]*(?:\s*[/ ]\s*[A-Za-z][A-Za-z.]*)*)\s*(?:\^\s*\{?\d\}?|[²³])?\s*$"
)


def strip_units(s: str) -> str:
    """``10\\text{ cm}^2`` / ``18 apples`` / ``125\\textnormal{ miles}`` -> the number part."""
    for _ in range(3):
        m = _UNIT_TEXT_RE.search(s)
        if m and m.start() > 0 and not re.search(r"percent|pct|%", m.group("w"), re.IGNORECASE):
            s = s[: m.start()].rstrip()
            continue
        m = _UNIT_WORDS_RE.search(s)
        if (
            m
            and m.start() > 0
            and re.search(r"\d\s*$", s[: m.start()])
            and not any(w.lower() in _NOT_UNITS for w in re.split(r"[\s/]+", m.group("w")))
            # A lone letter is a variable ("5 y"), except a few unit symbols ("5 m", "3 s").
            and (len(m.group("w").rstrip(".")) > 1 or m.group("w") in _LETTER_UNITS)
            and not re.search(r"percent|pct", m.group("w"), re.IGNORECASE)
        ):
            s = s[: m.start()].rstrip()
            continue
        break
    return s


@dataclass(frozen=True)
class Num:
    """A plain number: exact value, whether it was written as a decimal with >= 5 places (an
    approximation, compared with a tolerance) and whether it carried a percent sign."""

    value: Fraction
    approx: bool
    percent: bool


_INT = r"(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?: \d{3})+|\d+)"
_DECIMAL_RE = re.compile(rf"^(?P<sign>[-+])?(?P<int>{_INT})?(?:\.(?P<frac>\d*))?$")
_SCI_RE = re.compile(
    r"^(?P<m>[-+]?\d+(?:\.\d+)?)\s*(?:[eE](?P<e1>[-+]?\d+)|(?:\\times|\\cdot|\*|×)\s*10\s*\^\s*\{?\s*(?P<e2>[-+]?\d+)\s*\}?)$"
)
_FRAC_RE = re.compile(
    r"^(?P<sign>[-+])?\s*\\[dtc]?frac\s*(?:\{\s*(?P<a>[-+]?\d+)\s*\}|(?P<a1>\d))\s*(?:\{\s*(?P<b>[-+]?\d+)\s*\}|(?P<b1>\d))$"
)
_SLASH_RE = re.compile(r"^(?P<a>[-+]?\d+)\s*/\s*(?P<b>[-+]?\d+)$")
# "x = 5", "k=1", "x_1 = 3" and the mirror "5 = x": a single variable assigned a number.
_ASSIGN_LEFT_RE = re.compile(r"^[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*(?:=|\\approx)\s*(?=[^=]+$)")
_ASSIGN_RIGHT_RE = re.compile(r"(?<=[^=])\s*=\s*[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?$")


def _decimal(s: str) -> tuple[Fraction, bool] | None:
    m = _DECIMAL_RE.match(s)
    if not m or (m.group("int") is None and not m.group("frac")):
        return None
    digits = (m.group("int") or "0").replace(",", "").replace(" ", "")
    frac = m.group("frac") or ""
    value = Fraction(int(digits + frac), 10 ** len(frac))
    if m.group("sign") == "-":
        value = -value
    return value, len(frac) >= 5


def parse_number(text: str | None) -> Num | None:
    """The plain number written in ``text``, or None when it is anything else."""
    if text is None:
        return None
    s = strip_math_delimiters(text.strip())
    if not s or len(s) > 80:
        return None
    s = clean_separators(s).replace("−", "-").replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\s*\.$", "", s).strip()
    s = re.sub(r"^\\boxed\s*\{(.*)\}$", r"\1", s).strip()
    s = _ASSIGN_LEFT_RE.sub("", s)
    s = _ASSIGN_RIGHT_RE.sub("", s)
    percent = False
    m = _PERCENT_RE.search(s)
    if m:
        percent = True
        s = s[: m.start()].rstrip()
    s = _DEGREE_RE.sub("", s)
    s = strip_units(s)
    neg = False
    if s.startswith("-"):
        neg, s = True, s[1:].lstrip()
    s = _CURRENCY_RE.sub("", s).strip()
    if not percent:
        m = _PERCENT_RE.search(s)
        if m:
            percent = True
            s = s[: m.start()].rstrip()
    if s.startswith("-") and not neg:
        neg, s = True, s[1:].lstrip()
    if not s:
        return None
    value: Fraction | None = None
    approx = False
    dec = _decimal(s)
    if dec is not None:
        value, approx = dec
    elif m := _SCI_RE.match(s):
        mant = _decimal(m.group("m"))
        if mant is None:
            return None
        exp = int(m.group("e1") or m.group("e2"))
        if abs(exp) > 400:
            return None  # not a "plain" number any more; let sympy (under a time limit) decide
        value = mant[0] * Fraction(10) ** exp
        approx = mant[1]
    elif m := _FRAC_RE.match(s):
        a, b = int(m.group("a") or m.group("a1")), int(m.group("b") or m.group("b1"))
        if b == 0:
            return None
        value = Fraction(a, b) * (-1 if m.group("sign") == "-" else 1)
    elif m := _SLASH_RE.match(s):
        a, b = int(m.group("a")), int(m.group("b"))
        if b == 0:
            return None
        value = Fraction(a, b)
    if value is None:
        return None
    return Num(-value if neg else value, approx, percent)


def _close(a: Fraction, b: Fraction, approx: bool) -> bool:
    if a == b:
        return True
    if not approx:
        return False
    diff = abs(a - b)
    # An approximation written to >= 5 places: within 1e-6 absolute and 1e-4 relative.
    return diff <= Fraction(1, 10**6) and diff <= Fraction(1, 10**4) * max(abs(a), abs(b))


def numbers_equal(pred: Num, gold: Num) -> bool:
    """Exact rational comparison; percent is lenient: ``x%`` equals both ``x`` and ``x/100``."""
    approx = pred.approx or gold.approx
    if _close(pred.value, gold.value, approx):
        return True
    if pred.percent != gold.percent:
        scaled_pred = pred.value / 100 if pred.percent else pred.value
        scaled_gold = gold.value / 100 if gold.percent else gold.value
        return _close(scaled_pred, scaled_gold, approx)
    return False


# ---------------------------------------------------------------------------------------------------
# Layout-only normalisation for the "same string" shortcut

_LAYOUT_RE = re.compile(r"\\left(?![a-z])|\\right(?![a-z])|\\[,;:! ]|\\q?quad|\s+|\\displaystyle")


def layout_key(s: str) -> str:
    """The answer without spacing and sizing commands (two answers with equal keys are equal)."""
    s = strip_math_delimiters(s.strip())
    s = _LAYOUT_RE.sub("", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    return s.rstrip(".")


# A numeral in another base: "1011_2", "204_{5}", "A3_{16}" (Math-Verify drops the subscript).
_BASE_RE = re.compile(
    r"^(?P<sign>-)?(?P<digits>[0-9A-Za-z]*\d[0-9A-Za-z]*(?:\.[0-9A-Za-z]+)?)_\{?\s*(?P<base>\d+)\s*\}?$"
)
_DIGITS_RE = re.compile(r"^-?[0-9A-Za-z]*\d[0-9A-Za-z]*(?:\.[0-9A-Za-z]+)?$")


def _base_numeral(s: str) -> tuple[str, int | None] | None:
    """("-1011", 2) for ``-1011_2``; (digits, None) for bare digits; None for anything else."""
    s = strip_math_delimiters(s.strip()).rstrip(".").strip()
    if len(s) > 80:
        return None
    m = _BASE_RE.match(s)
    if m:
        # Digits invalid in the base ("10200_2") still make a (wrong) base-n answer, not a variable.
        digits = m.group("digits").upper().lstrip("0") or "0"
        return (m.group("sign") or "") + digits, int(m.group("base"))
    if _DIGITS_RE.match(s):
        return s.upper().lstrip("0") or "0", None
    return None


def base_verdict(pred: str, gold: str) -> bool | None:
    """Base-n numerals: same digits, and the same base where both state one (a missing subscript is
    tolerated: ``1011`` answers ``1011_2``). None when neither side is a base-n numeral."""
    if "_" not in pred and "_" not in gold:
        return None
    p, g = _base_numeral(pred), _base_numeral(gold)
    if p is None or g is None or (p[1] is None and g[1] is None):
        return None
    if p[1] is not None and g[1] is not None and p[1] != g[1]:
        return False
    return p[0] == g[0]


_PLAIN_DECIMAL_RE = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)$")


def _canonical_decimal(s: str) -> str:
    """'-007.50' -> '-7.5' (string work only: ints of more than 4300 digits cannot be parsed)."""
    neg = s.startswith("-")
    whole, _, frac = s.lstrip("-").partition(".")
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    out = whole + ("." + frac if frac else "")
    return "-" + out if neg and out != "0" else out


def fast_verdict(pred: str, gold: str) -> bool | None:
    """True/False when decidable without sympy, else None."""
    if not pred.strip():
        return False
    if layout_key(pred) == layout_key(gold):
        return True
    p, g = pred.strip(), gold.strip()
    if (len(p) > 80 or len(g) > 80) and _PLAIN_DECIMAL_RE.match(p) and _PLAIN_DECIMAL_RE.match(g):
        return _canonical_decimal(p) == _canonical_decimal(g)  # too long for parse_number
    verdict = base_verdict(pred, gold)
    if verdict is not None:
        return verdict
    g = parse_number(gold)
    if g is None:
        return None
    p = parse_number(pred)
    if p is None:
        return None
    return numbers_equal(p, g)
