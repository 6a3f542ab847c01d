"""Final-answer extraction from raw completions (pure string work: no sympy, never raises).

Two families of formats:

* numeric (``gsm8k``, ``arith``): the answer is one number. Priority: the last ``#### N``, the last
  ``The answer is N``, the last ``\\boxed{N}``, a "Final Answer" / Minerva sentence, and finally
  the last number of a short text or of a last line that is only a number. The number is returned
  in a canonical form (no commas, no currency, no trailing ``.0``) so that extracted answers can be
  compared or voted on as strings.
* math (``math``, ``math500``): the answer is a LaTeX string. Priority: the last ``\\boxed{}`` /
  ``\\fbox{}`` / ``\\boxed X`` (brace-matched; boxes separated only by list separators are joined
  into one list), the Minerva sentence ``Final Answer: The final answer is $X$. I hope it is
  correct.``, a "Final Answer:" / "answer is" anchor, the whole text when it is a bare answer rather
  than prose, and for short texts the last math span or number.

No answer (None): empty text, a text that stops inside an unclosed box (truncated), and a long text
with no box or answer marker: its last number is an intermediate result of an unfinished solution.
Text after the answer that a model adds (chat-template tokens, a few-shot continuation starting
with "Question:") is cut first.

Every pattern is linear in the text length (anchors are matched with short patterns and read from
bounded slices, braces are matched in one pass): extraction runs in the caller's process, where
there is no time limit.
"""

from __future__ import annotations

import itertools
import re
from fractions import Fraction
from typing import NamedTuple

# "\beginboxed" is a malformed variant some models emit; "\fbox" is the older command.
_BOX_RE = re.compile(r"\\(?:boxed|fbox|beginboxed)(?![A-Za-z])\s*")


