"""Data quality of one sampling run: coverage@k, diversity@k and per-level / per-subject tables.

What counts as a *distinct* correct solution is defined once, by :func:`normalize_solution` (and an
optional near-duplicate threshold, :func:`solution_classes`); the report prints that definition next
to its diversity figure. Beside it, diversity by *reasoning chain*: two correct solutions are one
chain when they write the same computations in the same order
(:func:`compute_optimal.process_check.reasoning_chain`), whatever their words; this is the count that
asks whether more samples bring other ways of solving a problem, not other phrasings. The estimators themselves are in :mod:`compute_optimal.metrics`.
"""

from __future__ import annotations

import inspect
import re
import unicodedata
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

import pandas as pd

from . import metrics
from .errors import UserError

ALL_LEVELS = "all"  # the one group of a dataset without difficulty levels (GSM8K)


class AnalysisError(UserError, ValueError):
    """Inputs that cannot be analysed or compared: mismatched runs, malformed tables or label sheets."""


# A LaTeX command name ends where letters end: "\cdot5" is \cdot then 5.
_LATEX_SPACING = re.compile(r"\\[!,;:> ]|\\q?quad(?![a-z])|\\left(?![a-z])|\\right(?![a-z])|~|\$")
_TIMES = re.compile(r"\\times(?![a-z])|\\cdot(?![a-z])|[×·⋅∙]|(?<=\d)\s*x\s*(?=\d)")
_THOUSANDS = re.compile(r"(?<=\d)(?:,|\{,\})(?=\d{3}(?!\d))")
_TRAILING_ZEROS = re.compile(r"(?<![\d.])(\d+)\.(\d*?)0+(?![\d.])")
# Empty replacements (no group templates): normalisation runs on every correct sample of a run.
_SPACE_AROUND_SYMBOLS = re.compile(r"\s+(?=[^\w\s])|(?<=[^\w\s])\s+")


def normalize_solution(text: str) -> str:
    """The canonical form of a solution's text. Two correct solutions of one problem are *distinct*
    when their canonical forms differ (and, with a near-duplicate threshold t, when their canonical
    forms are less than t similar by difflib's ratio).

    Rules, in this order:
    1. Unicode NFKC (full-width digits, non-breaking spaces -> plain characters), then lower case.
    2. LaTeX layout is dropped: spacing commands (\\! \\, \\; \\: \\quad \\qquad ~), \\left, \\right
       and $ signs; \\dfrac and \\tfrac become \\frac.
    3. Multiplication signs are unified: \\times, \\cdot, ×, ·, ⋅ and "x" between digits -> *.
    4. Numbers: thousands separators are removed (1,000 -> 1000) and trailing zeros of decimals
       dropped (2.50 -> 2.5, 3.0 -> 3).
    5. Whitespace: runs of whitespace become one space; spaces next to punctuation and operators
       are removed (3+4 = 7. and 3 + 4=7 . are the same); leading and trailing space is stripped.
    Wording, the order of steps and the numbers themselves are left alone: solutions that differ in
    any of them are distinct.
    """
    s = unicodedata.normalize("NFKC", text).lower()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _LATEX_SPACING.sub(" ", s)
    s = _TIMES.sub("*", s)
    s = _THOUSANDS.sub("", s)
    s = _TRAILING_ZEROS.sub(lambda m: m.group(1) + (f".{m.group(2)}" if m.group(2) else ""), s)
    s = " ".join(s.split())
    return _SPACE_AROUND_SYMBOLS.sub("", s).strip()


def distinct_definition(near_duplicate: float | None = None) -> str:
    """The definition of "distinct" in words (for reports): normalize_solution's docstring + threshold."""
    text = inspect.cleandoc(normalize_solution.__doc__ or "")
    if near_duplicate is None:
        tail = "Near-duplicates: off (exact match of canonical forms)."
    else:
        tail = (
            f"Near-duplicates: on, threshold {near_duplicate:g}: a solution whose canonical form has a "
            "difflib.SequenceMatcher ratio >= the threshold with an earlier distinct solution of the same "
            "problem joins that solution's class."
        )
    return f"{text}\n{tail}"


def solution_classes(texts: Sequence[str], near_duplicate: float | None = None) -> list[int]:
    """Sizes of the duplicate classes of ``texts`` (the correct solutions of one problem).

    Exact classes are equal canonical forms. With ``near_duplicate`` (0 < t <= 1), classes are then
    merged greedily in order of first appearance: a class joins the first earlier class whose
    representative is at least ``t`` similar (difflib ratio), so the result does not depend on sorting.
    """
    exact: dict[str, int] = {}
    for text in texts:
        key = normalize_solution(str(text))
        exact[key] = exact.get(key, 0) + 1
    if near_duplicate is None:
        return list(exact.values())
    if not 0 < near_duplicate <= 1:
        raise AnalysisError(f"near_duplicate must be in (0, 1], got {near_duplicate}")
    reps: list[str] = []
    sizes: list[int] = []
    for key, size in exact.items():
        for i, rep in enumerate(reps):
            matcher = SequenceMatcher(None, rep, key, autojunk=False)
            if matcher.real_quick_ratio() >= near_duplicate and matcher.ratio() >= near_duplicate:
                sizes[i] += size
                break
        else:
            reps.append(key)
            sizes.append(size)
    return sizes


