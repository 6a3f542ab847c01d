"""Sample compute-matched solutions to training problems, grade them, record the budget ledger.

python run_sample.py -m model=smollm2_135m,gemma3_270m budget=low,high
python run_sample.py -m model=gemma2_9b,gemma2_27b dataset=math budget=low,high   # on GPUs
python run_sample.py --cfg job model=gemma2_9b budget=high                        # composed config
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra
from omegaconf import DictConfig

import compute_optimal.resolvers  # noqa: F401  (the co.* resolvers the configs use)


@hydra.main(config_path="conf", config_name="sample", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from compute_optimal.pipeline import USER_ERRORS, sample
    from compute_optimal.sweep_group import group_multirun

    group_multirun(cfg)  # W&B: one group per sweep
    try:
        summary = sample(cfg)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if summary.get("finished") is False:  # one shard of a sharded run; another one merges
        print(
            f"shard {summary['shard']}/{summary['num_shards']} done; {summary['missing_chunks']} chunks "
            f"of other shards to go -> {cfg.run_dir}"
        )
        return summary
    print(
        f"{summary['model']} {summary['dataset']} {summary['budget']}: {summary['samples_per_problem']} samples/problem, "
        f"accuracy {summary['accuracy']:.3f}, coverage {summary['coverage']:.3f} -> {cfg.run_dir}"
    )
    return summary


if __name__ == "__main__":
    main()