def _brace_partners(text: str) -> dict[int, int]:
    """Position of each "{" -> position of its "}", in one pass (a truncated or adversarial text
    with thousands of open boxes must not cost one scan to the end per box)."""
    partners: dict[int, int] = {}
    stack: list[int] = []
    for m in re.finditer(r"[{}]", text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            partners[stack.pop()] = m.start()
    return partners


class _Box(NamedTuple):
    start: int  # of "\boxed"
    end: int  # after the closing "}" (or the unbraced argument)
    c0: int  # content text[c0:c1]; c0 == -1 when the box is never closed
    c1: int


def _box_spans(text: str) -> list[_Box]:
    """Every box, in order (contents as positions: slicing each nested box would be quadratic)."""
    spans: list[_Box] = []
    partners: dict[int, int] | None = None
    for m in _BOX_RE.finditer(text):
        start = m.end()
        if start >= len(text):
            spans.append(_Box(m.start(), len(text), -1, -1))
            continue
        if text[start] != "{":
            # "\boxed 2": the argument is the next token up to whitespace or "$".
            # Sentence punctuation after it ("\boxed 2.") is not part of the answer.
            tok = re.match(r"[^\s$]{1,200}", text[start : start + 200])
            arg = tok.group(0).rstrip(".,;:") if tok else ""
            if arg:
                spans.append(_Box(m.start(), start + tok.end(), start, start + len(arg)))
            continue
        if partners is None:
            partners = _brace_partners(text)
        end = partners.get(start)
        if end is None:
            spans.append(_Box(m.start(), len(text), -1, -1))
        else:
            spans.append(_Box(m.start(), end + 1, start + 1, end))
    return spans


def _content(text: str, box: _Box) -> str | None:
    return None if box.c0 < 0 else text[box.c0 : box.c1]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (brace-matched), or of ``\\boxed X``.

    Returns None when there is no box or the last one is not closed (truncated text).
    """
    spans = _box_spans(text)
    if not spans:
        return None
    return _content(text, spans[-1])


# Text allowed between two boxes that list parts of one answer: "\boxed{1}, \boxed{2}",
# "$\boxed{6}$ and $\boxed{8}$", "\boxed{(2,2)} \quad \text{and} \quad \boxed{(6,2)}".
_BOX_JOINER_RE = re.compile(
    r"^(?:\s|[,;$]|\\[()\[\]]|\\[,;: !]|\\q?quad|\\text\{\s*(?:and|or|,)?\s*\}|\band\b|\bor\b)*$"
)


def boxed_answer(text: str) -> str | None:
    """The last box, joined with the boxes right before it when only list separators lie between.

    Returns None when there is no box or the last box is unclosed.
    """
    spans = _box_spans(text)
    if not spans or spans[-1].c0 < 0:
        return None
    parts = [_content(text, spans[-1]) or ""]
    for prev, nxt in zip(reversed(spans[:-1]), reversed(spans[1:]), strict=True):
        gap = text[prev.end : nxt.start]
        # prev.end > nxt.start: nxt is nested inside prev (\boxed{\boxed{2}}); the inner one is the answer.
        if prev.c0 < 0 or prev.end > nxt.start or len(gap) > 200 or not _BOX_JOINER_RE.match(gap):
            break
        parts.append(_content(text, prev) or "")
    parts.reverse()
    # A repeated box ("\boxed{840} ... \boxed{840}") is one answer, not a list of two.
    unique = list(dict.fromkeys(p.strip() for p in parts))
    return ", ".join(unique)


def has_open_box(text: str) -> bool:
    """True when the text ends inside an unclosed ``\\boxed{`` (a truncated completion)."""
    spans = _box_spans(text)
    return bool(spans) and spans[-1].c0 < 0


# ---------------------------------------------------------------------------------------------------
# Math delimiters and anchors

_MATH_SPAN_RE = re.compile(
    r"\$\$(?P<dd>.+?)\$\$|(?<!\\)\$(?P<d>(?:\\\$|[^$])+?)(?<!\\)\$|\\\[(?P<br>.+?)\\\]|\\\((?P<pa>.+?)\\\)",
    re.DOTALL,
)


def strip_math_delimiters(s: str) -> str:
    """Remove one layer of ``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]`` around the whole string."""
    s = s.strip()
    for left, right in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            inner = s[len(left) : len(s) - len(right)]
            # "$1$ and $2$" is not one span: the inner part must not close and reopen math.
            if left == "$" and "$" in inner.replace("\\$", ""):
                continue
            return inner.strip()
    return s


def _join_math_spans(text: str) -> str | None:
    """``$1$ and $2$ and $3$`` / ``$21,16$ or $11$`` -> ``1, 2, 3`` / ``21,16, 11``; None if not that shape."""
    spans = list(_MATH_SPAN_RE.finditer(text))
    if len(spans) < 2 or text[: spans[0].start()].strip() or text[spans[-1].end() :].strip(" .\n"):
        return None
    for a, b in itertools.pairwise(spans):
        if not _BOX_JOINER_RE.match(text[a.end() : b.start()]):
            return None
    return ", ".join(_span_content(m).strip() for m in spans)


def _span_content(m: re.Match[str]) -> str:
    return next(g for g in m.groups() if g is not None)


# "Final Answer: The final answer is $X$. I hope it is correct." (Minerva / lm-eval few-shot format).
# Anchors are found with short patterns and the answer is read from a bounded slice after them:
# a pattern that scans to the end of the text from every anchor is quadratic on adversarial text,
# and extraction runs in the calling process, without a time limit.
_TAIL_CHARS = 500
_MINERVA_RE = re.compile(r"final answer is\s*:?\s*", re.IGNORECASE)
_HOPE_RE = re.compile(r"\s*\.?\s*I hope it is correct", re.IGNORECASE)
# Looser variant: "Final Answer: The volume of $ABCDEFGH$ is 120." / "Final Answer: ... 3 hours ago."
_FINAL_ANSWER_RE = re.compile(r"final answer\s*:\s*", re.IGNORECASE)
# "The answer is X", "answer: X", "Answer \[ 9 \]".
_ANSWER_RE = re.compile(r"\banswer\b(?:\s+is\b)?\s*:?\s*", re.IGNORECASE)
# What a model writes after its answer and is not part of it: chat-template tokens
# ("<|im_start|>user", "</s>") and a few-shot continuation ("\n\nQuestion: ..." with its own answer).
_CONTINUATION_RE = re.compile(r"<\|[^|>\n]{0,40}\|>|</s>|<s>|\n[ \t]*(?:Question|Problem|Q)[ \t]*:")

# Without an explicit answer marker, only a short text (a bare answer, one sentence) or a final line
# that is nothing but the answer is read for its last number: in a long text that stops without
# one, the last number is an intermediate result of an unfinished (truncated) solution.
FALLBACK_MAX_CHARS = 300


def _cut_continuation(text: str) -> str:
    """The text up to the first marker that has some answer text before it (a leading
    "<|im_start|>assistant" or "<s>" is skipped, not cut)."""
    seen = 0
    for m in _CONTINUATION_RE.finditer(text):
        if text[seen : m.start()].strip():
            return text[: m.start()]
        seen = m.end()
    return text


def _last_line(text: str) -> str:
    """The last non-empty line without markdown emphasis or end punctuation ("**42**." -> "42")."""
    lines = text.strip().rsplit("\n", 1)
    return lines[-1].strip().strip(" \t*_.,:;!?\"'`")


def _clean_tail(ans: str) -> str:
    """The answer part of ``is <ans>``: a leading math span, or the text up to the sentence end."""
    ans = ans.strip()
    m = _MATH_SPAN_RE.match(ans)
    if m:
        # A math span followed by a percent word keeps the word ("$28$ percent").
        rest = ans[m.end() :]
        pct = re.match(r"\s*(\\?%|percent(?:age)?\b|pct\b)", rest, re.IGNORECASE)
        return _span_content(m).strip() + ("\\%" if pct else "")
    # Up to the end of the sentence: ". " or a newline (a decimal point is not a sentence end).
    ans = re.split(r"\.(?:\s|$)|\n", ans, maxsplit=1)[0]
    return ans.strip().rstrip(".").strip()


def _final_answer_sentence(sentence: str) -> str | None:
    """The answer inside a free-form 'Final Answer: ...' sentence."""
    sentence = sentence.strip()
    m = list(re.finditer(r"\bis\b\s*:?\s*", _MATH_SPAN_RE.sub(lambda x: "#" * len(x.group(0)), sentence)))
    if m:
        return _clean_tail(sentence[m[-1].end() :]) or None
    sentence = sentence.rstrip(".").strip()
    if _is_bare_answer(sentence):
        return sentence
    spans = list(_MATH_SPAN_RE.finditer(sentence))
    if spans:
        return _span_content(spans[-1]).strip()
    return last_number(sentence)


def _anchor_answer(text: str) -> str | None:
    """Answer after the last Minerva / 'Final Answer:' / 'answer is' anchor, or None."""
    for m in reversed(list(_MINERVA_RE.finditer(text))[-3:]):
        tail = text[m.end() : m.end() + _TAIL_CHARS]
        hope = _HOPE_RE.search(tail)
        if hope:
            return _clean_tail(tail[: hope.start()])
    hits = list(_FINAL_ANSWER_RE.finditer(text))
    if hits:
        tail = text[hits[-1].end() : hits[-1].end() + _TAIL_CHARS].split("\n", 1)[0]
        hope = _HOPE_RE.search(tail)
        ans = _final_answer_sentence(tail[: hope.start()] if hope else tail)
        if ans:
            return ans
    for m in reversed(list(_ANSWER_RE.finditer(text))[-3:]):
        tail = text[m.end() : m.end() + _TAIL_CHARS]
        # "Answer $ 9 $" / "answer is \( x \)": a math span within a few words of the anchor.
        span = _MATH_SPAN_RE.search(tail[:200])
        if span and len(re.findall(r"[A-Za-z]{2,}", tail[: span.start()])) <= 6:
            return _span_content(span).strip()
        ans = _clean_tail(tail)
        if ans and len(ans) <= 80:
            return ans
    return None


# ---------------------------------------------------------------------------------------------------
# Numbers

# One number as written in prose: "-1,234.5", "$18.00", ".5", "1 000" is NOT taken (too ambiguous in
# running text). Thousands groups must be exactly three digits.
_NUMBER_RE = re.compile(
    r"(?<![\w.])(?P<sign>[-−])?\s?(?:\\?\$|[€£¥₹])?\s?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)


def canonical_number(token: str) -> str:
    """'1,200' -> '1200', '18.00' -> '18', '-.5' -> '-0.5', '007' -> '7' (token from _NUMBER_RE)."""
    neg = token.startswith(("-", "−"))
    num = token.lstrip("-−").replace(",", "")
    if "." in num:
        num = num.rstrip("0").rstrip(".")
    num = num.lstrip("0") or "0"
    if num.startswith("."):
        num = "0" + num
    return ("-" if neg and num != "0" else "") + num


def last_number(text: str) -> str | None:
    """The last number in the text, canonicalised; None when there is none."""
    matches = list(_NUMBER_RE.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    return canonical_number((m.group("sign") or "") + m.group("num"))


def first_number(text: str) -> str | None:
    m = _NUMBER_RE.search(text)
    if not m:
        return None
    return canonical_number((m.group("sign") or "") + m.group("num"))


# The number right after an answer anchor ("The answer is", "####", a box) may also be written as a
# fraction ("7/2", "-3/4") or with spaces between thousands groups ("1 234 567", "12 000"). Only
# there: in running prose "3 4-packs" are two numbers. A date ("12/25/2020") is not a fraction, and
# a spaced group must be exactly three digits that no word or hyphen follows ("2 100-packs").
_SPACE = "[ \u00a0\u2009\u202f]"
_ANSWER_NUMBER_RE = re.compile(
    r"(?<![\w.])(?P<sign>[-−])?\s?(?:\\?\$|[€£¥₹])?\s?"
    r"(?:(?P<numer>\d+)/(?P<denom>\d+)(?![\d/]|[.,]\d)"
    rf"|(?P<spaced>\d{{1,3}}(?:{_SPACE}\d{{3}})+(?:\.\d+)?)(?![\w-]|[.,]\d)"
    r"|(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+))"
)


def _canonical_fraction(sign: str, numer: str, denom: str) -> str:
    """'-6/8' -> '-3/4', '8/2' -> '4': lowest terms, so equal answers are equal strings."""
    value = Fraction(int(numer), int(denom))
    if sign:
        value = -value
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def answer_number(text: str) -> str | None:
    """The first number of an answer (the text after an answer anchor), canonicalised; also a
    fraction (``7/2``, in lowest terms) or thousands separated by spaces (``1 234`` -> ``1234``)."""
    m = _ANSWER_NUMBER_RE.search(text)
    if not m:
        return None
    sign = "-" if m.group("sign") else ""
    if m.group("numer") is not None:
        if int(m.group("denom")) == 0:  # "5/0" is no fraction: keep the old reading, its numerator
            return canonical_number(sign + m.group("numer"))
        return _canonical_fraction(sign, m.group("numer"), m.group("denom"))
    if m.group("spaced") is not None:
        return canonical_number(sign + re.sub(_SPACE, "", m.group("spaced")))
    return canonical_number(sign + m.group("num"))


_HASHES_RE = re.compile(r"####")
_THE_ANSWER_IS_RE = re.compile(r"answer\s+is\s*:?", re.IGNORECASE)


def extract_numeric(text: str) -> str | None:
    """GSM8K / arith answer: canonical number string or None."""
    text = _cut_continuation(text)
    for rx in (_HASHES_RE, _THE_ANSWER_IS_RE):
        hits = list(rx.finditer(text))
        if hits:
            line = text[hits[-1].end() : hits[-1].end() + 200].split("\n", 1)[0]
            n = answer_number(line)
            if n is not None:
                return n
    box = boxed_answer(text)
    if box is not None:
        n = answer_number(box)
        if n is not None:
            return n
    if has_open_box(text):
        return None
    ans = _anchor_answer(text)
    if ans is not None:
        n = answer_number(ans)
        if n is not None:
            return n
    last = _last_line(text)
    if _NUMBER_RE.fullmatch(last.lstrip("$")) or len(text.strip()) <= FALLBACK_MAX_CHARS:
        return last_number(last if _NUMBER_RE.fullmatch(last.lstrip("$")) else text)
    return None


# ---------------------------------------------------------------------------------------------------
# Math


_LATEX_CMD_RE = re.compile(r"\\[A-Za-z]+")
_PROSE_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\b")


def _is_bare_answer(text: str) -> bool:
    """A short answer (``x^2+2x+1``, ``odd $n$``, ``28 percent``) rather than a sentence of prose."""
    if "\n" in text.strip() or len(text) > 200:
        return False
    outside = _MATH_SPAN_RE.sub(" ", text)
    outside = re.sub(
        r"\\(?:text|textbf|mathrm|mbox|textnormal|mathbf|operatorname)\s*\{[^{}]*\}", " ", outside
    )
    outside = _LATEX_CMD_RE.sub(" ", outside)
    return len(_PROSE_WORD_RE.findall(outside)) <= 2


_PERCENT_WORD_RE = re.compile(r"^\s*(?:\\?%|percent(?:age)?|pct)\s*\.?\s*$", re.IGNORECASE)


def _bare_answer(text: str) -> str | None:
    """A bare answer, with math delimiters removed: ``$28$ percent`` -> ``28\\%``,
    ``$1$ and $2$`` -> ``1, 2``, ``Special matrix: $M$`` -> ``M``."""
    text = text.rstrip(".").strip()
    spans = list(_MATH_SPAN_RE.finditer(text))
    if not spans:
        return text.strip("$ ") or None  # an unpaired "$" ("0.3333$", "$18") is not part of it
    joined = _join_math_spans(text)
    if joined is not None:
        return joined
    if len(spans) == 1 and not text[: spans[0].start()].strip():
        tail = text[spans[0].end() :]
        if not tail.strip():
            return _span_content(spans[0]).strip() or None
        if _PERCENT_WORD_RE.match(tail):
            return _span_content(spans[0]).strip() + "\\%"
    # Words around the math ("Special matrix: $M$", "odd $n$"): the last span is the answer.
    return _span_content(spans[-1]).strip() or None


def extract_math(text: str) -> str | None:
    """MATH answer (LaTeX string) or None."""
    text = _cut_continuation(text)
    box = boxed_answer(text)
    if box is not None:
        return box.strip() or None
    if has_open_box(text):
        return None
    stripped = text.strip()
    if not stripped:
        return None
    ans = _anchor_answer(stripped)
    if ans:
        return strip_math_delimiters(ans) or None
    if _is_bare_answer(stripped):
        return _bare_answer(stripped)
    if len(stripped) > FALLBACK_MAX_CHARS:
        # A long text without a box or an answer marker: only a final line that is a bare answer.
        last = _last_line(stripped)
        return _bare_answer(last) if last and len(last) <= 60 and _is_bare_answer(last) else None
    spans = list(_MATH_SPAN_RE.finditer(stripped))
    if spans:
        return _span_content(spans[-1]).strip() or None
    return last_number(stripped)
