"""Sweep recipes: a study's stages, in order, each one Hydra (multi)run of an entry point.

    python -m compute_optimal.recipes sweeps/embedded.yaml [--dry-run] [--only STAGE] [override ...]

A recipe (``sweeps/*.yaml``) lists stages; each names its entry point (``run_sample.py``,
``run_train.py``, ``run_eval.py``) and its Hydra overrides (a comma list makes a multirun); the
recipe's ``common`` overrides go to every stage. A stage may instead name a ``module`` of this package
that takes the same overrides (``compute_optimal.family``: the pair's models trained here, before any job
needs them: two jobs of a parallel sweep would otherwise train two of them at once). Stages
run one after another: a multirun returns when all its jobs are done, locally or on SLURM
(``hydra/launcher=submitit_slurm`` among the extra overrides). Every run skips itself when its
config is already finished, so running a recipe again resumes where it stopped and redoes nothing.
Extra overrides given on the command line go to every stage too, and replace a common override of
the same key (``experiment=quick`` instead of ``sweeps/pretrained.yaml``'s ``experiment=pretrained``).

What a stage launches, job by job, without launching it: :func:`expand_jobs` (each job's overrides, the
sweep expanded as Hydra's basic sweeper does) and :func:`compose_job` (a job's composed config, as its
entry point sees it). ``compute_optimal.prefetch`` reads what a recipe touches from these configs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from .errors import UserError
from .memory import DoesNotFitError

# Each entry point and the config it composes (conf/<name>.yaml).
ENTRY_CONFIGS = {"run_sample.py": "sample", "run_train.py": "train", "run_eval.py": "eval"}
ENTRY_POINTS = tuple(ENTRY_CONFIGS)
MODULES = ("compute_optimal.family",)  # module stages: they take the recipe's overrides too
REPO_ROOT = Path(__file__).resolve().parents[2]  # where the entry points are (src/compute_optimal/..)


class RecipeError(UserError, ValueError):
    """A recipe file that does not parse or names an unknown entry point."""


@dataclass(frozen=True)
class Stage:
    name: str
    script: str | None  # an entry point, or None for a module stage
    overrides: tuple[str, ...]
    multirun: bool
    module: str | None = None  # ``python -m <module> <overrides>``: one process, no Hydra job

    def command(self, python: str, extra: tuple[str, ...] = ()) -> list[str]:
        if self.module:
            return [python, "-m", self.module, *self.overrides, *extra]
        return [python, self.script, *(["-m"] if self.multirun else []), *self.overrides, *extra]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(common: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
    """Common overrides, minus those whose key an extra override sets, then the extras."""
    keys = {_key(o) for o in extra}
    return tuple(o for o in common if _key(o) not in keys) + tuple(extra)


def compose_job(
    script: str, overrides: Sequence[str], *, conf: str | Path | None = None, hydra: bool = False
) -> DictConfig:
    """The config one job of ``script`` (an entry point) composes with ``overrides`` (one job's, e.g. from
    :func:`expand_jobs`), through Hydra's compose API on ``conf`` (default: the repository's conf/).

    ``paths.root`` is the repository folder, as the entry points set it (``PROJECT_ROOT``) where the
    environment does not. ``hydra=True`` keeps the ``hydra`` node (``hydra.sweeper.params``...). Hydra's
    errors come out as they are (``MissingConfigException`` for an unknown config group option...).
    """
    from hydra import compose, initialize_config_dir

    from . import resolvers  # the co.* resolvers the configs use, as in the entry points

    conf = Path(conf) if conf else resolvers.conf_dir()
    root = str(conf.resolve().parent).replace("'", "\\'")  # a quoted override value
    first = [] if "PROJECT_ROOT" in os.environ else [f"paths.root='{root}'"]
    with initialize_config_dir(config_dir=str(conf.resolve()), version_base="1.3"):
        return compose(
            config_name=ENTRY_CONFIGS[script], overrides=[*first, *overrides], return_hydra_config=hydra
        )


def expand_jobs(
    stage: Stage, extra: Sequence[str] = (), *, conf: str | Path | None = None
) -> list[list[str]]:
    """The overrides of each job ``stage`` launches when ``extra`` follows its own overrides on its
    command line (what :func:`run_recipe` appends: the recipe's ``common`` merged with the command line's).

    A single run is one job with the overrides as given; a module stage launches no job (none). A multirun's jobs are those Hydra's basic sweeper
    launches: the entry config's ``hydra.sweeper.params`` (an ``experiment=`` may set them) then the
    command line's overrides, each parsed by Hydra's ``OverridesParser``; an override replaces an earlier
    one of the same key; a sweep (``a,b``, ``range(4)``) gives one value per job; the jobs are the product,
    in order. Hydra's own overrides (``hydra/launcher=...``) are not swept: they come first in every job,
    as Hydra composes each job.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if stage.module:
        return []
    arguments = [*stage.overrides, *extra]
    if not stage.multirun:
        return [arguments]
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(arguments)
    hydra_overrides = [o.input_line for o in parsed if o.is_hydra_override()]
    # The sweep's config, as Hydra composes it before sweeping: a swept key keeps its default.
    master = compose_job(
        stage.script, [o.input_line for o in parsed if not o.is_sweep_override()], conf=conf, hydra=True
    )
    params = OmegaConf.select(master, "hydra.sweeper.params") or {}
    task = [o.input_line for o in parsed if not o.is_hydra_override()]
    choices: dict[str, list[str]] = {}  # key -> its values as overrides, first-seen key order
    for override in parser.parse_overrides([*(f"{k}={v}" for k, v in params.items()), *task]):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise RecipeError(
                f"stage {stage.name}: {override.input_line!r} is a {override.value_type.name} sweep, which "
                "Hydra's basic sweeper does not run; use a comma list or range()"
            )
    return [[*hydra_overrides, *job] for job in itertools.product(*choices.values())]


