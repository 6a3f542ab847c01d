"""Final-answer grading: is a completion's answer equal to the gold answer?

Public API::

    extract_answer(text, answer_format) -> str | None
    answers_equal(pred, gold, answer_format, timeout_s=5.0) -> bool
    grade_completions(completions, golds, answer_format, *, timeout_s=5.0, workers=None,
                      show_progress=False) -> list[Grade]
    Grade(extracted, correct, status)      # status: "ok" | "no_answer" | "timeout" | "error"
    GradingError                           # bad arguments

``answer_format``: "gsm8k" and "arith" (one number), "math" and "math500" (a LaTeX answer).
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
