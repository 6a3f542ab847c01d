"""The outputs layout: where a config's results live, whether they are finished, atomic writes.

A run is its config: its folder is derived from (stage, dataset, model, budget, seed, ...) under one
outputs root, and ``run.json`` in it records the config fields that determine its contents. A run
is finished when its completion marker (``summary.json``) exists; that file is written last and
atomically, so a killed run is never mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import UserError

log = logging.getLogger(__name__)

SUMMARY = "summary.json"  # a sampling run's completion marker (RunFolder subclasses name their own)
SIGNATURE = "run.json"


class RunError(UserError, RuntimeError):
    """A run folder is missing, unfinished, or holds a run of a different config."""


def budget_dir(budget_name: str, budget_mode: str) -> str:
    """The budget part of a run folder: ``low-compute``, ``high-number``..."""
    return f"{budget_name}-{budget_mode}"


def _budget_args(budget: str, mode: str) -> list[str]:
    """The overrides that select a budget by its folder name (``custom-s5`` is ``budget=custom`` + samples)."""
    custom = re.fullmatch(r"custom-s(\d+)", budget)
    args = (
        ["budget=custom", f"budget.reference_samples={custom.group(1)}"] if custom else [f"budget={budget}"]
    )
    return args + ([f"budget.mode={mode}"] if mode != "compute" else [])


KEEP = ("answer", "process")


@dataclass(frozen=True)
class Selection:
    """Which of a sampling run's samples a student learns from (``data.keep``, ``data.max_per_problem`` of
    conf/train.yaml): every sample whose final answer is right (``answer``, the paper's filter) or only those
    the exact process check passes (``process``); all of a problem's distinct solutions or at most
    ``max_per_problem``. Anything but the default names its own training folder (``wc+process-high-compute``,
    ``se+max1-high-compute``), so the study's controls sit beside the students they control."""

    keep: str = "answer"
    max_per_problem: int | None = None

    def __post_init__(self) -> None:
        if self.keep not in KEEP:
            raise RunError(f"data.keep must be one of {', '.join(KEEP)}, got {self.keep!r}")
        if self.max_per_problem is not None and (
            isinstance(self.max_per_problem, bool) or int(self.max_per_problem) < 1
        ):
            raise RunError(f"data.max_per_problem must be null or >= 1, got {self.max_per_problem!r}")

    @classmethod
    def of(cls, node: Mapping[str, Any]) -> Selection:
        """From a config node with ``keep`` and ``max_per_problem`` (data: of train.yaml, task.student: of eval)."""
        cap = node.get("max_per_problem")
        return cls(str(node.get("keep", "answer")), None if cap is None else int(cap))

    @property
    def suffix(self) -> str:
        """The folder name's mark of this selection: "" for the default."""
        return ("+process" if self.keep == "process" else "") + (
            f"+max{self.max_per_problem}" if self.max_per_problem is not None else ""
        )

    @classmethod
    def split(cls, data: str) -> tuple[str, Selection]:
        """A folder's data part (``wc+process+max1``) -> (``wc``, its selection): :attr:`suffix` read back."""
        sampler, *marks = data.split("+")
        keep = "process" if "process" in marks else "answer"
        caps = [int(m[3:]) for m in marks if re.fullmatch(r"max\d+", m)]
        return sampler, cls(keep, caps[0] if caps else None)

    def overrides(self, prefix: str = "data") -> list[str]:
        """The overrides that select it (none for the default): ``data.*`` of run_train.py, or
        ``task.student.*`` of run_eval.py."""
        return ([f"{prefix}.keep={self.keep}"] if self.keep != "answer" else []) + (
            [f"{prefix}.max_per_problem={self.max_per_problem}"] if self.max_per_problem is not None else []
        )


@dataclass(frozen=True)
class RunFolder:
    """A run's folder: its completion marker (written last, atomically), its config signature, and the
    command that makes it (for messages that say how to fix a missing run)."""

    path: Path
    command: str = field(default="", compare=False)
    SUMMARY: ClassVar[str] = SUMMARY

    @property
    def summary_path(self) -> Path:
        return self.path / self.SUMMARY

    def is_finished(self) -> bool:
        return self.summary_path.is_file()

    def state(self) -> str:
        """ "finished", "unfinished" or "missing", for messages."""
        return "finished" if self.is_finished() else "unfinished" if self.path.exists() else "missing"

    def read_summary(self) -> dict[str, Any]:
        if not self.is_finished():
            made = f"; make it with: {self.command}" if self.command else ""
            raise RunError(f"{self.path} is not a finished run ({self.state()}, no {self.SUMMARY}){made}")
        return json.loads(self.summary_path.read_text())

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """The completion marker: write it last."""
        atomic_write_json(self.summary_path, summary)

    def finished_as(self, signature: Mapping[str, Any]) -> bool:
        """Whether the folder holds a finished run of ``signature`` (so a stage may skip it). Claims the
        folder first, so a finished run of another config (other settings, a retrained model of the same
        name) stops with the differences named instead of being taken for this one."""
        self.claim(signature)
        return self.is_finished()

    def claim(self, signature: Mapping[str, Any]) -> None:
        """Record the config in the folder; a folder claimed by another config that wrote nothing (it
        failed before its first result) is claimed anew, so the corrected command is not refused."""
        claim_run_dir(self.path, signature, replaceable=not self.has_results())

    def has_results(self) -> bool:
        """Whether the folder holds anything a rerun could lose (subclasses say what counts)."""
        return self.is_finished()

    def signature(self) -> dict[str, Any]:
        return read_json(self.path / SIGNATURE)


@dataclass(frozen=True)
class SampleRun(RunFolder):
    """A sampling run: ``<outputs>/sample/<dataset>/<model>/<budget>-<mode>/seed<seed>`` (or an evaluation's
    greedy / sampled generation, which has the same files)."""

    @classmethod
    def of(
        cls, outputs: str | os.PathLike, dataset: str, model: str, budget: str, mode: str, seed: int
    ) -> SampleRun:
        path = Path(outputs) / "sample" / dataset / model / budget_dir(budget, mode) / f"seed{seed}"
        args = [f"model={model}", f"dataset={dataset}", *_budget_args(budget, mode)]
        return cls(path, _command("run_sample.py", args, seed))

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.parquet"

    def chunk_path(self, index: int) -> Path:
        return self.path / "chunks" / f"chunk-{index:05d}.parquet"

    @property
    def shards_dir(self) -> Path:
        return self.path / "shards"

    def shard_path(self, shard: int, num_shards: int) -> Path:
        return self.shards_dir / f"shard-{shard:05d}-of-{num_shards:05d}.json"

    @property
    def merge_lock(self) -> Path:
        return self.path / ".merge.lock"

    def has_results(self) -> bool:
        return self.is_finished() or any((self.path / "chunks").glob("chunk-*.parquet"))

    def siblings(self) -> list[SampleRun]:
        """The other runs of this run's model on its dataset: every budget and seed where it lies in the
        sampling stage's layout (``<outputs>/sample/<dataset>/<model>/<budget>-<mode>/seed<seed>``), every
        seed of the same target for an evaluation's generation (``<outputs>/eval/.../seed<seed>/greedy``);
        none elsewhere."""
        path, parents = self.path, self.path.parents
        if len(parents) >= 4 and parents[3].name == "sample" and path.name.startswith("seed"):
            pattern = "*/seed*"
        elif path.parent.name.startswith("seed") and "eval" in {p.name for p in parents}:
            pattern = f"seed*/{path.name}"
        else:
            return []
        return [SampleRun(p) for p in sorted(parents[1].glob(pattern)) if p != path]


@dataclass(frozen=True)
class TrainRun(RunFolder):
    """A fine-tuning run: ``<outputs>/train/<dataset>/<regime>/<student>/<sampler><selection>-<budget>-<mode>/seed<seed>``,
    where ``sampler`` (wc | se | reference) says whose solutions the student learned from and ``selection``
    (:class:`Selection`, empty by default) which of them."""

    SUMMARY: ClassVar[str] = "train_summary.json"

    @classmethod
    def of(
        cls,
        outputs: str | os.PathLike,
        dataset: str,
        regime: str,
        student: str,
        sampler: str,
        budget: str,
        mode: str,
        seed: int,
        pair: str | None = None,
        selection: Selection | None = None,
    ) -> TrainRun:
        selection = selection or Selection()
        path = (
            Path(outputs)
            / "train"
            / dataset
            / regime
            / student
            / f"{sampler}{selection.suffix}-{budget_dir(budget, mode)}"
            / f"seed{seed}"
        )
        args = [*([f"pair={pair}"] if pair else []), f"regime={regime}", f"data.sampler={sampler}",
                *selection.overrides(), f"dataset={dataset}", *_budget_args(budget, mode)]  # fmt: skip
        return cls(path, _command("run_train.py", args, seed))

    @property
    def label(self) -> str:
        """``<regime>/<student>/<sampler>-<budget>``: the trained model's name in evaluations and reports."""
        return "/".join(self.path.parts[-4:-1])

    @property
    def model_dir(self) -> Path:
        """The exported student: a Hugging Face checkpoint (safetensors, config, tokenizer)."""
        return self.path / "model"

    @property
    def resume_dir(self) -> Path:
        """Lightning's resume states while the run trains (deleted once the model is exported)."""
        return self.path / "resume"

    def has_results(self) -> bool:
        return self.is_finished() or self.model_dir.exists() or any(self.resume_dir.glob("step-*"))


@dataclass(frozen=True)
class EvalRun(RunFolder):
    """An evaluation: ``<outputs>/eval/<dataset>/<target>/seed<seed>``, target ``base/<model>`` or a training
    run's label; its greedy and sampled generations are sampling runs inside it."""

    target: str = field(default="", compare=False)  # base/<model> or a training run's label
    SUMMARY: ClassVar[str] = "eval_summary.json"

    @classmethod
    def of_base(cls, outputs: str | os.PathLike, dataset: str, model: str, seed: int) -> EvalRun:
        args = ["task=evaluate", f"dataset={dataset}", f"model={model}"]
        target = f"base/{model}"
        return cls(cls._path(outputs, dataset, target, seed), _command("run_eval.py", args, seed), target)

    @classmethod
    def of_student(
        cls, outputs: str | os.PathLike, dataset: str, trained: TrainRun, seed: int, pair: str | None = None
    ) -> EvalRun:
        regime, _, data = trained.label.split("/")
        sampler, budget = data.split("-", 1)
        sampler, selection = Selection.split(sampler)
        name, mode = budget.rsplit("-", 1)
        args = [*([f"pair={pair}"] if pair else []), "task=evaluate", f"dataset={dataset}", f"task.student.regime={regime}",
                f"task.student.sampler={sampler}", *selection.overrides("task.student"),
                *_budget_args(name, mode)]  # fmt: skip
        path = cls._path(outputs, dataset, trained.label, seed)
        return cls(path, _command("run_eval.py", args, seed), trained.label)

    @staticmethod
    def _path(outputs: str | os.PathLike, dataset: str, target: str, seed: int) -> Path:
        return Path(outputs) / "eval" / dataset / target / f"seed{seed}"

    def generation(self, kind: str) -> SampleRun:
        """The greedy or the sampled generation run."""
        return SampleRun(self.path / kind)


def _command(script: str, args: list[str], seed: int) -> str:
    return " ".join(["python", script, *args, *([f"seed={seed}"] if seed else [])])


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


def claim_run_dir(
    run_dir: str | os.PathLike, signature: Mapping[str, Any], *, replaceable: bool = False
) -> None:
    """Record ``signature`` in a new run folder, or check it against the one already there.

    Resuming a run with a different config would mix samples of two configs in one table, so a
    mismatch stops with the differing fields named, unless ``replaceable`` (the folder holds no results).
    """
    path = Path(run_dir) / SIGNATURE
    current = json.loads(json.dumps(signature, sort_keys=True, default=str))
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous == current:
            return
        diff = "; ".join(_diff(previous, current))
        if not replaceable:
            raise RunError(
                f"{run_dir} already holds a run of a different config ({diff}). "
                "Use another paths.outputs or seed, or delete that folder to start over."
            )
        log.info("%s: replacing the claim of a run that wrote no results (%s)", run_dir, diff)
    atomic_write_json(path, current)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


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
