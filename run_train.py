"""Fine-tune a student on compute-matched samples (one regime, one data source), with Lightning.

python run_train.py -m regime=self_improvement,weak_to_strong data.source=wc,se dataset=arith budget=high
python run_train.py pair=gemma2 regime=knowledge_distillation dataset=math budget=high trainer=deepspeed_zero2
python run_train.py --cfg job regime=weak_to_strong                                # composed config
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra
from omegaconf import DictConfig

import compute_optimal.resolvers  # noqa: F401  (the co.* resolvers the configs use)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from compute_optimal.pipeline import USER_ERRORS, train
    from compute_optimal.sweep_group import group_multirun

    group_multirun(cfg)  # W&B: one group per sweep
    try:
        summary = train(cfg)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if summary:  # empty on non-zero ranks of a multi-process run
        print(
            f"{summary['regime']}: {summary['student']} on {summary['data_source'].upper()} data "
            f"({summary['num_examples']} examples, {summary['steps']} steps, final loss {summary['final_loss']:.3f}) "
            f"-> {summary['checkpoint']}"
        )
    return summary


if __name__ == "__main__":
    main()
