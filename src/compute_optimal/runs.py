"""The outputs layout: where a config's results live, whether they are finished, atomic writes.

A run is its config: its folder is derived from (stage, dataset, model, budget, seed, ...) under one
outputs root, and ``run.json`` in it records the config fields that determine its contents. A run
is finished when its completion marker (``summary.json``) exists; that file is written last and
atomically, so a killed run is never mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

SUMMARY = "summary.json"
SIGNATURE = "run.json"


class RunError(RuntimeError):
    """A run folder is missing, unfinished, or holds a run of a different config."""


def sample_run_dir(root: str | os.PathLike, dataset: str, model: str, budget: str, seed: int) -> Path:
    """``<root>/sample/<dataset>/<model>/<budget>/seed<seed>``; ``budget`` is e.g. ``low-compute``."""
    return Path(root) / "sample" / dataset / model / budget / f"seed{seed}"


def is_finished(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / SUMMARY).is_file()


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        raise RunError(f"{run_dir} is not a finished run (no {SUMMARY})")
    return json.loads(path.read_text())


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary file in the same folder, then rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    _atomic(Path(path), lambda p: p.write_text(text))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_parquet(path: str | os.PathLike, frame: Any) -> None:
    """Write a pandas DataFrame as Parquet, atomically."""
    _atomic(Path(path), lambda p: frame.to_parquet(p, index=False))


def claim_run_dir(run_dir: str | os.PathLike, signature: Mapping[str, Any]) -> None:
    """Record ``signature`` in a new run folder, or check it against the one already there.

    Resuming a run with a different config would mix samples of two configs in one table, so a
    mismatch stops with the differing fields named.
    """
    path = Path(run_dir) / SIGNATURE
    current = json.loads(json.dumps(signature, sort_keys=True, default=str))
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != current:
            diff = _diff(previous, current)
            raise RunError(
                f"{run_dir} already holds a run of a different config ({'; '.join(diff)}). "
                "Use another paths.outputs or seed, or delete that folder to start over."
            )
        return
    atomic_write_json(path, current)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def budget_dir(budget_name: str, budget_mode: str) -> str:
    """The budget part of a run folder: ``low-compute``, ``high-number``..."""
    return f"{budget_name}-{budget_mode}"


def train_run_dir(
    root: str | os.PathLike, dataset: str, regime: str, student: str, source: str, budget: str, seed: int
) -> Path:
    """``<root>/train/<dataset>/<regime>/<student>/<source>-<budget>/seed<seed>``."""
    return Path(root) / "train" / dataset / regime / student / f"{source}-{budget}" / f"seed{seed}"


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name, then swap it into place (readers never see half of it).

    A folder already at ``target`` (an older report) is replaced only once the new one is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would make the published folder private
    try:
        yield tmp
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
