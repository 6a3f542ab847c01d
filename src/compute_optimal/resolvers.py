"""OmegaConf resolvers the configs use: SLURM job sizes (``co.model``, ``co.resources``), folder names.

The entry points import this module before Hydra composes a config, so ``--cfg job --resolve`` and
the SLURM launcher (which resolves every job's request before submitting) see the same values.

What one job asks for comes from the model it runs (``conf/model/<name>.yaml``, ``resources.<stage>``:
``nodes``, ``gpus``, ``cpus``, ``mem_gb``, ``timeout_min``; GPUs and CPUs per node), with the site's
overrides on top (``conf/site/<cluster>.yaml``, ``resources``). The result is what the launcher
configs read: ``nodes``, ``gpus_per_node``, ``tasks_per_node``, ``cpus_per_task``, ``mem_gb``,
``timeout_min``. Training with a multi-process trainer runs one process per GPU (Lightning reads SLURM's
tasks), with a single-device trainer one process; sampling and evaluation one process per job (vLLM
spreads a model over the job's GPUs itself).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

STAGES = ("sample", "train", "eval")
# A request's keys; a model config that leaves one out gets this value.
DEFAULT_REQUEST = {"nodes": 1, "gpus": 0, "cpus": 1, "mem_gb": 4, "timeout_min": 60}


@functools.lru_cache(maxsize=1024)
def _parsed_yaml(path: str, mtime_ns: int, size: int) -> Any:
    return OmegaConf.to_container(OmegaConf.load(path))  # plain and unresolved: interpolations kept as text


def load_yaml(path: Path) -> DictConfig:
    """``OmegaConf.load(path)``, the file parsed once per version (its mtime and size): composing a sweep's
    jobs reads the same model and pair files hundreds of times (a third of a compose's time)."""
    return OmegaConf.create(_parsed_yaml(str(path), *_version(path)))


def conf_dir() -> Path:
    """The repository's conf/ (entry points set PROJECT_ROOT; else this source checkout's)."""
    root = os.environ.get("PROJECT_ROOT") or Path(__file__).resolve().parents[2]
    return Path(root) / "conf"


def model_config(name: str | None, conf: str | os.PathLike | None = None) -> DictConfig | None:
    """``conf/model/<name>.yaml`` resolved on its own (model configs interpolate ``${model.*}``);
    None for no name (a pair without a distillation student)."""
    from .models import ModelError

    if name is None or name == "None":
        return None
    path = Path(conf or conf_dir()) / "model" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ModelError(f"unknown model {name!r} (no {path}); known: {known}")
    family = sorted((p.name, _version(p)) for p in (path.parent.parent / "family").glob("*.yaml"))
    return OmegaConf.create(_resolved_model(path, _version(path), tuple(family)))


def _version(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=256)
def _resolved_model(path: Path, version: tuple[int, int], family: tuple) -> Any:
    # Resolved once per version of the model file and of the family recipes it may name (${co.family:...}).
    node = OmegaConf.create({"model": load_yaml(path)})
    return OmegaConf.to_container(node, resolve=True)["model"]


def family_recipe(name: str, conf: str | os.PathLike | None = None) -> DictConfig:
    """``${co.family:<name>}``: ``conf/family/<name>.yaml``, the recipe every member of a family shares."""
    from .models import ModelError

    path = Path(conf or conf_dir()) / "family" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ModelError(f"unknown model family {name!r} (no {path}); known: {known}")
    return OmegaConf.merge({"name": name}, load_yaml(path))


def model_field(name: str | None, key: str | None = None) -> Any:
    """``${co.model:<name>}``: a model's config; ``${co.model:<name>,params}``: one of its fields."""
    node = model_config(name)
    return node if key is None or node is None else node.get(key)


def pair_config(name: str, conf: str | os.PathLike | None = None) -> DictConfig:
    """``conf/pair/<name>.yaml``: a WC / SE model pair (and the distillation student it trains)."""
    from .models import ModelError

    path = Path(conf or conf_dir()) / "pair" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ModelError(f"unknown pair {name!r} (no {path}); known: {known}")
    return load_yaml(path)


def pair_se(model: str | None, pair: str | None = None, conf: str | os.PathLike | None = None) -> str | None:
    """The reference model of ``model``'s budgets: the SE model of its pair (``conf/pair/``).

    With ``pair`` named, that pair's SE model; else the one pair that has ``model`` as its WC, SE or
    distillation student (``python run_sample.py -m model=gemma2_9b,gemma2_27b`` needs no pair). A model
    in no pair, or in pairs with different SE models, needs ``pair=<name>``.
    """
    from .budget import BudgetError

    if pair not in (None, "None"):
        return str(pair_config(pair, conf).se)
    if model in (None, "None"):
        return None
    folder = Path(conf or conf_dir()) / "pair"
    pairs = {p.stem: load_yaml(p) for p in sorted(folder.glob("*.yaml"))}
    found = {name: str(c.se) for name, c in pairs.items() if model in (c.wc, c.se, c.get("distill_student"))}
    if len(set(found.values())) == 1:
        return next(iter(found.values()))
    if not found:
        raise BudgetError(
            f"model {model!r} is in no pair of {folder}, so its budget has no reference model: name the pair "
            f"whose SE model the budget counts in, e.g. pair={next(iter(pairs), '<name>')}"
        )
    raise BudgetError(
        f"model {model!r} is in pairs with different SE models ({found}): name one, e.g. pair={next(iter(found))}"
    )


def regime_student(regime: str, pair: Mapping[str, Any] | None) -> str | None:
    """The model a regime trains for ``pair`` (training.regimes.pair_student); None where the pair names none."""
    from .training.regimes import pair_student

    return pair_student(str(regime), pair or {})


def run_dir(stage: str, *, _root_: DictConfig) -> str:
    """``${co.run_dir:<stage>}``: the run folder of the composed config (one layout: compute_optimal.runs)."""
    from .stages.common import run_folder

    return str(run_folder(stage, _root_).path)


def job_resources(
    stage: str,
    model: Mapping[str, Any] | None,
    site: Mapping[str, Any] | None,
    trainer: Mapping[str, Any] | None = None,
) -> DictConfig:
    """One SLURM job's request for ``stage`` of ``model`` (a model config or None), site overrides on top.

    Training follows the trainer: a single-device trainer (``devices: 1``: cpu, gpu) runs one task on one
    node with at most one GPU, whatever the model asks for; a multi-process one (ddp, deepspeed_*:
    ``devices: -1``) runs one task per GPU (``tasks`` where the model or site sets it, e.g. CPU-only test
    jobs), and Lightning takes its device count from SLURM's tasks per node (training.stage).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    by_stage = (model or {}).get("resources") or {}
    # Evaluation runs the model as sampling does: same GPUs unless the model says otherwise.
    asked = by_stage.get(stage) or (by_stage.get("sample") if stage == "eval" else None) or {}
    request = {**DEFAULT_REQUEST, **_plain(asked)}
    request.update({k: v for k, v in _plain(site or {}).items() if v is not None})
    unknown = sorted(set(request) - set(DEFAULT_REQUEST) - {"tasks"})
    if unknown:
        raise ValueError(f"unknown resource keys {unknown}; expected {sorted(DEFAULT_REQUEST)} (+ tasks)")
    gpus, nodes = int(request["gpus"]), int(request["nodes"])
    if stage != "train" and nodes != 1:
        raise ValueError(
            f"{stage} runs on one node (vLLM spreads a model over one node's GPUs); got nodes={nodes}"
        )
    tasks = 1
    if stage == "train":
        settings = _plain(trainer or {})
        devices = settings.get("devices", 1)
        if settings.get("accelerator") == "cpu":
            gpus = 0
        if devices in (1, "1"):  # one process on one device
            gpus, nodes = min(gpus, 1), 1
        elif isinstance(devices, int) and devices > 1:  # an explicit process count
            tasks, gpus = devices, min(gpus, devices)
        else:  # -1 / auto: one process per GPU
            tasks = int(request.get("tasks") or max(gpus, 1))
    # A DictConfig, not a dict: OmegaConf.resolve (--cfg job --resolve) only accepts configs here.
    return OmegaConf.create(
        {
            "nodes": nodes,
            "gpus_per_node": gpus,
            "tasks_per_node": tasks,
            "cpus_per_task": max(1, int(request["cpus"]) // tasks),
            "mem_gb": int(request["mem_gb"]),
            "timeout_min": int(request["timeout_min"]),
        }
    )


def eval_model(base: Any, regime: str | None, student: str | None, pair: Mapping[str, Any]) -> Any:
    """The model config an evaluation job runs: the base model, or the student a checkpoint belongs to."""
    if regime is None or regime == "None":
        return base
    if student in (None, "None"):
        student = regime_student(regime, pair)
    return model_config(student)


def judge_model(method: str, name: str | None) -> Any:
    """The model config the data report runs: its LLM judge (``task.fpr.method=judge``), else none."""
    return model_config(name) if method == "judge" else None


def dirname(overrides: str, limit: int = 200) -> str:
    """A sweep job's folder name from its overrides, cut to ``limit`` characters plus a hash of the
    whole (file systems refuse names over 255 bytes; a recipe's overrides easily exceed that)."""
    overrides = str(overrides)
    if len(overrides) <= limit:
        return overrides
    digest = hashlib.sha256(overrides.encode()).hexdigest()[:8]
    return f"{overrides[:limit]}..{digest}"


def seeds_name(seeds: Any) -> str:
    """A folder-name part for a list of seeds: ``seed0`` for one, ``seeds0-1-2`` for several (reports over
    different seeds never overwrite each other)."""
    seeds = list(seeds) if OmegaConf.is_list(seeds) or isinstance(seeds, list | tuple) else [seeds]
    return f"seed{seeds[0]}" if len(seeds) == 1 else "seeds" + "-".join(str(s) for s in seeds)


def _plain(node: Any) -> dict:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def register() -> None:
    """Register the resolvers (idempotent)."""
    resolvers = {
        "co.model": model_field,
        "co.family": family_recipe,
        "co.resources": job_resources,
        "co.eval_model": eval_model,
        "co.judge_model": judge_model,
        "co.pair_se": pair_se,
        "co.student": regime_student,
        "co.run_dir": run_dir,
        "co.dirname": dirname,
        "co.seeds_name": seeds_name,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register()
