"""Weights & Biases logging, offline unless the user configured W&B.

The mode comes from the config (default: ``$WANDB_MODE`` or ``offline``); the API key, when a
user syncs, comes from the environment (``WANDB_API_KEY``), never from a config or a log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def log_run(
    settings: Mapping[str, Any] | None,
    *,
    name: str,
    job_type: str,
    config: Mapping[str, Any],
    summary: Mapping[str, Any],
    tables: Mapping[str, Any] | None = None,
    images: Mapping[str, str | os.PathLike] | None = None,
) -> str | None:
    """Log one finished stage run; returns the W&B run folder, or None when disabled.

    ``tables``: name -> pandas DataFrame; ``images``: name -> PNG file (e.g. a report's figures).
    """
    if not settings or not settings.get("enabled", True):
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    directory = Path(settings.get("dir") or "wandb")
    directory.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=settings.get("project", "compute-optimal"),
        entity=settings.get("entity"),
        group=settings.get("group"),
        name=name,
        job_type=job_type,
        mode=settings.get("mode", "offline"),
        dir=str(directory),
        config=dict(config),
        reinit="finish_previous",
    )
    try:
        scalars = {k: v for k, v in summary.items() if isinstance(v, int | float | str | bool)}
        run.summary.update(scalars)
        for key, frame in (tables or {}).items():
            run.log({key: wandb.Table(dataframe=frame)})
        for key, path in (images or {}).items():
            run.log({key: wandb.Image(str(path))})
        return str(Path(run.dir).parent)
    finally:
        run.finish()
