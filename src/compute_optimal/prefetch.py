"""Fill the Hugging Face cache with every model and dataset a recipe touches, once, before the jobs run.

    python -m compute_optimal.prefetch sweeps/paper.yaml [--dry-run] [override ...]

Run it on a login node (it needs the Hub; Gemma is gated: accept its license on the Hub, then
``hf auth login`` or ``export HF_TOKEN=...``), with the ``HF_HOME`` the jobs will use. The jobs then read
the cache only (``export HF_HUB_OFFLINE=1`` in the site config's ``setup``), instead of 16 training
ranks plus vLLM asking the Hub at once.

What a recipe touches is read from its stages' overrides (a comma list is several values; the recipe's
``common`` overrides and the extra ones on this command line merged as ``compute_optimal.recipes`` does),
falling back on the entry config's defaults (``conf/{sample,train,eval}.yaml``) and on what an
``experiment=`` sets: the ``model=`` choices, the members of each ``pair=`` (wc, se, distill_student),
and the ``dataset=`` choices. Models with ``source: hub`` are downloaded (weights as safetensors, config
and tokenizer files; never pickles or GGUF); embedded and random models need nothing. A dataset whose
local JSONL files all exist needs nothing; otherwise ``datasets.load_dataset(hub_id, hub_config)``.
With ``HF_HUB_OFFLINE=1`` set, a run downloads nothing and checks that everything is in the cache.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .models import ModelError
from .recipes import RecipeError, Stage, _key, load_recipe, merge_overrides
from .resolvers import conf_dir, model_config

ENTRY_CONFIGS = {"run_sample.py": "sample", "run_train.py": "train", "run_eval.py": "eval"}
# Overrides whose value names a model config (besides the `model` group).
MODEL_KEYS = ("model", "task.checkpoint.student", "task.fpr.judge_model")
PAIR_MEMBERS = ("wc", "se", "distill_student")
# What vLLM and transformers load from a model repository: the safetensors weights (and their index),
# config.json, generation_config.json, the tokenizer (tokenizer.json, tokenizer_config.json,
# special_tokens_map.json; SentencePiece's tokenizer.model). Never the pickled *.bin / *.pth weights
# or the GGUF file some repositories also hold (google/gemma-7b: a 34 GB gemma-7b.gguf).
MODEL_FILES = ("*.safetensors", "*.json", "tokenizer.model")


class PrefetchError(ValueError):
    """A recipe or override names a config that does not exist."""


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


def _values(overrides: tuple[str, ...], key: str) -> list[str] | None:
    """The values the last ``key=`` override gives (a comma list is several); None if none sets it."""
    found = None
    for override in overrides:
        if "=" in override and not override.startswith("~") and _key(override) == key:
            value = override.split("=", 1)[1].strip()
            found = [v.strip() for v in value.split(",") if v.strip()]
    return found


def _yaml(conf: Path, group: str, name: str) -> Any:
    path = conf / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise PrefetchError(f"unknown {group} {name!r} (no {path}); known: {known}")
    return OmegaConf.load(path)


def _defaults(node: Any) -> dict[str, str | None]:
    """A config's defaults list as {group: choice}, ``override /group`` entries included."""
    choices = {}
    for entry in node.get("defaults", []) if node is not None else []:
        if OmegaConf.is_dict(entry) or isinstance(entry, dict):
            for group, choice in entry.items():
                choices[str(group).removeprefix("override ").lstrip("/")] = choice
    return choices


def stage_choices(stage: Stage, overrides: tuple[str, ...], conf: Path) -> dict[str, set[str]]:
    """The model names, pairs and datasets one stage's runs use."""
    overrides = stage.overrides + overrides
    entry = _defaults(OmegaConf.load(conf / f"{ENTRY_CONFIGS[stage.script]}.yaml"))
    # What each experiment sets: its `override /group` defaults, then its sweep (experiment=paper).
    experiments = []
    for name in _values(overrides, "experiment") or [entry.get("experiment")]:
        if name not in (None, "null"):
            node = _yaml(conf, "experiment", name)
            sweep = OmegaConf.select(node, "hydra.sweeper.params", default=None) or {}
            experiments.append({**_defaults(node), **{g: str(v).split(",") for g, v in sweep.items()}})
    choices: dict[str, set[str]] = {}
    for group in ("model", "pair", "dataset"):
        # The command line, else what an experiment sets, else the entry config's default.
        given = _values(overrides, group)
        if given is None:
            given = []
            for sets in experiments or [{}]:
                value = sets.get(group, entry.get(group))
                given += value if isinstance(value, list) else [value]
        choices[group] = {str(v).strip() for v in given if v not in (None, "null")}
    for key in MODEL_KEYS[1:]:
        choices["model"] |= set(_values(overrides, key) or [])
    for pair in choices.pop("pair"):
        node = _yaml(conf, "pair", pair)
        choices["model"] |= {str(node[m]) for m in PAIR_MEMBERS if node.get(m) not in (None, "null")}
    return choices


def model_items(names: set[str], conf: Path) -> list[Item]:
    items: dict[str, Item] = {}
    todo = sorted(names)
    while todo:
        name = todo.pop(0)
        if name in items:
            continue
        cfg = model_config(name, conf)  # ModelError for an unknown name
        source = cfg.get("source")
        if source == "hub":
            items[name] = Item("model", name, str(cfg.hf_id))
        elif source == "random" and cfg.get("tokenizer_from"):
            items[name] = Item(
                "model", name, None, note=f"nothing to fetch (random; tokenizer of {cfg.tokenizer_from})"
            )
            todo.append(str(cfg.tokenizer_from))
        else:
            items[name] = Item("model", name, None, note=f"nothing to fetch ({source or 'local'})")
    return sorted(items.values(), key=lambda i: (i.hub_id is None, i.name))


def dataset_items(names: set[str], conf: Path) -> list[Item]:
    paths = OmegaConf.load(conf / "paths" / "default.yaml")
    if "PROJECT_ROOT" not in os.environ:  # as the entry points set it: the repository folder
        paths.root = str(conf.parent)
    items = []
    for name in sorted(names):
        node = OmegaConf.create({"paths": paths, "dataset": _yaml(conf, "dataset", name)})
        loader = OmegaConf.to_container(node, resolve=True)["dataset"].get("loader") or {}
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
    """Every model and dataset the recipe's stages touch, those to fetch first."""
    conf = Path(conf or conf_dir())
    _, stages, common = load_recipe(recipe)
    overrides = merge_overrides(common, extra)
    models: set[str] = set()
    datasets: set[str] = set()
    for stage in stages:
        choices = stage_choices(stage, overrides, conf)
        models |= choices["model"]
        datasets |= choices["dataset"]
    return model_items(models, conf) + dataset_items(datasets, conf)


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
    except (RecipeError, ModelError, PrefetchError) as exc:
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
