"""Sampling throughput: the sampling stage vs the bare engine call vs a plain HF generate loop.

    .venv/bin/python benchmarks/sampling_throughput.py [--model smollm2_135m] [--problems 24] [--samples 8]

All three run in this one invocation on the same few-shot prompts (arith train problems):
1. the bare engine call (``Engine.generate``), 2. the whole sampling stage (prompting, generation,
grading, atomic Parquet chunks, summary) on the same engine, 3. ``model.generate(num_return_sequences=k)``
one prompt at a time, the usual baseline, and 4. the project's transformers fallback engine. Prints generated tokens/s of each, the stage's overhead
over the bare engine, and the engine's speed-up over the plain loop.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from compute_optimal import models
from compute_optimal.budget import Budget
from compute_optimal.data.arith import generate_split
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
    tokens, start = 0, time.perf_counter()
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
            tokens += row.index(eos) if eos in row else len(row)
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2_135m", choices=sorted(MODELS))
    parser.add_argument("--engine", default="auto", help="auto, vllm_cpu, vllm or hf")
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--hf-problems", type=int, default=4, help="prompts for the (slow) plain HF loop")
    args = parser.parse_args()

    model = MODELS[args.model]
    checkpoint = models.resolve_checkpoint(model)
    problems = generate_split("train", num_train=args.problems, num_test=8, seed=7)[: args.problems]
    dataset = Dataset(name="arith", answer_format="arith", prompt=Prompt("arith"))
    budget = Budget("bench", "number", args.model, args.samples, model.params)
    sampling = SamplingConfig(temperature=0.7, max_new_tokens=args.max_new_tokens, chunk_size=args.problems)

    engine = build_engine(
        checkpoint,
        args.engine,
        vllm_cpu={"enforce_eager": True, "kv_cache_memory_bytes": 2 << 30, "enable_chunked_prefill": False},
        hf={"dtype": "float32"},
    )
    with engine, tempfile.TemporaryDirectory() as tmp:
        plan = plan_sampling(
            run=SampleRun(Path(tmp) / "run"),
            model=model,
            budget=budget,
            dataset=dataset,
            problems=problems,
            sampling=sampling,
            seed=0,
        )
        requests = [
            Request(plan.template.render(p.question), args.samples, problem_seed(1, p.id)) for p in problems
        ]
        engine.generate(requests[:1], plan.settings)  # warm-up: first-call allocations are not throughput
        reset_prefix_cache(engine)
        t0 = time.perf_counter()
        gens = engine.generate(requests, plan.settings)
        bare_s = time.perf_counter() - t0
        bare_tokens = sum(c.generated_tokens for g in gens for c in g.completions)
        reset_prefix_cache(engine)
        t0 = time.perf_counter()
        # The stage gets the running engine (already warm); its owner, the `with` above, closes it.
        summary = run_sampling(plan, LazyEngine(lambda: engine), progress=False)
        stage_s = time.perf_counter() - t0
        stage_tokens = summary["generated_tokens"]

    hf_prompts = [r.prompt for r in requests[: args.hf_problems]]
    hf_tokens, hf_s = hf_generate_loop(checkpoint, hf_prompts, args.samples, plan.settings)
    # The project's transformers fallback engine on the same prompts (what runs where vLLM does not).
    with build_engine(checkpoint, "hf") as hf_engine:
        t0 = time.perf_counter()
        gens = hf_engine.generate(requests[: args.hf_problems], plan.settings)
        hfe_s = time.perf_counter() - t0
    hfe_tokens = sum(c.generated_tokens for g in gens for c in g.completions)

    bare_tps, stage_tps, hf_tps = bare_tokens / bare_s, stage_tokens / stage_s, hf_tokens / hf_s
    hfe_tps = hfe_tokens / hfe_s
    print(
        f"model {args.model}, engine {engine.name}, {args.problems} prompts x {args.samples} samples, "
        f"max {args.max_new_tokens} new tokens"
    )
    print(f"{'':28s}{'tokens':>8s}{'seconds':>9s}{'tokens/s':>10s}")
    print(f"{'bare engine call':28s}{bare_tokens:8d}{bare_s:9.1f}{bare_tps:10.1f}")
    print(f"{'sampling stage':28s}{stage_tokens:8d}{stage_s:9.1f}{stage_tps:10.1f}")
    print(
        f"{'HF generate(num_return_seq)':28s}{hf_tokens:8d}{hf_s:9.1f}{hf_tps:10.1f}  ({args.hf_problems} prompts)"
    )
    print(
        f"{'HF fallback engine':28s}{hfe_tokens:8d}{hfe_s:9.1f}{hfe_tps:10.1f}  ({args.hf_problems} prompts)"
    )
    print(f"stage overhead over the bare engine: {100 * (bare_tps / stage_tps - 1):+.1f}% time per token")
    print(
        f"engine / plain HF loop: {bare_tps / hf_tps:.1f}x tokens/s; HF engine / plain HF loop: {hfe_tps / hf_tps:.1f}x"
    )


if __name__ == "__main__":
    main()