def level_label(level: Any) -> str:
    """The per-level group of a problem: its level as text, or "all" for datasets without levels."""
    return ALL_LEVELS if level is None or pd.isna(level) else str(int(level))


def problem_table(frame: pd.DataFrame, near_duplicate: float | None = None) -> pd.DataFrame:
    """One row per problem: level group, subject, samples ``n``, correct ``c``, and the class sizes of its
    correct samples by distinct text (``classes``) and by reasoning chain (``chains``)."""
    from .process_check import reasoning_chain  # process_check builds on this module

    missing = {"problem_id", "level", "subject", "completion", "correct"} - set(frame.columns)
    if missing:
        raise AnalysisError(f"the samples table lacks columns {sorted(missing)}")
    if frame.empty:
        raise AnalysisError("the samples table is empty")
    correct = frame["correct"].astype(bool)
    table = (
        frame.assign(correct=correct)
        .groupby("problem_id", sort=False)
        .agg(
            level=("level", "first"),
            subject=("subject", "first"),
            n=("correct", "size"),
            c=("correct", "sum"),
        )
    )
    texts = frame.loc[correct, "completion"].astype(str)
    ids = frame.loc[correct, "problem_id"]
    if near_duplicate is None:  # vectorised: one normalisation per correct sample, then counts
        canonical = {t: normalize_solution(t) for t in set(texts)}  # duplicates are common
        keys = pd.DataFrame({"problem_id": ids, "key": texts.map(canonical)})
        sizes = keys.groupby(["problem_id", "key"], sort=False).size()
        classes = sizes.groupby(level="problem_id", sort=False).agg(list)
    else:
        classes = texts.groupby(ids, sort=False).agg(lambda t: solution_classes(list(t), near_duplicate))
    table["classes"] = classes.reindex(table.index).apply(lambda v: v if isinstance(v, list) else [])
    chain_of = {t: reasoning_chain(t) for t in set(texts)}
    chain_keys = pd.DataFrame({"problem_id": ids, "key": texts.map(chain_of)})
    chains = (
        chain_keys.groupby(["problem_id", "key"], sort=False)
        .size()
        .groupby(level="problem_id", sort=False)
        .agg(list)
    )
    table["chains"] = chains.reindex(table.index).apply(lambda v: v if isinstance(v, list) else [])
    table["level"] = table["level"].map(level_label)
    table["subject"] = table["subject"].map(lambda v: None if v is None or pd.isna(v) else str(v))
    table["c"] = table["c"].astype(int)
    return table.reset_index()


def _sort_key(label: str) -> tuple[int, Any]:
    return (0, int(label)) if label.isdigit() else (1, label)


def _group_stats(table: pd.DataFrame, n: int) -> dict[str, Any]:
    solved = int((table["c"] > 0).sum())
    low, high = metrics.wilson_interval(solved, len(table))
    return {
        "num_problems": len(table),
        "accuracy": float(table["c"].sum() / table["n"].sum()),
        "coverage": metrics.coverage_at_k(zip(table["n"], table["c"], strict=True), n),
        "coverage_ci": [low, high],
        "diversity": metrics.diversity_at_k(zip(table["n"], table["classes"], strict=True), n),
        "diversity_chains": metrics.diversity_at_k(zip(table["n"], table["chains"], strict=True), n),
    }


def data_quality(
    frame: pd.DataFrame, samples_per_problem: int, *, near_duplicate: float | None = None
) -> dict[str, Any]:
    """Coverage and diversity of one run's samples, for its summary.json and the data report.

    coverage_at_k / diversity_at_k / diversity_chains_at_k: lists for k = 1..samples_per_problem (unbiased
    estimators, see :mod:`compute_optimal.metrics`; diversity by distinct text and by reasoning chain).
    per_level / per_subject: {group: {num_problems, accuracy, coverage, coverage_ci (95% Wilson over
    problems), diversity, diversity_chains}} at k = samples_per_problem; levels
    are "1".."5" (MATH, arith) or "all" (GSM8K); per_subject is empty where there are no subjects.
    """
    table = problem_table(frame, near_duplicate)
    n = int(samples_per_problem)
    wrong = table.loc[table["n"] != n, "problem_id"].tolist()
    if wrong:
        raise AnalysisError(
            f"{len(wrong)} problem(s) do not have {n} samples (e.g. {wrong[0]!r}): the table does not "
            "belong to a run with that many samples per problem"
        )
    counts = list(zip(table["n"], table["c"], strict=True))
    classes = list(zip(table["n"], table["classes"], strict=True))
    chains = list(zip(table["n"], table["chains"], strict=True))
    per_level = {
        label: _group_stats(group, n)
        for label, group in sorted(table.groupby("level"), key=lambda item: _sort_key(item[0]))
    }
    with_subject = table[table["subject"].notna()]
    per_subject = {str(s): _group_stats(group, n) for s, group in sorted(with_subject.groupby("subject"))}
    return {
        "coverage_at_k": metrics.coverage_curve(counts, n),
        "diversity_at_k": metrics.diversity_curve(classes, n),
        "diversity_chains_at_k": metrics.diversity_curve(chains, n),
        "distinct_correct": int(sum(len(c) for c in table["classes"])),
        "distinct_chains": int(sum(len(c) for c in table["chains"])),
        "diversity_near_duplicate": near_duplicate,
        "per_level": per_level,
        "per_subject": per_subject,
    }
