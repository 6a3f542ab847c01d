"""Fill the Hugging Face cache with every model and dataset a recipe touches, once, before the jobs run.

    python -m compute_optimal.prefetch sweeps/paper.yaml [--dry-run] [override ...]

Run it on a login node (it needs the Hub; Gemma is gated: accept its license on the Hub, then
``hf auth login`` or ``export HF_TOKEN=...``), with the ``HF_HOME`` the jobs will use. The jobs then read
the cache only (``export HF_HUB_OFFLINE=1`` in the site config's ``setup``), instead of 16 training
ranks plus vLLM asking the Hub at once.

What a recipe touches is read from the configs its jobs compose: each stage's jobs as the recipe would
launch them (``compute_optimal.recipes.expand_jobs``: the stage's overrides, the recipe's ``common``
ones and the extra ones on this command line merged as ``compute_optimal.recipes`` does, sweeps
expanded as Hydra's sweeper does, an ``experiment=``'s included), each composed with Hydra
(``recipes.compose_job``). From each job's config: the ``model`` (where the entry config composes
one), the members of the ``pair`` (wc, se, distill_student), the student a training job trains, the
model an evaluation task loads (``task.loads``: the base model or student evaluated, the data report's
judge with ``task.fpr.method=judge``), and the ``dataset``. Models with ``origin: hub`` are downloaded
(weights as safetensors, config and tokenizer files; never pickles or GGUF); embedded and random models
need nothing (a random model's tokenizer comes from the model it names). A dataset whose local JSONL
files all exist needs nothing; otherwise ``datasets.load_dataset(hub_id, hub_config)``.
With ``HF_HUB_OFFLINE=1`` set, a run downloads nothing and checks that everything is in the cache.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError
from .models import ModelError
from .recipes import ENTRY_CONFIGS, RecipeError, Stage, compose_job, expand_jobs, load_recipe, merge_overrides
from .resolvers import conf_dir, model_config
from .specs import Dataset, Model, SpecError

__all__ = ["ENTRY_CONFIGS", "Item", "PrefetchError", "job_touches", "main", "plan"]

PAIR_MEMBERS = ("wc", "se", "distill_student")
# What vLLM and transformers load from a model repository: the safetensors weights (and their index),
# config.json, generation_config.json, the tokenizer (tokenizer.json, tokenizer_config.json,
# special_tokens_map.json; SentencePiece's tokenizer.model). Never the pickled *.bin / *.pth weights
# or the GGUF file some repositories also hold (google/gemma-7b: a 34 GB gemma-7b.gguf).
MODEL_FILES = ("*.safetensors", "*.json", "tokenizer.model")


class PrefetchError(UserError, ValueError):
    """A recipe or override names a config that does not exist, or a job's config does not compose."""


class FetchError(OSError):
    """This machine cannot fetch an item (a package is missing); the message says what to do."""


@dataclass(frozen=True)
class Item:
    kind: str  # "model" | "dataset"
    name: str  # its conf/<kind>/<name>.yaml
    hub_id: str | None  # what to fetch from the Hub; None: nothing
    hub_config: str | None = None  # a dataset's Hub configuration
    note: str = ""  # why nothing is fetched

    def describe(self) -> str:
        if self.hub_id is None:
            return f"{self.kind:<7} {self.name:<15} {self.note}"
        config = f" ({self.hub_config})" if self.hub_config else ""
        return f"{self.kind:<7} {self.name:<15} hub {self.hub_id}{config}"


def _model(node: Any) -> Model | None:
    """A model config node of a composed job (None where the job has none)."""
    return Model.from_config(node) if isinstance(node, DictConfig) else None


@functools.cache
def _named_model(name: str, conf: str) -> Model:
    """``conf/model/<name>.yaml`` (ModelError for an unknown name); read once: the jobs of a recipe
    name the same few models."""
    return Model.from_config(model_config(name, conf))


