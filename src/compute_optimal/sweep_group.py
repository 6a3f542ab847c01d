"""W&B grouping of a sweep's runs (for the run_*.py entry points, which may read Hydra's runtime).

A recipe names its group itself (``logger.group=<recipe>-<time>``, the same for all its stages). A
plain multirun without one gets its sweep folder's name, so the runs of one sweep are one W&B group.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict


def group_multirun(cfg: DictConfig) -> None:
    """Set ``logger.group`` to the sweep folder's name in a multirun that has no group."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    logger = cfg.get("logger")
    if logger is None or logger.get("group") is not None or not HydraConfig.initialized():
        return
    runtime = HydraConfig.get()
    if runtime.mode == RunMode.MULTIRUN:
        with open_dict(cfg):
            cfg.logger.group = Path(str(runtime.sweep.dir)).name
