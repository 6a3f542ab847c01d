"""GSM8K, MATH and MATH-500 loaders: local JSONL first, the Hugging Face Hub as fallback.

Both sources give rows with the same fields, so one row converter per format serves
both; every malformed row stops the load with an error naming the file and line, so a
bad copy never turns silently into a smaller or mislabelled dataset.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from compute_optimal.data.hub_datasets import read_hub
from compute_optimal.data.jsonl import Record, read_jsonl
from compute_optimal.data.problem import DatasetError, Problem
from compute_optimal.grading.extract import last_boxed

logger = logging.getLogger("compute_optimal.data")

_CALC_NOTE_RE = re.compile(r"<<[^<>]*>>")
_LEVEL_RE = re.compile(r"Level\s+(\d+|\?)")


class _SkipRow(Exception):
    """A well-formed row that has no usable gold answer (MATH: no or empty box)."""

    def __init__(self, problem_id: str) -> None:
        super().__init__(problem_id)
        self.problem_id = problem_id


def _question(rec: Record, field: str) -> str:
    text = rec.get(field, str)
    if not text.strip():
        raise rec.error(f"empty question (field {field!r})")
    return text


def _level(rec: Record) -> int | None:
    """``"Level N"`` or an int -> N; ``"Level ?"`` (two MATH train rows) -> None."""
    value = rec.get("level", (str, int))
    if isinstance(value, int):
        return value
    m = _LEVEL_RE.fullmatch(value.strip())
    if not m:
        raise rec.error(f"field 'level' must look like 'Level N' or 'Level ?', got {value!r}")
    return None if m.group(1) == "?" else int(m.group(1))


def _gsm8k(rec: Record, split: str) -> Problem:
    question = _question(rec, "question")
    answer_text = rec.get("answer", str)
    if "####" not in answer_text:
        raise rec.error("GSM8K field 'answer' has no '#### N' final-answer line")
    answer = answer_text.rsplit("####", 1)[1].strip().replace(",", "")
    if not answer:
        raise rec.error("GSM8K field 'answer' has nothing after '####'")
    return Problem(
        id=f"gsm8k-{split}-{rec.index:05d}",
        question=question,
        answer=answer,
        solution=_CALC_NOTE_RE.sub("", answer_text),
    )


def _math(rec: Record, split: str) -> Problem:
    question = _question(rec, "problem")
    solution = rec.get("solution", str)
    level = _level(rec)
    subject = rec.get("type", str)
    pid = rec.get("unique_id", str, required=False) or f"math-{split}-{rec.index:05d}"
    answer = last_boxed(solution)
    if answer is None or not answer.strip():
        raise _SkipRow(pid)
    return Problem(pid, question, answer.strip(), solution, level, subject)


def _math500(rec: Record, split: str) -> Problem:
    question = _question(rec, "problem")
    solution = rec.get("solution", str)
    answer = rec.get("answer", str)
    if not answer.strip():
        raise rec.error("empty field 'answer'")
    level = _level(rec)
    subject = rec.get("subject", str)
    pid = rec.get("unique_id", str, required=False) or f"math500-{split}-{rec.index:05d}"
    return Problem(pid, question, answer.strip(), solution, level, subject)


_Converter = Callable[[Record, str], Problem]
# format -> (valid splits, row converter, Hub dataset suggested in error messages)
_FORMATS: dict[str, tuple[tuple[str, ...], _Converter, str]] = {
    "gsm8k": (("train", "test"), _gsm8k, "hub_id=openai/gsm8k, hub_config=main"),
    "math": (
        ("train", "test"),
        _math,
        "a Hub copy of hendrycks MATH with fields problem/level/type/solution",
    ),
    "math500": (("test",), _math500, "hub_id=HuggingFaceH4/MATH-500"),
}


def _convert(records: Iterable[Record], fmt: str, split: str, converter: _Converter) -> list[Problem]:
    problems: list[Problem] = []
    first_seen: dict[str, Record] = {}
    skipped: list[str] = []
    source = None
    for rec in records:
        source = rec.source
        try:
            problem = converter(rec, split)
        except _SkipRow as skip:
            skipped.append(skip.problem_id)
            continue
        if problem.id in first_seen:
            first = first_seen[problem.id]
            raise DatasetError(
                f"{rec.source}: duplicate id {problem.id!r} on {rec.unit}s {first.lineno} and {rec.lineno}"
            )
        first_seen[problem.id] = rec
        problems.append(problem)
    if skipped:
        logger.warning(
            "%s/%s: skipped %d row(s) with no or an empty \\boxed{} answer in %s: %s",
            fmt,
            split,
            len(skipped),
            source,
            ", ".join(skipped),
        )
    return problems


def load_problems(
    format: str,
    split: str,
    *,
    files: Mapping[str, str] | None = None,
    hub_id: str | None = None,
    hub_config: str | None = None,
    hub_split: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Load one split of GSM8K ("gsm8k"), MATH ("math") or MATH-500 ("math500") as Problems.

    The local JSONL ``files[split]`` wins when it exists (offline runs, tests); otherwise
    ``datasets.load_dataset(hub_id, hub_config, split=hub_split.get(split, split))``.
    Arith problems are generated, not loaded: see ``compute_optimal.data.arith``.
    """
    if format not in _FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; valid formats: {', '.join(_FORMATS)}")
    splits, converter, hub_hint = _FORMATS[format]
    if split not in splits:
        raise DatasetError(f"unknown split {split!r} for {format}; valid splits: {', '.join(splits)}")

    path = Path(files[split]).expanduser() if files and files.get(split) else None
    if path is not None and path.is_file():
        logger.info("%s/%s: reading local file %s", format, split, path)
        problems = _convert(read_jsonl(path), format, split, converter)
    elif hub_id:
        remote_split = (hub_split or {}).get(split, split)
        if path is not None:
            logger.info("%s/%s: local file %s not found, using the Hub", format, split, path)
        logger.info(
            "%s/%s: loading Hub dataset %s (%s) split %r", format, split, hub_id, hub_config, remote_split
        )
        problems = _convert(read_hub(hub_id, hub_config, remote_split), format, split, converter)
    else:
        missing = f"local file {path} does not exist" if path else f"no local file is set for split {split!r}"
        raise DatasetError(
            f"{format}/{split}: {missing} and no hub_id is given; set files.{split} to an existing "
            f"JSONL file, or set hub_id to load from the Hugging Face Hub (e.g. {hub_hint})"
        )
    logger.info("%s/%s: loaded %d problems", format, split, len(problems))
    return problems


def select_subset(problems: Sequence[Problem], limit: int | None, seed: int) -> list[Problem]:
    """A seeded random subset of ``limit`` problems, kept in the original order.

    Random rather than the first ``limit`` rows, so a small study is not biased by file
    order (MATH is sorted by subject); the same seed always picks the same problems.
    """
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be >= 1 (or None for all problems), got {limit}")
    if limit is None or limit >= len(problems):
        return list(problems)
    picked = sorted(random.Random(seed).sample(range(len(problems)), limit))
    return [problems[i] for i in picked]
