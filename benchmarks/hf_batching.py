"""How should the hf engine batch? Times the arith family's work on one family member with transformers,
all in one invocation:

- sampled: ``--sample-problems`` arith train prompts x n samples (T = 0.7), for each n in ``--samples`` (a
  sampling run's shape: the study's low budget gives WC 3 and SE 1 per problem, high 30 and 10). Baseline:
  one ``generate(num_return_sequences=n)`` call per request, seeded per request (the engine before it
  batched sampled requests). Then ``HFEngine`` at each of ``--batch-sizes`` rows per call.
- greedy: ``--problems`` test prompts, temperature 0 (an evaluation), ``HFEngine`` at each batch size.

    .venv/bin/python benchmarks/hf_batching.py [--model arith_wc] [--samples 1,3,30] [--batch-sizes 32,64,128]
    .venv/bin/python benchmarks/hf_batching.py --model arith_se --attention   # engine.hf.attn_implementation
    .venv/bin/python benchmarks/hf_batching.py --model arith_se --kv-cache    # engine.hf.grow_kv_cache

Each line: workload, setting, seconds, generated tokens; then ``RATIO`` lines: each sampled setting's time
over the per-request baseline's, each greedy batch size's over batch 64's (below 1: faster).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from compute_optimal import family
from compute_optimal.data import arith
from compute_optimal.engines import Generation, Request, SamplingSettings
from compute_optimal.engines.hf_engine import HFEngine
from compute_optimal.prompts import get_template
from compute_optimal.resolvers import conf_dir, model_config
from compute_optimal.specs import Model


def per_request(engine: HFEngine, requests: list[Request], settings: SamplingSettings) -> list[Generation]:
    """The baseline: one call per request, its n samples as num_return_sequences (torch's global RNG)."""
    torch = engine._torch
    generations = []
    for request in requests:
        ids = engine.tokenizer(request.prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            torch.manual_seed(request.seed)
            out = engine.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                num_return_sequences=request.n,
                do_sample=True,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=0,
                max_new_tokens=settings.max_new_tokens,
                stop_strings=list(settings.stop),
                tokenizer=engine.tokenizer,
                pad_token_id=engine._pad,
            )
        rows = out[:, ids.shape[1] :].tolist()
        generations.append(Generation(ids.shape[1], tuple(engine._completion(r, settings) for r in rows)))
    return generations


def timed(label: str, run: Callable[[], list[Generation]]) -> float:
    started = time.monotonic()
    generations = run()
    seconds = time.monotonic() - started
    tokens = sum(c.generated_tokens for g in generations for c in g.completions)
    print(f"{label:34s} {seconds:6.1f} s, {tokens} tokens ({tokens / seconds:.0f} tokens/s)", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="arith_wc")
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--sample-problems", type=int, default=100)
    parser.add_argument("--samples", default="1,3,30")
    parser.add_argument("--batch-sizes", default="32,64,128")
    parser.add_argument(
        "--attention",
        action="store_true",
        help="instead: eager vs sdpa attention at batch 64, one thread (a study job), greedy and sampled",
    )
    parser.add_argument(
        "--kv-cache",
        action="store_true",
        help="instead: transformers' cache vs the growing one at batch 64, one thread, greedy and sampled",
    )
    args = parser.parse_args()
    from omegaconf import OmegaConf

    loader = OmegaConf.load(conf_dir() / "dataset" / "arith.yaml").loader
    levels = list(loader.levels)
    frame = get_template("arith", 0)
    checkpoint = str(family.checkpoint(Model.from_config(model_config(args.model))))
    if args.attention:
        compare(checkpoint, frame, levels, loader.seed, args, "attn_implementation", ("sdpa", "eager"))
        return
    if args.kv_cache:
        compare(
            checkpoint,
            frame,
            levels,
            loader.seed,
            args,
            "grow_kv_cache",
            (False, True),
            {"attn_implementation": "eager"},
        )  # the study's kernel
        return
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    engines = {size: HFEngine(checkpoint, threads=2, batch_size=size) for size in sizes}
    any_engine = engines[sizes[0]]

    train = arith.generate_split("train", num_train=args.sample_problems, levels=levels, seed=loader.seed)
    sampled = SamplingSettings(temperature=0.7, max_new_tokens=160, stop=frame.stop)
    for n in (int(s) for s in args.samples.split(",")):
        requests = [Request(frame.render(p.question), n, 1000 * i) for i, p in enumerate(train)]
        base = timed(f"sampled n={n} per request", lambda r=requests: per_request(any_engine, r, sampled))
        for size, engine in engines.items():
            took = timed(f"sampled n={n} batch {size}", lambda e=engine, r=requests: e.generate(r, sampled))
            print(f"RATIO sampled n={n} batch {size} / per request: {took / base:.2f}", flush=True)

    test = arith.generate_split("test", num_test=args.problems, levels=levels, seed=loader.seed)
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=160, stop=frame.stop)
    requests = [Request(frame.render(p.question), 1, 0) for p in test]
    seconds = {
        size: timed(f"greedy batch {size}", lambda e=engine: e.generate(requests, greedy))
        for size, engine in engines.items()
    }
    if 64 in seconds:
        for size, value in seconds.items():
            print(f"RATIO greedy batch {size} / batch 64: {value / seconds[64]:.2f}", flush=True)


def compare(
    checkpoint: str,
    frame,
    levels: list[int],
    seed: int,
    args: argparse.Namespace,
    option: str,
    values: tuple,
    fixed: dict | None = None,
) -> None:
    """One ``HFEngine`` option at two values, the first the baseline (attn_implementation: transformers'
    default sdpa; grow_kv_cache: transformers' own cache), other options ``fixed``. The completions must be the same, only the
    time may differ."""
    test = arith.generate_split("test", num_test=args.problems, levels=levels, seed=seed)
    train = arith.generate_split("train", num_train=args.sample_problems, levels=levels, seed=seed)
    workloads = {
        "greedy": ([Request(frame.render(p.question), 1, 0) for p in test], 0.0),
        "sampled n=10": ([Request(frame.render(p.question), 10, 1000 * i) for i, p in enumerate(train)], 0.7),
    }
    engines = {
        value: HFEngine(checkpoint, threads=1, batch_size=64, **(fixed or {}), **{option: value})
        for value in values
    }
    base, other = values
    for label, (requests, temperature) in workloads.items():
        settings = SamplingSettings(temperature=temperature, max_new_tokens=160, stop=frame.stop)
        seconds, texts = {}, {}
        for value, engine in engines.items():
            out: list[Generation] = []

            def run(e=engine, r=requests, s=settings, o=out) -> list[Generation]:
                o.extend(e.generate(r, s))
                return o

            seconds[value] = timed(f"{label} {option}={value}", run)
            texts[value] = [c.text for g in out for c in g.completions]
        same = sum(a == b for a, b in zip(texts[base], texts[other], strict=True))
        print(f"{label}: {same} of {len(texts[base])} completions the same", flush=True)
        print(f"RATIO {label} {option}={other} / {base}: {seconds[other] / seconds[base]:.2f}", flush=True)


if __name__ == "__main__":
    main()
