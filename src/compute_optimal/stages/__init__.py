"""The stages, one module each, mirroring the commands: every module has ``run(cfg) -> StageResult``.

==============  ==========================================  =============================================
stage           command                                     writes
==============  ==========================================  =============================================
sample          python run_sample.py model=... budget=...   outputs/sample/<dataset>/<model>/<budget>/seed<s>
train           python run_train.py regime=... data.sampler=... outputs/train/<dataset>/<regime>/<student>/...
evaluate        python run_eval.py task=evaluate ...        outputs/eval/<dataset>/<target>/seed<s>
data_report     python run_eval.py task=data_report         outputs/reports/data/<dataset>/<wc>-vs-<se>/...
study_report    python run_eval.py task=study_report        outputs/reports/study/<wc>-vs-<se>-seed<s> (-seeds0-1-2)
budget_sweep    python run_eval.py task=budget_sweep        outputs/reports/budget_sweep/<dataset>/<wc>-vs-<se>/...
==============  ==========================================  =============================================

A composed config names its stage (``stage:`` in conf/sample.yaml, conf/train.yaml; ``task.name`` in
conf/eval.yaml); :func:`run` dispatches on it. :mod:`.common` holds what every stage shares.
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from .common import StageResult

STAGES = ("sample", "train", "evaluate", "data_report", "study_report", "budget_sweep")


def run(cfg: DictConfig) -> StageResult:
    """Run the stage ``cfg.stage`` names."""
    from ..runs import RunError

    name = cfg.stage
    if name not in STAGES:
        raise RunError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    return importlib.import_module(f"{__name__}.{name}").run(cfg)
