"""The one entry helper under run_sample.py, run_train.py and run_eval.py: run the config's stage, print
its message, turn a user's mistake into one line on stderr and exit status 2 (no traceback)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The repository folder: conf/paths/default.yaml reads it (paths.root); set before Hydra composes.
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[3]))

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from .. import resolvers  # noqa: F401  (the co.* resolvers the configs use)


def run_stage(cfg: DictConfig) -> dict:
    """The Hydra task function of every entry point; returns the stage's summary."""
    from ..errors import UserError
    from ..sweep_group import group_multirun
    from . import run

    group_multirun(cfg)  # W&B: one group per sweep
    try:
        result = run(cfg)
    except (UserError, OmegaConfBaseException) as exc:
        cause = _user_error(exc, UserError)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
    if result.message:
        print(result.message)
    return result.summary


def _user_error(exc: BaseException, kinds: type[BaseException]) -> BaseException | None:
    """``exc`` or the user error behind it (a resolver's error reaches us wrapped by OmegaConf)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kinds):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
