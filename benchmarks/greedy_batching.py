"""How should the hf engine batch greedy prompts? Times one evaluation's greedy run (``--problems`` arith test
prompts, zero-shot) on a family member with transformers, for several batch sizes, with the prompts in request
order and sorted shortest first (what ``HFEngine.stream`` does), all in one invocation.

    .venv/bin/python benchmarks/greedy_batching.py [--model arith_se] [--problems 500] [--batch-sizes 32,64,128]

Each line: batch size, order, seconds, generated tokens; then ``RATIO sorted/given`` per batch size (below 1:
sorting is faster) and every setting's time over the default's (64, sorted).
"""

from __future__ import annotations

import argparse
import time

from compute_optimal import family
from compute_optimal.data import arith
from compute_optimal.engines import Request, SamplingSettings
from compute_optimal.engines.hf_engine import HFEngine
from compute_optimal.prompts import get_template
from compute_optimal.resolvers import conf_dir, model_config
from compute_optimal.specs import Model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="arith_se")
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--batch-sizes", default="32,64,128")
    args = parser.parse_args()
    from omegaconf import OmegaConf

    loader = OmegaConf.load(conf_dir() / "dataset" / "arith.yaml").loader
    problems = arith.generate_split(
        "test", num_test=args.problems, levels=list(loader.levels), seed=loader.seed
    )
    frame = get_template("arith", 0)
    requests = [Request(frame.render(p.question), 1, 0) for p in problems]
    settings = SamplingSettings(temperature=0.0, max_new_tokens=160, stop=frame.stop)
    checkpoint = str(family.checkpoint(Model.from_config(model_config(args.model))))
    engine = HFEngine(checkpoint, threads=2)
    orders = {"given": requests, "sorted": sorted(requests, key=lambda r: len(r.prompt))}
    seconds: dict[tuple[int, str], float] = {}
    for size in (int(s) for s in args.batch_sizes.split(",")):
        for order, ordered in orders.items():
            started, tokens = time.monotonic(), 0
            for i in range(0, len(ordered), size):  # the slices HFEngine.stream hands to one generate call
                tokens += sum(
                    g.completions[0].generated_tokens
                    for g in engine._generate_greedy(ordered[i : i + size], settings)
                )
            seconds[size, order] = time.monotonic() - started
            print(f"batch {size:4d} {order:6s} {seconds[size, order]:6.1f} s, {tokens} tokens", flush=True)
        print(
            f"RATIO sorted/given batch {size}: {seconds[size, 'sorted'] / seconds[size, 'given']:.2f}",
            flush=True,
        )
    if (64, "sorted") in seconds:
        for key, value in seconds.items():
            print(f"RATIO {key[0]} {key[1]} / 64 sorted: {value / seconds[64, 'sorted']:.2f}")


if __name__ == "__main__":
    main()