def job_touches(cfg: DictConfig, conf: Path | None = None) -> tuple[list[Model], list[Dataset]]:
    """The models and datasets one composed job (``recipes.compose_job``) uses: its ``model`` (a sampling
    job's), the members of its ``pair`` (names: their ``<conf>/model/`` files), the student it trains, the
    model its task loads (an evaluated model or student, a judge), and its ``dataset``."""
    conf = Path(conf or conf_dir())
    found = [_model(cfg.get("student"))]
    task = cfg.get("task")
    if isinstance(task, DictConfig):  # run_eval.py: only the model the task runs (task.fpr.judge_model,
        found.append(_model(task.get("loads")))  # ...), not eval.yaml's default `model` a report ignores
    else:
        found.append(_model(cfg.get("model")))
    pair = cfg.get("pair")
    for member in PAIR_MEMBERS if isinstance(pair, DictConfig) else ():
        name = pair.get(member)
        if name not in (None, "None"):
            found.append(_named_model(str(name), str(conf)))
    dataset = cfg.get("dataset")
    datasets = [Dataset.from_config(dataset)] if isinstance(dataset, DictConfig) else []
    return [m for m in found if m is not None], datasets


def _user_error(exc: BaseException) -> BaseException | None:
    """The user's mistake behind an error composing or reading a job's config (OmegaConf wraps a
    resolver's error; Hydra names an unknown config group option); None for anything else (a bug)."""
    from hydra.errors import HydraException, MissingConfigException

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MissingConfigException) and seen.missing_cfg_file:
            group, _, name = seen.missing_cfg_file.rpartition("/")
            known = f"; known: {sorted(seen.options)}" if seen.options else ""
            return PrefetchError(f"unknown {group or 'config'} {name!r}{known}")
        if isinstance(seen, ValueError):  # ModelError, SpecError, BudgetError, RegimeError...
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc if isinstance(exc, HydraException | OmegaConfBaseException) else None


def _stage_error(stage: Stage, job: list[str] | None, exc: Exception) -> PrefetchError | None:
    """One line: an unknown name as it is; another user error with the stage (and job) it comes from;
    None for anything else."""
    error = _user_error(exc)
    if error is None:
        return None
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    if isinstance(error, PrefetchError | ModelError):  # names what is unknown: says it all
        return PrefetchError(line)
    return PrefetchError(f"stage {stage.name}{f', job {shlex.join(job)}' if job else ''}: {line}")


def stage_touches(
    stage: Stage, extra: tuple[str, ...], conf: Path
) -> tuple[dict[str, Model], dict[str, Dataset]]:
    """The models and datasets (by name) the jobs of one stage use, read from their composed configs."""
    models: dict[str, Model] = {}
    datasets: dict[str, Dataset] = {}
    try:
        jobs = expand_jobs(stage, extra, conf=conf)
    except Exception as exc:
        error = _stage_error(stage, None, exc)
        if error is None:
            raise
        raise error from exc
    for job in jobs:
        try:
            found, data = job_touches(compose_job(stage.script, job, conf=conf), conf)
        except Exception as exc:
            error = _stage_error(stage, job, exc)
            if error is None:
                raise
            raise error from exc
        models.update((m.name, m) for m in found)
        datasets.update((d.name, d) for d in data)
    return models, datasets


def model_items(found: dict[str, Model], conf: Path) -> list[Item]:
    items: dict[str, Item] = {}
    todo = sorted(found.items())
    while todo:
        name, model = todo.pop(0)
        if name in items:
            continue
        if model.origin == "hub":
            items[name] = Item("model", name, str(model.hf_id))
        elif model.origin == "random" and model.tokenizer_from:
            items[name] = Item(
                "model", name, None, note=f"nothing to fetch (random; tokenizer of {model.tokenizer_from})"
            )
            tokenizer = _named_model(model.tokenizer_from, str(conf))  # ModelError: unknown
            todo.append((tokenizer.name, tokenizer))
        else:
            items[name] = Item("model", name, None, note=f"nothing to fetch ({model.origin})")
    return sorted(items.values(), key=lambda i: (i.hub_id is None, i.name))