def _sweeps(overrides: tuple[str, ...], where: str) -> bool:
    """Whether any override is a sweep (``a,b``, ``range(3)``), as Hydra parses it: a list value
    (``task.seeds=[0,1,2]``) is one value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return any(o.is_sweep_override() for o in OverridesParser.create().parse_overrides(list(overrides)))
    except HydraException as exc:
        raise RecipeError(f"{where}: {exc}") from exc


def load_recipe(path: str | Path) -> tuple[str, list[Stage], tuple[str, ...]]:
    """Parse a recipe file; errors name the file and the stage."""
    path = Path(path)
    try:
        data: dict[str, Any] = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("stages"), list) or not data["stages"]:
        raise RecipeError(f"{path}: a recipe needs a non-empty `stages` list")
    stages = []
    for i, raw in enumerate(data["stages"]):
        name = raw.get("name", f"stage {i + 1}") if isinstance(raw, dict) else f"stage {i + 1}"
        overrides = tuple(str(o) for o in raw.get("overrides", [])) if isinstance(raw, dict) else ()
        if isinstance(raw, dict) and "module" in raw and "script" not in raw:
            if raw["module"] not in MODULES:
                raise RecipeError(f"{path}, {name}: `module` must be one of {MODULES}")
            stages.append(Stage(str(name), None, overrides, False, module=raw["module"]))
            continue
        if not isinstance(raw, dict) or raw.get("script") not in ENTRY_POINTS:
            raise RecipeError(
                f"{path}, {name}: `script` must be one of {ENTRY_POINTS} (or `module` one of {MODULES})"
            )
        multirun = bool(raw.get("multirun", _sweeps(overrides, f"{path}, {name}")))
        stages.append(Stage(str(name), raw["script"], overrides, multirun))
    common = tuple(str(o) for o in data.get("common", []))
    return str(data.get("name", path.stem)), stages, common


def run_recipe(
    path: str | Path,
    extra: tuple[str, ...] = (),
    *,
    only: str | None = None,
    dry_run: bool = False,
    python: str = sys.executable,
    cwd: str | Path | None = None,
) -> list[tuple[str, float]]:
    """Run the stages in order; stop at the first failing one (its command is printed to rerun)."""
    name, stages, common = load_recipe(path)
    extra = merge_overrides(common, extra)
    if not any(_key(o) == "logger.group" for o in extra):  # one W&B group for all stages of this run
        extra += (f"++logger.group={name}-{time.strftime('%Y%m%d-%H%M%S')}",)
    if only is not None:
        stages = [s for s in stages if s.name == only]
        if not stages:
            raise RecipeError(f"recipe {name} has no stage {only!r}")
    cwd = Path(cwd) if cwd else REPO_ROOT
    timings = []
    for i, stage in enumerate(stages, 1):
        command = stage.command(python, extra)
        print(f"[{name} {i}/{len(stages)}] {stage.name}: {shlex.join(command[1:])}", flush=True)
        if stage.script == "run_train.py":
            check_training_memory(stage, extra, show=dry_run)  # before any job of the stage is submitted
        if dry_run:
            continue
        started = time.time()
        result = subprocess.run(command, cwd=cwd)
        timings.append((stage.name, time.time() - started))
        if result.returncode != 0:
            raise SystemExit(
                f"stage {stage.name!r} failed (exit {result.returncode}); fix it and run the recipe again "
                "(finished runs are skipped)"
            )
        print(f"[{name} {i}/{len(stages)}] {stage.name} done in {timings[-1][1]:.0f} s", flush=True)
    return timings


def check_training_memory(stage: Stage, extra: Sequence[str] = (), *, show: bool = False) -> None:
    """Every training job of ``stage`` fits the site's GPUs (``site.gpu_mem_gb``; null: not checked),
    by its memory plan (``compute_optimal.memory``); the first that does not stops the recipe here.
    ``show`` (a dry run): print the largest job's estimated peak per GPU."""
    from .memory import GIB, check_fits, plan_for_config

    jobs, largest = expand_jobs(stage, extra), (0, "", None)
    for overrides in jobs:
        cfg = compose_job("run_train.py", overrides)
        limit = cfg.site.get("gpu_mem_gb")
        if limit is None and not show:
            continue
        plan = plan_for_config(cfg)
        largest = max(largest, (plan.peak, shlex.join(overrides), limit), key=lambda x: x[0])
        check_fits(plan, limit)
    if show and jobs:
        peak, overrides, limit = largest
        site = f" of {limit:g} GB" if limit is not None else ""
        print(
            f"  memory plan: at most {peak / GIB:.1f} GiB per GPU{site} over {len(jobs)} job(s) ({overrides})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", help="a sweeps/*.yaml file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides appended to every stage")
    parser.add_argument("--only", help="run just this stage")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_intermixed_args(argv)
    try:
        timings = run_recipe(args.recipe, tuple(args.overrides), only=args.only, dry_run=args.dry_run)
    except (RecipeError, DoesNotFitError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if timings:
        total = sum(t for _, t in timings)
        print(
            "stage times: "
            + ", ".join(f"{n} {t:.0f} s" for n, t in timings)
            + f"; total {total / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
