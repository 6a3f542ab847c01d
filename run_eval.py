"""Evaluation-side tasks over finished runs, found by config: one task per run (conf/task/).

python run_eval.py task=data_report dataset=arith                     # WC-vs-SE synthetic-data report
python run_eval.py task=data_report task.fpr.source=judge model=gemma2_27b
python run_eval.py task=data_report task.fpr.source=human task.export_sheet=true   # label sheet
python run_eval.py task=evaluate model=smollm2_135m dataset=arith                 # a base model's test accuracy
python run_eval.py task=evaluate task.checkpoint.regime=self_improvement task.checkpoint.source=wc  # a student
python run_eval.py task=study_report dataset=arith                                # students on WC vs SE data
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra
from omegaconf import DictConfig

import compute_optimal.resolvers  # noqa: F401  (the co.* resolvers the configs use)


def tasks() -> dict[str, Callable[[DictConfig], dict]]:
    """Task name (conf/task/<name>.yaml, its `name`) -> the library function that runs it."""
    from compute_optimal import pipeline_eval, pipeline_study

    return {
        "data_report": pipeline_eval.data_report,
        "evaluate": pipeline_study.evaluate,
        "study_report": pipeline_study.study_report,
    }


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from compute_optimal.pipeline import USER_ERRORS
    from compute_optimal.sweep_group import group_multirun

    known = tasks()
    name = str(cfg.task.name)
    if name not in known:
        print(f"error: unknown task {name!r}; known: {', '.join(sorted(known))}", file=sys.stderr)
        sys.exit(2)
    group_multirun(cfg)  # W&B: one group per sweep
    try:
        result = known[name](cfg)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(result["message"])
    return result


if __name__ == "__main__":
    main()
