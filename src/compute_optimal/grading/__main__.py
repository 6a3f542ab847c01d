"""``python -m compute_optimal.grading CASES.jsonl [--dataset gsm8k|math]``: grade labelled cases.

Each line has ``pred`` (a bare answer or a whole completion), ``gold``, ``equal`` (the expected
verdict) and optionally ``dataset`` (overrides ``--dataset``). Prints every case where the grader's
verdict differs from ``equal`` and, as the last line, ``agreement: N/M``. Exits 0 whenever it ran.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compute_optimal.grading.grader import ANSWER_FORMATS, GradingError, grade_completions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compute_optimal.grading", description=__doc__.split("\n")[0])
    ap.add_argument("cases", type=Path, help="JSONL file with pred, gold, equal[, dataset]")
    ap.add_argument("--dataset", default="math", choices=sorted(ANSWER_FORMATS), help="default answer format")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per comparison (default 5)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    args = ap.parse_args(argv)

    rows = []
    try:
        with args.cases.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                missing = {"pred", "gold", "equal"} - row.keys()
                if missing:
                    raise GradingError(f"{args.cases}:{lineno}: missing field(s) {sorted(missing)}")
                row["_line"] = lineno
                rows.append(row)
    except (OSError, json.JSONDecodeError, GradingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    grades = grade_completions(
        [str(r["pred"]) for r in rows],
        [str(r["gold"]) for r in rows],
        [r.get("dataset") or args.dataset for r in rows],
        timeout_s=args.timeout,
        workers=args.workers,
    )
    agree = 0
    for row, grade in zip(rows, grades, strict=True):
        if grade.correct == bool(row["equal"]):
            agree += 1
            continue
        print(
            f"line {row['_line']}: expected equal={bool(row['equal'])} got {grade.correct} "
            f"(status {grade.status}) extracted={grade.extracted!r} gold={row['gold']!r}"
        )
    print(f"agreement: {agree}/{len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