def dataset_items(found: dict[str, Dataset]) -> list[Item]:
    items = []
    for name, dataset in sorted(found.items()):
        loader = dataset.loader
        files = [Path(f).expanduser().resolve() for f in (loader.get("files") or {}).values() if f]
        if files and all(f.is_file() for f in files):
            common = os.path.commonpath([str(f.parent) for f in files])
            items.append(Item("dataset", name, None, note=f"local files present ({common})"))
        elif loader.get("hub_id"):
            items.append(Item("dataset", name, str(loader["hub_id"]), loader.get("hub_config")))
        elif files:
            missing = next(f for f in files if not f.is_file())
            raise PrefetchError(f"dataset {name!r}: local file {missing} does not exist and no hub_id is set")
        else:
            items.append(Item("dataset", name, None, note="nothing to fetch (generated)"))
    return sorted(items, key=lambda i: (i.hub_id is None, i.name))


def plan(recipe: str | Path, extra: tuple[str, ...] = (), conf: Path | None = None) -> list[Item]:
    """Every model and dataset the recipe's jobs touch, those to fetch first."""
    conf = Path(conf or conf_dir())
    _, stages, common = load_recipe(recipe)
    overrides = merge_overrides(common, extra)
    models: dict[str, Model] = {}
    datasets: dict[str, Dataset] = {}
    for stage in stages:
        found, data = stage_touches(stage, overrides, conf)
        models.update(found)
        datasets.update(data)
    return model_items(models, conf) + dataset_items(datasets)


def _hub_error(exc: Exception, item: Item) -> str:
    """One line saying what went wrong and what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if isinstance(exc, FetchError):
        return str(exc)
    if isinstance(exc, GatedRepoError):
        return (
            f"{item.hub_id} is gated: accept its license on huggingface.co/{item.hub_id} with your account, "
            "then `hf auth login` (or export HF_TOKEN=...) and run this again"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"{item.hub_id} is not on the Hub or not visible to you: check the id, "
            "`hf auth login` (or export HF_TOKEN=...)"
        )
    if isinstance(exc, LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return "not in the cache, and HF_HUB_OFFLINE is set: unset it for the prefetch (jobs keep it)"
        return "cannot reach the Hub (no network here?) and not in the cache: run this on a login node"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def fetch(item: Item) -> str:
    """Download one item into the Hugging Face cache; returns where it is."""
    if item.kind == "model":
        import huggingface_hub

        return huggingface_hub.snapshot_download(item.hub_id, allow_patterns=list(MODEL_FILES))
    try:
        import datasets
    except ImportError:
        raise FetchError("needs the `datasets` package (in the `gpu` extra): pip install datasets") from None
    loaded = datasets.load_dataset(item.hub_id, item.hub_config)
    return ", ".join(f"{split} {len(rows)} rows" for split, rows in loaded.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", help="a sweeps/*.yaml file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as given to compute_optimal.recipes")
    parser.add_argument("--dry-run", action="store_true", help="print what would be fetched, fetch nothing")
    args = parser.parse_intermixed_args(argv)
    try:
        items = plan(args.recipe, tuple(args.overrides))
    except (RecipeError, ModelError, PrefetchError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    todo = [i for i in items if i.hub_id]
    print(f"{args.recipe}: {len(todo)} of {len(items)} models and datasets to fetch from the Hub")
    if args.dry_run:
        for item in items:
            print(item.describe())
        print(
            "dry run: nothing downloaded. Run this without --dry-run on a login node, then set "
            "HF_HUB_OFFLINE=1 for the jobs (the site config's setup)"
        )
        return 0
    for item in items:
        if item.hub_id is None:
            print(item.describe())
    failed = 0
    for item in todo:
        print(f"{item.describe()} ... ", end="", flush=True)
        try:
            where = fetch(item)
        except (OSError, ValueError) as exc:  # hub errors are OSErrors; datasets: ValueError for a bad config
            failed += 1
            print(f"failed: {_hub_error(exc, item)}", flush=True)
            continue
        print(f"ok ({where})", flush=True)
    if failed:
        print(
            f"error: {failed} of {len(todo)} not fetched; fix the above and run this again", file=sys.stderr
        )
        return 1
    if todo:
        from huggingface_hub import constants

        print(
            f"all in the cache under {constants.HF_HOME}. Jobs: set HF_HUB_OFFLINE=1 (and this HF_HOME) "
            "in the site config's setup (conf/site/example_cluster.yaml): they read the cache, never the Hub"
        )
    else:
        print("nothing to fetch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
