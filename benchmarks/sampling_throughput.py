"""Sampling throughput: the sampling stage against one bare engine call over the same requests.

    .venv/bin/python benchmarks/sampling_throughput.py [--problems 256] [--samples 1,8] [--max-new-tokens 96]

For each ``n`` in ``--samples``, in this one invocation, on the same GSM8K 8-shot prompts and the same running
engine (prefix cache reset before each pass):
1. the bare engine: ONE ``Engine.generate`` call over every request (vLLM schedules all of them at once),
2. the sampling stage: ``run_sampling`` (chunks of ``--chunk-size`` problems, grading, atomic Parquet
   chunks, summary), which streams every request through the engine in one session,
3. with ``--chunked``: one ``generate`` call per chunk, the stage before it streamed (the batch drains at
   the end of every chunk).
Prints generated tokens/s of each and the line ``stage/bare tokens/s: R``. ``--hf-problems K`` adds a plain
transformers ``generate(num_return_sequences=n)`` loop and the project's transformers engine on K prompts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from compute_optimal import models
from compute_optimal.budget import Budget
from compute_optimal.data import load_problems
from compute_optimal.engines import Engine, LazyEngine, Request, SamplingSettings, build_engine
from compute_optimal.runs import SampleRun
from compute_optimal.sampling import SamplingConfig, plan_sampling, problem_seed, run_sampling
from compute_optimal.specs import Dataset, Model, Prompt

MODELS = {
    "smollm2_135m": Model("smollm2_135m", 135e6, origin="embedded", embedded="smollm2_135m"),
    "gemma3_270m": Model("gemma3_270m", 270e6, origin="embedded", embedded="gemma3_270m"),
}


def reset_prefix_cache(engine: Engine) -> None:
    llm = getattr(engine, "_llm", None)
    if llm is not None and hasattr(llm, "reset_prefix_cache"):
        llm.reset_prefix_cache()  # so the second pass does not get the first pass's cached prompts


def hf_generate_loop(
    checkpoint: str, prompts: list[str], k: int, settings: SamplingSettings
) -> tuple[int, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    eos = tok.eos_token_id
    generated_tokens, start = 0, time.perf_counter()
    for i, prompt in enumerate(prompts):
        ids = tok(prompt, return_tensors="pt").input_ids
        torch.manual_seed(i)
        with torch.inference_mode():
            out = model.generate(
                ids,
                do_sample=True,
                temperature=settings.temperature,
                top_k=0,
                max_new_tokens=settings.max_new_tokens,
                num_return_sequences=k,
                stop_strings=list(settings.stop),
                tokenizer=tok,
                pad_token_id=eos,
            )
        for row in out[:, ids.shape[1] :].tolist():
            generated_tokens += row.index(eos) if eos in row else len(row)
    return tokens, time.perf_counter() - start


def gsm8k_train(limit: int) -> list:
    data = Path(
        os.environ.get("COMPUTE_OPTIMAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    return load_problems("gsm8k", "train", files={"train": str(data / "gsm8k" / "train.jsonl")})[:limit]


def tokens(gens) -> int:
    return sum(c.generated_tokens for g in gens for c in g.completions)


def timed(engine: Engine, run) -> tuple[int, float]:
    """(generated tokens, seconds) of ``run()``, from a cold prefix cache."""
    reset_prefix_cache(engine)
    t0 = time.perf_counter()
    generated = run()
    return generated, time.perf_counter() - t0


def measure(engine: Engine, plan, requests: list[Request], chunk_size: int, chunked: bool) -> list:
    """(name, (tokens, seconds)) of each pass over one plan's requests: bare call, stage, per-chunk calls."""
    engine.generate(requests[:1], plan.settings)  # warm-up: first-call allocations are not throughput
    rows = [
        ("bare engine call (one)", timed(engine, lambda: tokens(engine.generate(requests, plan.settings))))
    ]
    # The stage gets the running engine; the benchmark, its owner, closes it.
    stage = timed(
        engine, lambda: run_sampling(plan, LazyEngine(lambda: engine), progress=False)["generated_tokens"]
    )
    rows.append(("sampling stage", stage))
    if chunked:
        chunks = [requests[i : i + chunk_size] for i in range(0, len(requests), chunk_size)]
        per_chunk = timed(engine, lambda: sum(tokens(engine.generate(c, plan.settings)) for c in chunks))
        rows.append(("one call per chunk", per_chunk))
    return rows


