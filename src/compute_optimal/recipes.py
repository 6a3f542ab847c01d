"""Sweep recipes: a study's stages, in order, each one Hydra (multi)run of an entry point.

    python -m compute_optimal.recipes sweeps/embedded.yaml [--dry-run] [--only STAGE] [override ...]

A recipe (``sweeps/*.yaml``) lists stages; each names its entry point (``run_sample.py``,
``run_train.py``, ``run_eval.py``) and its Hydra overrides (a comma list makes a multirun); the
recipe's ``common`` overrides go to every stage. Stages
run one after another: a multirun returns when all its jobs are done, locally or on SLURM
(``hydra/launcher=submitit_slurm`` among the extra overrides). Every run skips itself when its
config is already finished, so running a recipe again resumes where it stopped and redoes nothing.
Extra overrides given on the command line go to every stage too, and replace a common override of
the same key (``experiment=quick`` instead of the recipe's ``experiment=embedded``).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ENTRY_POINTS = ("run_sample.py", "run_train.py", "run_eval.py")
REPO_ROOT = Path(__file__).resolve().parents[2]  # where the entry points are (src/compute_optimal/..)


class RecipeError(ValueError):
    """A recipe file that does not parse or names an unknown entry point."""


@dataclass(frozen=True)
class Stage:
    name: str
    script: str
    overrides: tuple[str, ...]
    multirun: bool

    def command(self, python: str, extra: tuple[str, ...] = ()) -> list[str]:
        return [python, self.script, *(["-m"] if self.multirun else []), *self.overrides, *extra]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(common: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
    """Common overrides, minus those whose key an extra override sets, then the extras."""
    keys = {_key(o) for o in extra}
    return tuple(o for o in common if _key(o) not in keys) + tuple(extra)


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
        if not isinstance(raw, dict) or raw.get("script") not in ENTRY_POINTS:
            raise RecipeError(f"{path}, {name}: `script` must be one of {ENTRY_POINTS}")
        overrides = tuple(str(o) for o in raw.get("overrides", []))
        multirun = bool(raw.get("multirun", any("," in o.split("=", 1)[-1] for o in overrides)))
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
    except RecipeError as exc:
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
