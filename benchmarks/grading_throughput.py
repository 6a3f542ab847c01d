"""Grading throughput on real data: ``python benchmarks/grading_throughput.py [--limit N] [--workers W]``.

Builds completions from the real GSM8K and MATH reference solutions (read from ../shared/data or
$COMPUTE_OPTIMAL_DATA), half of them as written and half with the final number altered (so they
are wrong), grades them with ``grade_completions`` (fast path + process pool) and with a plain
single-process loop (``grade_inprocess``), and prints completions/s for both and their ratio.
Checks that both agree on every verdict and that the expected ones are correct.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

from compute_optimal.grading import gold_answer, grade_completions, last_boxed
from compute_optimal.grading.grader import _fast, grade_inprocess

DATA = Path(os.environ.get("COMPUTE_OPTIMAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
_CALC_RE = re.compile(r"<<[^>]*>>")
_LAST_NUM_RE = re.compile(r"\d+(?:\.\d+)?(?!.*\d)", re.DOTALL)
_UNIT_RE = re.compile(r"\s*\\(?:text|mbox|textnormal|mathrm)\s*\{[^{}]*\}(?:\^\{?\d\}?)?\s*$")


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _alter(number: str, rng: random.Random) -> str:
    """A different number of the same shape: 18 -> 19/17/36..., 2.5 -> 3.5."""
    if "." in number:
        whole, frac = number.split(".", 1)
        return f"{int(whole) + rng.randint(1, 9)}.{frac}"
    return str(int(number) + rng.choice([1, 2, 10, -1]) if int(number) > 2 else int(number) + 3)


def gsm8k_cases(rng: random.Random) -> tuple[list[str], list[str], list[bool]]:
    """GSM8K-style completions: reference reasoning, then "The answer is N." / "#### N" / "$N.00"."""
    comps, golds, expected = [], [], []
    for split in ("train", "test"):
        for row in _read_jsonl(DATA / "gsm8k" / f"{split}.jsonl"):
            body, gold = row["answer"].rsplit("####", 1)
            gold = gold.strip().replace(",", "")
            body = _CALC_RE.sub("", body).strip()
            for wrong in (False, True):
                ans = _alter(gold.lstrip("-"), rng) if wrong else gold.lstrip("-")
                ans = ("-" if gold.startswith("-") else "") + ans
                style = rng.randrange(4)
                if style == 0:
                    text = f"{body}\nThe answer is {ans}."
                elif style == 1:
                    text = f"{body}\n#### {ans}"
                elif style == 2:
                    text = f"{body}\nSo the total is ${int(float(ans)):,}.00 in all. The answer is ${int(float(ans)):,}."
                else:
                    text = f"{body}\nThe answer is {ans} apples."
                comps.append(text)
                golds.append(gold)
                expected.append(not wrong)
    return comps, golds, expected


def math_cases(rng: random.Random) -> tuple[list[str], list[str], list[bool]]:
    """MATH-style completions: the reference solution, and a copy whose last box has its last number
    altered (or "+1" appended when the box has no digits)."""
    comps, golds, expected = [], [], []
    for split in ("train", "test"):
        for row in _read_jsonl(DATA / "math" / f"{split}.jsonl"):
            sol = row["solution"]
            gold = last_boxed(sol)
            if not gold or not gold.strip() or sol.count("\\boxed") != 1:
                continue  # empty box, or several boxes (ambiguous which one to alter)
            comps.append(sol)
            golds.append(gold)
            expected.append(True)
            start = sol.rindex("\\boxed")
            inner_start = sol.index("{", start) + 1 if "{" in sol[start : start + 8] else None
            if inner_start is None:
                continue
            inner_end = inner_start + len(gold)
            # Not a number in a unit ("cm}^2") or after "\approx 0.67": graders ignore those.
            core = _UNIT_RE.sub("", gold.split("\\approx")[0])
            m = _LAST_NUM_RE.search(core)
            new = gold[: m.start()] + _alter(m.group(0), rng) + gold[m.end() :] if m else gold + "+1"
            comps.append(sol[:inner_start] + new + sol[inner_end:])
            golds.append(gold)
            expected.append(False)
    return comps, golds, expected


def bench(
    name: str, comps: list[str], golds: list[str], expected: list[bool], fmt: str, workers: int | None
) -> None:
    t0 = time.perf_counter()
    grades = grade_completions(comps, golds, fmt, workers=workers)
    pooled_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [grade_inprocess(c, g, fmt) for c, g in zip(comps, golds, strict=True)]
    single_s = time.perf_counter() - t0
    n = len(comps)
    needs_mv = sum(
        g.extracted is not None and _fast(g.extracted, gold_answer(gold, fmt), fmt) is None
        for g, gold in zip(grades, golds, strict=True)
    )
    mismatch = sum(a.correct != b.correct for a, b in zip(grades, single, strict=True))
    unexpected = sum(g.correct != e for g, e in zip(grades, expected, strict=True))
    timeouts = sum(g.status == "timeout" for g in grades)
    print(
        f"{name}: {n} completions ({sum(expected)} correct by construction, "
        f"{needs_mv} need Math-Verify, {len(set(zip(comps, golds, strict=True)))} distinct)\n"
        f"  grade_completions: {pooled_s:7.2f} s  {n / pooled_s:9.0f} completions/s\n"
        f"  single-process:    {single_s:7.2f} s  {n / single_s:9.0f} completions/s\n"
        f"  ratio (pool / single): {single_s / pooled_s:.2f}x   verdict mismatches: {mismatch}   "
        f"unexpected verdicts: {unexpected}   timeouts: {timeouts}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="use at most N completions per dataset")
    ap.add_argument("--workers", type=int, default=None, help="pool size (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (DATA / "gsm8k" / "train.jsonl").exists():
        print(f"real data not found at {DATA} (set COMPUTE_OPTIMAL_DATA)", file=sys.stderr)
        return 1
    rng = random.Random(args.seed)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"cores: {os.cpu_count()}  workers: {args.workers or os.cpu_count()}  load average: {load}")
    for name, build, fmt in (("GSM8K", gsm8k_cases, "gsm8k"), ("MATH", math_cases, "math")):
        comps, golds, expected = build(rng)
        if args.limit:
            comps, golds, expected = comps[: args.limit], golds[: args.limit], expected[: args.limit]
        bench(name, comps, golds, expected, fmt, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
