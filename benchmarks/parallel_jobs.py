"""Two jobs at once with one thread each, or one after another with two threads? Times a stage's jobs on
this machine both ways, in one invocation:

- greedy: an evaluation's work, ``--problems`` arith test prompts, temperature 0, on ``--model``
- sampled: a sampling run's work, ``--sample-problems`` arith train prompts x ``--samples`` (T = 0.7)

Baseline: job A, then job B, each a subprocess with ``--threads`` threads (what a multirun does today).
Against it: A and B started together, each with ``--threads / 2`` threads. Each job loads its model and
generates, as a stage's job does (the Python start-up is timed too).

    .venv/bin/python benchmarks/parallel_jobs.py [--model arith_se] [--threads 2]

Each line: workload, setting, wall seconds; then ``RATIO`` lines: parallel wall / sequential wall (below 1:
running two at once is faster).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def worker(args: argparse.Namespace) -> None:
    from omegaconf import OmegaConf

    from compute_optimal import family
    from compute_optimal.data import arith
    from compute_optimal.engines import Request, SamplingSettings
    from compute_optimal.engines.hf_engine import HFEngine
    from compute_optimal.prompts import get_template
    from compute_optimal.resolvers import conf_dir, model_config
    from compute_optimal.specs import Model

    loader = OmegaConf.load(conf_dir() / "dataset" / "arith.yaml").loader
    frame = get_template("arith", 0)
    checkpoint = str(family.checkpoint(Model.from_config(model_config(args.model))))
    engine = HFEngine(checkpoint, threads=args.threads)
    if args.workload == "greedy":
        problems = arith.generate_split(
            "test", num_test=args.problems, levels=loader.levels, seed=loader.seed
        )
        settings = SamplingSettings(temperature=0.0, max_new_tokens=160, stop=frame.stop)
        requests = [Request(frame.render(p.question), 1, 0) for p in problems]
    else:
        problems = arith.generate_split(
            "train", num_train=args.sample_problems, levels=loader.levels, seed=loader.seed
        )
        settings = SamplingSettings(temperature=0.7, max_new_tokens=160, stop=frame.stop)
        requests = [Request(frame.render(p.question), args.samples, 1000 * i) for i, p in enumerate(problems)]
    engine.generate(requests, settings)


def job(args: argparse.Namespace, workload: str, threads: int) -> subprocess.Popen:
    command = [
        sys.executable, __file__, "--worker", "--workload", workload, "--threads", str(threads),
        "--model", args.model, "--problems", str(args.problems),
        "--sample-problems", str(args.sample_problems), "--samples", str(args.samples),
    ]  # fmt: skip
    return subprocess.Popen(command)


def wall(label: str, start: list) -> float:
    started = time.monotonic()
    for group in start:  # each group runs together; groups one after another
        for process in [p() for p in group]:
            if process.wait() != 0:
                raise SystemExit(f"{label}: a job failed")
    seconds = time.monotonic() - started
    print(f"{label:40s} {seconds:6.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="arith_se")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--sample-problems", type=int, default=100)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--workloads", default="greedy,sampled")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    half = max(args.threads // 2, 1)
    for workload in args.workloads.split(","):
        one = lambda t, w=workload: lambda: job(args, w, t)  # noqa: E731
        sequential = wall(f"{workload}: 2 jobs in turn, {args.threads} threads", [[one(args.threads)]] * 2)
        parallel = wall(f"{workload}: 2 jobs at once, {half} thread(s) each", [[one(half), one(half)]])
        print(f"RATIO {workload} at once / in turn: {parallel / sequential:.2f}", flush=True)


if __name__ == "__main__":
    main()
