"""Final-answer grading: is a completion's final answer equal to the gold answer?

Public API::

    extract_answer(text, answer_format) -> str | None
    answers_equal(pred, gold, answer_format, timeout_s=5.0) -> bool
    grade_completions(completions, golds, answer_format, *, timeout_s=5.0, workers=None,
                      show_progress=False) -> list[Grade]
    Grade(extracted, correct, status)        # status: "ok" | "no_answer" | "timeout" | "error"
    GradingError                             # bad arguments (unknown format, lengths differ, ...)
    gold_answer(gold, answer_format) -> str  # "#### N" / boxed solutions -> the answer
    last_boxed(text) -> str | None
    shutdown_pool()                          # stop the worker processes (also done atexit)

``answer_format``: "gsm8k" and "arith" (the answer is one number), "math" and "math500" (a LaTeX
answer). CLI: ``python -m compute_optimal.grading CASES.jsonl [--dataset gsm8k|math]``.

How a pair is decided (modules: ``extract`` -> ``normalize`` -> ``pool`` -> ``equivalence``):

1. ``extract``: the final answer is taken from the completion in this process (regex and brace
   matching only, linear time, never raises). No answer -> ``Grade(None, False, "no_answer")``.
2. ``normalize`` (fast path, no sympy, in this process): two plain numbers (thousands separators,
   currency, units, degrees, percent, ``\\frac{a}{b}``, ``a/b``, scientific notation, ``x = 5``)
   are compared as exact rationals; base-n numerals ``1011_2`` by digits and base; two answers that
   are the same string after removing layout-only LaTeX are equal. GSM8K never goes further.
3. Everything else is decided by Math-Verify (``math_verify.parse`` + ``verify(gold, pred)``, gold
   first) in a worker process with a time limit (``pool``): a soft deadline by ``setitimer`` in the
   worker, then SIGKILL of the worker and a fresh one. Overrun -> not equal, status "timeout".

Written by hand because Math-Verify lacks it (``equivalence`` / ``normalize`` / ``extract``):
extraction itself (Math-Verify's regexes take the first or several answers, not the last box, and
do not read GSM8K's ``####``); the plain-number fast path; LaTeX thousands separators (``1\\,234``
is ``1*234`` to Math-Verify, ``32,\\!349`` a list); percent inside ``\\boxed{}``; scientific
``3.54e-07``; ``74°``; bare words and multiple-choice letters; primes (``E'`` is not ``E``);
``sqrt(3)`` after a space; ``x \\in [a,b]`` and ``x \\approx 11``; numeric equation chains
``0.56 = 56\\%``; base-n numerals (Math-Verify drops the subscript: ``861_{14} == 861_{12}``); a
relative numeric pre-check (Math-Verify's absolute ``chop`` makes ``1/2^{100} == 1/2^{98}``); and
the process pool with hard time limits (Math-Verify's own timeout is ``signal.alarm``, main thread
only, and cannot stop C code).

Conventions where graders disagree (tested in tests/test_grading.py; the peer cases that take the
other side are listed in tests/test_grading_peer_cases.py):

* Several ``\\boxed{}``: boxes separated only by list separators (``,`` ``;`` ``and`` ``or``
  ``\\quad`` ``\\text{and}``, math delimiters) form one list answer (Math-Verify); anything else
  between them ("and then", "for part (a)") means the last box counts (inspect_ai, hendrycks). A
  box repeated verbatim is one answer. Consequence: 12 MATH reference solutions that box a list
  ("$\\boxed{(-2,18)}$ and $\\boxed{(8,38)}$") do not agree with their dataset gold (the last box).
* Percent: lenient both ways: ``x%`` equals ``x`` (hendrycks/math, NeMo-Skills) and ``x/100``
  (inspect_ai), when exactly one side has a percent sign; without a percent sign nothing is
  rescaled (DART-Math's ``0.0304 == 3.04`` is rejected).
* Bare comma lists ``10, 4, -2`` are unordered sets of solutions (Math-Verify; hendrycks/math
  compares them in order); parenthesised tuples ``(1, 2)`` stay ordered, ``[a, b)`` is an interval.
* Numbers are exact: ``5.001 != 5``, big integers are never rounded. A decimal written to >= 5
  places is an approximation and matches within 1e-6 absolute and 1e-4 relative (``0.333333 ==
  1/3``, ``1.4142135623730951 == \\sqrt 2``); a rounded ``0.3333`` or ``0.33`` does not equal
  ``1/3`` (Math-Verify's precision=2/4 test settings are not followed).
* Units, ``\\text{}`` words after a number, degrees and currency are ignored (``10\\text{ cm}``
  == ``10``, ``90^\\circ`` == ``90``); a base subscript is not (``861_{14} != 861_{12}``, but a
  missing subscript is tolerated: ``1011`` == ``1011_2``).
* Without a box or an answer marker ("answer is", "Final Answer:", Minerva's sentence, ``####``),
  only a short text (<= 300 characters) or a last line that is just the answer is read for its last
  number; a long text without one (typically truncated) has no answer.
* A gold answer that is itself a solution is reduced the same way (its boxes / ``####``).

Worker processes are ``python -c`` subprocesses (nothing of the caller is forked, the caller's
``__main__`` is not re-imported): the first call that needs one starts the pool (about a second),
later calls reuse it; ``answers_equal`` counts that start-up inside its ``timeout_s + 1 s`` bound.
"""

from compute_optimal.grading.extract import last_boxed
from compute_optimal.grading.grader import (
    ANSWER_FORMATS,
    Grade,
    GradingError,
    answers_equal,
    extract_answer,
    gold_answer,
    grade_completions,
)
from compute_optimal.grading.pool import shutdown_pool

__all__ = [
    "ANSWER_FORMATS",
    "Grade",
    "GradingError",
    "answers_equal",
    "extract_answer",
    "gold_answer",
    "grade_completions",
    "last_boxed",
    "shutdown_pool",
]
