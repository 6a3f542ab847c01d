"""Public grading API: extraction + fast path in this process, Math-Verify in the worker pool."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from compute_optimal.grading.extract import extract_math, extract_numeric, strip_math_delimiters
from compute_optimal.grading.normalize import fast_verdict
from compute_optimal.grading.pool import get_pool

NUMERIC_FORMATS = frozenset({"gsm8k", "arith"})
MATH_FORMATS = frozenset({"math", "math500"})
ANSWER_FORMATS = NUMERIC_FORMATS | MATH_FORMATS


class GradingError(ValueError):
    """Bad arguments to a grading function (unknown format, mismatched lengths, ...)."""


@dataclass(frozen=True)
class Grade:
    """extracted: the final answer found in the completion (None: none found);
    correct: equal to the gold answer; status: "ok", "no_answer", "timeout" or "error"."""

    extracted: str | None
    correct: bool
    status: str


def _check_format(answer_format: str) -> str:
    fmt = answer_format.lower().strip() if isinstance(answer_format, str) else answer_format
    if fmt not in ANSWER_FORMATS:
        raise GradingError(
            f"unknown answer_format {answer_format!r}; expected one of {sorted(ANSWER_FORMATS)}"
        )
    return fmt


def _check_timeout(timeout_s: float) -> float:
    if not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise GradingError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return float(timeout_s)


def extract_answer(text: str, answer_format: str) -> str | None:
    """The final answer in a raw completion, or None when it has none (empty, truncated, no answer).

    ``answer_format``: "gsm8k" / "arith" (a number, returned canonically: ``1,200.00`` -> ``1200``)
    or "math" / "math500" (a LaTeX string, e.g. the content of the last ``\\boxed{}``).
    """
    fmt = _check_format(answer_format)
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return extract_numeric(text) if fmt in NUMERIC_FORMATS else extract_math(text)
    except Exception:  # extraction is regex work on untrusted text: a bug there is "no answer"
        return None


def gold_answer(gold: str, answer_format: str) -> str:
    """The comparable gold answer: ``#### N`` / ``\\boxed{}`` solutions are reduced to their answer,
    a bare answer is kept (only math delimiters around it are removed)."""
    fmt = _check_format(answer_format)
    gold = str(gold).strip()
    if fmt in NUMERIC_FORMATS:
        if "####" in gold:
            return gold.rsplit("####", 1)[1].strip().replace(",", "")
        return gold
    if "boxed" in gold or "fbox" in gold or len(gold) > 200:
        return extract_math(gold) or gold
    return extract_math(gold) or strip_math_delimiters(gold)


# Math-Verify verdicts already computed in this process: grading the same (answer, gold) again
# (re-evaluation, other samples of the same problem) costs nothing. Timeouts are not cached.
_VERDICTS: OrderedDict[tuple[str, str], bool] = OrderedDict()
_VERDICTS_MAX = 200_000
# answers_equal's "+1 s" allowance: room for starting the pool on the first call and killing a worker.
_CALL_SLACK_S = 0.8


def _remember(key: tuple[str, str], correct: bool) -> None:
    if len(key[0]) + len(key[1]) > 2000:
        return  # not worth the memory: long answers rarely repeat
    _VERDICTS[key] = correct
    if len(_VERDICTS) > _VERDICTS_MAX:
        _VERDICTS.popitem(last=False)


def _fast(pred: str, gold: str, fmt: str = "math") -> bool | None:
    try:
        verdict = fast_verdict(pred, gold)
    except Exception:
        verdict = None  # let Math-Verify (under a time limit) have a go
    if verdict is None and fmt in NUMERIC_FORMATS:
        # A numeric answer is a canonical number string: what the fast path cannot read (a gold
        # that is not a number) is not equal, and GSM8K never waits for a worker.
        return pred.strip() == gold.strip()
    return verdict


def answers_equal(pred: str | None, gold: str, answer_format: str, timeout_s: float = 5.0) -> bool:
    """Is the extracted answer ``pred`` equal to ``gold``? False for None and on timeout.

    Plain numbers and identical strings are decided here; anything else goes to a worker process
    with a hard time limit, so the call returns within ``timeout_s`` plus well under a second.
    """
    start = time.monotonic()
    fmt = _check_format(answer_format)
    timeout_s = _check_timeout(timeout_s)
    if pred is None or not str(pred).strip():
        return False
    gold_ans = gold_answer(gold, fmt)
    pred = strip_math_delimiters(str(pred))
    verdict = _fast(pred, gold_ans, fmt)
    if verdict is not None:
        return verdict
    key = (pred, gold_ans)
    if key in _VERDICTS:
        return _VERDICTS[key]
    deadline = start + timeout_s + _CALL_SLACK_S
    [(correct, status)] = get_pool().run([key], timeout_s, overall_deadline=deadline)
    if status == "ok":
        _remember(key, correct)
    return correct


def grade_completions(
    completions: Sequence[str],
    golds: Sequence[str],
    answer_format: str | Sequence[str],
    *,
    timeout_s: float = 5.0,
    workers: int | None = None,
    show_progress: bool = False,
) -> list[Grade]:
    """Grade many completions against their gold answers; one Grade per completion, in order.

    ``answer_format`` is one format for all, or one per completion. Each comparison that needs
    Math-Verify runs in a pool of ``workers`` processes (default: all cores) with ``timeout_s`` of
    its own; a comparison that overruns is a ``timeout`` (not correct) and the batch goes on.
    """
    if isinstance(completions, str) or isinstance(golds, str):
        raise GradingError("completions and golds must be sequences of strings, not a single string")
    n = len(completions)
    if len(golds) != n:
        raise GradingError(f"got {n} completions but {len(golds)} golds")
    if isinstance(answer_format, str):
        formats = [_check_format(answer_format)] * n
    else:
        if len(answer_format) != n:
            raise GradingError(f"got {n} completions but {len(answer_format)} answer formats")
        formats = [_check_format(f) for f in answer_format]
    timeout_s = _check_timeout(timeout_s)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise GradingError(f"workers must be a positive integer or None, got {workers!r}")

    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=n, desc="grading", unit="ans")

    grades: list[Grade | None] = [None] * n
    gold_cache: dict[tuple[str, str], str] = {}
    # Pairs for Math-Verify, deduplicated: sampled completions repeat the same answers a lot.
    slow: dict[tuple[str, str], list[int]] = {}
    for i, (text, gold, fmt) in enumerate(zip(completions, golds, formats, strict=True)):
        if gold is None or not str(gold).strip():
            grades[i] = Grade(None, False, "error")  # no gold answer to compare with
            continue
        extracted = extract_answer(text, fmt) if isinstance(text, str) else None
        if extracted is None:
            grades[i] = Grade(None, False, "no_answer")
            continue
        key = (str(gold), fmt)
        gold_ans = gold_cache.get(key)
        if gold_ans is None:
            gold_ans = gold_cache[key] = gold_answer(str(gold), fmt)
        verdict = _fast(extracted, gold_ans, fmt)
        if verdict is None:
            verdict = _VERDICTS.get((extracted, gold_ans))
        if verdict is not None:
            grades[i] = Grade(extracted, verdict, "ok")
        else:
            slow.setdefault((extracted, gold_ans), []).append(i)
    if progress is not None:
        progress.update(n - sum(len(v) for v in slow.values()))

    if slow:
        tasks = list(slow)

        def on_result(task_idx: int, res: tuple[bool, str]) -> None:
            if progress is not None:
                progress.update(len(slow[tasks[task_idx]]))

        results = get_pool(workers).run(tasks, timeout_s, on_result=on_result)
        for task, (correct, status) in zip(tasks, results, strict=True):
            if status == "ok":
                _remember(task, correct)
            for i in slow[task]:
                grades[i] = Grade(task[0], correct, status)
    if progress is not None:
        progress.close()
    return [g if g is not None else Grade(None, False, "error") for g in grades]


def grade_inprocess(completion: str, gold: str, answer_format: str) -> Grade:
    """One pair in this process, without a pool or time limit: the single-process baseline used by
    the benchmark. Do not use it on untrusted input (sympy can run forever)."""
    fmt = _check_format(answer_format)
    extracted = extract_answer(completion, fmt)
    if extracted is None:
        return Grade(None, False, "no_answer")
    gold_ans = gold_answer(gold, fmt)
    verdict = _fast(extracted, gold_ans, fmt)
    if verdict is None:
        from compute_optimal.grading.equivalence import math_equal  # imports sympy: only when needed

        verdict = math_equal(extracted, gold_ans)
    return Grade(extracted, verdict, "ok")