def report(n: int, rows: list, max_new_tokens: int, engine: str) -> list[str]:
    (bare_t, bare_s), (stage_t, stage_s) = rows[0][1], rows[1][1]
    out = [
        f"n={n}: GSM8K 8-shot prompts x {n} samples, max {max_new_tokens} new tokens, engine {engine}",
        f"  {'':26s}{'tokens':>8s}{'seconds':>9s}{'tokens/s':>10s}",
        *[f"  {name:26s}{t:8d}{sec:9.1f}{t / sec:10.1f}" for name, (t, sec) in rows],
        f"  stage/bare tokens/s: {(stage_t / stage_s) / (bare_t / bare_s):.2f}",
    ]
    if len(rows) > 2:
        chunk_t, chunk_s = rows[2][1]
        out.append(f"  per-chunk calls/bare tokens/s: {(chunk_t / chunk_s) / (bare_t / bare_s):.2f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2_135m", choices=sorted(MODELS))
    parser.add_argument("--engine", default="auto", help="auto, vllm_cpu, vllm or hf")
    parser.add_argument("--problems", type=int, default=256, help="GSM8K train problems (8-shot prompts)")
    parser.add_argument("--samples", default="1,8", help="n per problem, comma-separated: one pass each")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--chunked", action="store_true", help="also time one generate call per chunk")
    parser.add_argument("--hf-problems", type=int, default=0, help="prompts for the (slow) plain HF loop")
    args = parser.parse_args()

    model = MODELS[args.model]
    checkpoint = models.resolve_checkpoint(model)
    problems = gsm8k_train(args.problems)
    dataset = Dataset(name="gsm8k", answer_format="gsm8k", prompt=Prompt("gsm8k", 8))
    sampling = SamplingConfig(temperature=0.7, max_new_tokens=args.max_new_tokens, chunk_size=args.chunk_size)
    engine = build_engine(
        checkpoint,
        args.engine,
        vllm_cpu={"enforce_eager": True, "kv_cache_memory_bytes": 2 << 30, "enable_chunked_prefill": False},
        hf={"dtype": "float32"},
    )
    lines: list[str] = []
    with engine, tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.samples.split(",")]:
            budget = Budget("bench", "number", args.model, n, model.params)
            plan = plan_sampling(run=SampleRun(Path(tmp) / f"n{n}"), model=model, budget=budget, dataset=dataset,
                                 problems=problems, sampling=sampling, seed=0)  # fmt: skip
            requests = [
                Request(plan.template.render(p.question), n, problem_seed(0, p.id)) for p in plan.problems
            ]
            block = report(
                n,
                measure(engine, plan, requests, args.chunk_size, args.chunked),
                args.max_new_tokens,
                engine.name,
            )
            print("\n".join(block), flush=True)
            lines += block
    if args.hf_problems:
        prompts = [r.prompt for r in requests[: args.hf_problems]]
        hf_tokens, hf_s = hf_generate_loop(checkpoint, prompts, n, plan.settings)
        with build_engine(checkpoint, "hf") as hf_engine:  # the project's transformers fallback engine
            t0 = time.perf_counter()
            hfe_tokens = tokens(hf_engine.generate(requests[: args.hf_problems], plan.settings))
            hfe_s = time.perf_counter() - t0
        lines.append(
            f"HF generate(num_return_seq): {hf_tokens / hf_s:.1f} tokens/s ({args.hf_problems} prompts x {n})"
        )
        lines.append(f"HF fallback engine:          {hfe_tokens / hfe_s:.1f} tokens/s")
    print("\n".join(["", "summary:", *lines]))


if __name__ == "__main__":
    main()
