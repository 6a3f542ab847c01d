"""The sampling stage: compute-matched samples for one (dataset, model, budget, seed), graded.

``plan_sampling`` turns a config into a :class:`SamplingPlan` and validates everything a user can
get wrong (budget, dataset rows, model, prompt) before any model is loaded. ``run_sampling``
executes a plan: problems are processed in fixed chunks, each written atomically as its own Parquet
file, so a killed run relaunched with the same config finishes with every sample exactly once. The
merged ``samples.parquet`` and, last, ``summary.json`` (the completion marker) end the run.

Large runs split over shards (``sampling.num_shards``, one job per ``sampling.shard``, e.g. a SLURM
array): shard ``s`` of ``n`` does the chunks ``i`` with ``i % n == s`` into the same run folder, and
whichever shard finds every chunk done merges them, in chunk order, into the very table a single job
would have written (samples are seeded per problem, never per chunk or shard).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd
from filelock import FileLock

from . import runs
from .analysis import data_quality
from .budget import Budget, BudgetError, Ledger
from .data import Problem, select_subset
from .engines import Generation, LazyEngine, Request, SamplingSettings
from .errors import UserError
from .prompts import PromptError, PromptTemplate, get_template
from .runs import SampleRun
from .sample_prefix import find_donor, take_prefix
from .specs import Dataset, Model, plain

log = logging.getLogger(__name__)

WORK_COUNTS = ("new_samples", "new_tokens", "engine_time_s")  # what a job did, added up over a run's shards
COLUMNS = [
    "problem_id",
    "sample_index",
    "level",
    "subject",
    "gold_answer",
    "completion",
    "prompt_tokens",
    "generated_tokens",
    "finish_reason",
    "extracted_answer",
    "correct",
    "grade_status",
]


class SamplingError(UserError, ValueError):
    """A sampling setting out of range (chunk size, shard index)."""


@dataclass(frozen=True)
class SamplingConfig:
    """``sampling:`` of conf/sample.yaml: decoding, chunking and sharding of one run."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    stop: tuple[str, ...] | None = None  # None: the prompt template's stop sequences
    chunk_size: int = 32
    num_shards: int = 1
    shard: int = 0
    reuse_prefix: bool = True  # take the first samples of a larger finished run (sample_prefix)

    def __post_init__(self) -> None:
        # Out-of-range decoding settings stop here, in the plan, before any model is loaded.
        if self.temperature < 0:
            raise SamplingError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SamplingError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise SamplingError(f"sampling.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.chunk_size < 1:
            raise SamplingError(f"sampling.chunk_size must be >= 1, got {self.chunk_size}")
        if self.num_shards < 1 or not 0 <= self.shard < self.num_shards:
            raise SamplingError(
                f"sampling.shard must be in [0, sampling.num_shards) and num_shards >= 1; got shard={self.shard}, "
                f"num_shards={self.num_shards}"
            )

    @classmethod
    def from_config(cls, node: Any) -> SamplingConfig:
        values = dict(plain(node))
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise SamplingError(f"unknown sampling setting(s) {unknown}")
        if values.get("stop") is not None:
            values["stop"] = tuple(values["stop"])
        return cls(**values)


@dataclass
class SamplingPlan:
    """Everything a sampling run needs, validated; no model loaded yet."""

    run: SampleRun
    model: Model
    budget: Budget
    samples_per_problem: int
    dataset: Dataset
    problems: list[Problem]
    template: PromptTemplate
    settings: SamplingSettings
    seed: int
    chunk_size: int
    signature: dict[str, Any] = field(default_factory=dict)
    shard: int = 0  # this job's shard of num_shards (not in the signature: all shards share one run)
    num_shards: int = 1
    reuse_prefix: bool = True  # not in the signature: a derived run holds the samples it would generate

    @property
    def chunks(self) -> list[list[Problem]]:
        size = self.chunk_size
        return [self.problems[i : i + size] for i in range(0, len(self.problems), size)]

    @property
    def mine(self) -> list[int]:
        """The chunks this shard does."""
        return [i for i in range(len(self.chunks)) if i % self.num_shards == self.shard]


def problem_seed(seed: int, problem_id: str) -> int:
    """A per-problem seed independent of chunking and batching; spread over 31 bits because vLLM
    seeds the i-th of n samples with seed + i."""
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def check_learned_frame(model: Model, template: PromptTemplate) -> None:
    """A model trained here from scratch (``origin: trained``) has read nothing but its family's zero-shot
    frame: a few-shot prompt is text it never saw (and overflows its short context), so it is refused."""
    learned = (model.pretrain or {}).get("template")
    if model.origin == "trained" and (template.name != learned or template.exemplars):
        raise PromptError(
            f"model {model.name!r} was trained from scratch on the zero-shot {learned!r} prompt "
            f"(conf/family/{(model.pretrain or {}).get('name')}.yaml) and cannot read a "
            f"{len(template.exemplars)}-shot {template.name!r} prompt: set dataset.prompt.num_shots=0"
            + (f" dataset.prompt.template={learned}" if template.name != learned else "")
        )


def plan_sampling(
    *,
    run: SampleRun,
    model: Model,
    budget: Budget,
    dataset: Dataset,
    problems: Sequence[Problem],
    sampling: SamplingConfig,
    seed: int,
    engine_backend: str = "auto",
) -> SamplingPlan:
    """Validate and fix everything about a run; raises BudgetError / DatasetError / PromptError."""
    samples = budget.samples_for(model.name, model.params, model.price_per_mtok)
    template = get_template(dataset.prompt.template, dataset.prompt.num_shots)
    check_learned_frame(model, template)
    selected = select_subset(list(problems), dataset.limit, seed)
    if not selected:
        raise BudgetError(f"dataset {dataset.name!r} has no problems to sample")
    settings = SamplingSettings(
        temperature=float(sampling.temperature),
        top_p=float(sampling.top_p),
        max_new_tokens=int(sampling.max_new_tokens),
        stop=tuple(sampling.stop or template.stop),
    )
    plan = SamplingPlan(
        run=run,
        model=model,
        budget=budget,
        samples_per_problem=samples,
        dataset=dataset,
        problems=selected,
        template=template,
        settings=settings,
        seed=seed,
        chunk_size=sampling.chunk_size,
        shard=sampling.shard,
        num_shards=sampling.num_shards,
        reuse_prefix=sampling.reuse_prefix,
    )
    plan.signature = _signature(plan, engine_backend)
    return plan


def _signature(plan: SamplingPlan, engine_backend: str) -> dict[str, Any]:
    """The config fields that decide a run's samples: a rerun with other values is refused (runs.claim_run_dir)."""
    budget, settings = plan.budget, plan.settings
    return {
        "stage": "sample",
        "model": plan.model.identity(),
        "dataset": {
            "name": plan.dataset.name,
            "split": plan.dataset.split,
            "limit": plan.dataset.limit,
            # The problems' text, not only their ids: a generator that changes keeps the ids.
            "problems_sha256": _problems_digest(plan.problems),
        },
        "budget": {
            "name": budget.name,
            "mode": budget.mode,
            "reference_model": budget.reference_model,
            "reference_samples": budget.reference_samples,
            "reference_params": budget.reference_params,
        },
        "samples_per_problem": plan.samples_per_problem,
        "prompt": {
            "template": plan.template.name,
            "num_shots": len(plan.template.exemplars),
            "exemplars_sha256": _digest(json.dumps(plan.template.exemplars)),
        },
        "sampling": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_new_tokens": settings.max_new_tokens,
            "stop": list(settings.stop),
            "chunk_size": plan.chunk_size,
        },
        "engine": engine_backend,
        "seed": plan.seed,
    }


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _problems_digest(problems: Sequence[Problem]) -> str:
    return _digest(json.dumps([(p.id, p.question, p.answer) for p in problems]))


@dataclass
class Work:
    """What one job did: added up over a run's shards for the summary's rates."""

    new_samples: int = 0
    new_tokens: int = 0
    engine_time_s: float = 0.0
    engine: str | None = None
    reproducible: bool | None = None  # do the same seeds give the same samples on this engine?
    api_usage: dict[str, Any] | None = None  # an API engine's requests, retries and billed tokens


def run_sampling(
    plan: SamplingPlan,
    engine: LazyEngine,
    *,
    progress: bool = True,
    on_finish: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Execute a plan (or skip it when finished); returns the run's summary. ``engine`` is started only
    when there are chunks to sample, and left running for its owner."""
    run = plan.run
    if run.finished_as(plan.signature):
        log.info("skipping %s: already finished", run.path)
        return run.read_summary()
    started = time.time()
    todo = [i for i in plan.mine if not run.chunk_path(i).is_file()]
    if todo and plan.reuse_prefix and plan.num_shards == 1:
        donor = find_donor(run, plan.signature)
        if donor is not None:
            return _derive(plan, todo, *donor, started, on_finish)
    work = _sample_chunks(plan, todo, engine, progress) if todo else Work()
    if plan.num_shards == 1:
        return _merge(plan, started, work, on_finish)
    return _finish_shard(plan, started, work, on_finish)


def _sample_chunks(plan: SamplingPlan, todo: list[int], engine: LazyEngine, progress: bool) -> Work:
    """Stream every request of the chunks ``todo`` through the engine in one session (its batch never
    drains between chunks); each chunk is graded and written, atomically, by a writer thread beside
    generation as soon as all its problems are back. A kill loses at most the chunks not yet written."""
    from tqdm.auto import tqdm

    chunks, per = plan.chunks, plan.samples_per_problem
    total = sum(len(chunks[i]) for i in plan.mine) * per
    done = total - sum(len(chunks[i]) for i in todo) * per
    if done:
        log.info(
            "resuming %s: %d of %d chunks already done",
            plan.run.path,
            len(plan.mine) - len(todo),
            len(plan.mine),
        )
    running = engine.get()
    work = Work(engine=running.name, reproducible=running.reproducible)
    back: dict[int, dict[int, Generation]] = {i: {} for i in todo}  # chunk -> problem position -> samples
    shard = f" shard {plan.shard}/{plan.num_shards}" if plan.num_shards > 1 else ""
    with ThreadPoolExecutor(1, thread_name_prefix="chunk-writer") as writer, tqdm(
        total=total, initial=done, unit="sample", desc=f"{plan.model.name} {plan.budget.name}{shard}",
        disable=not progress, dynamic_ncols=True,
    ) as bar:  # fmt: skip
        written: list[Future] = []
        started = time.time()  # rates exclude model conversion and engine start-up
        for (index, position), generation in running.stream(_requests(plan, todo), plan.settings):
            if len(generation.completions) != per:
                problem = chunks[index][position]
                raise RuntimeError(
                    f"engine returned {len(generation.completions)} samples for {problem.id}, expected {per}"
                )
            back[index][position] = generation
            work.new_tokens += sum(c.generated_tokens for c in generation.completions)
            work.new_samples += per
            if len(back[index]) == len(chunks[index]):
                written.append(writer.submit(_write_chunk, plan, index, back.pop(index)))
            for future in written:  # a failed write stops the run now, not at the end
                if future.done():
                    future.result()
            bar.update(per)
            elapsed = max(time.time() - started, 1e-9)
            bar.set_postfix(
                samples_s=f"{work.new_samples / elapsed:.1f}", tokens_s=f"{work.new_tokens / elapsed:.0f}"
            )
        work.engine_time_s = time.time() - started
        for future in written:
            future.result()
    usage = getattr(running, "usage", None)
    work.api_usage = usage.as_dict() if usage is not None else None
    return work


def _derive(
    plan: SamplingPlan,
    todo: list[int],
    donor: SampleRun,
    donor_samples: int,
    started: float,
    on_finish: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """Write the chunks ``todo`` from the first samples of ``donor`` (sample_prefix), then merge as usual."""
    log.info(
        "%s: taking the first %d of %d samples per problem from %s (same seeds; sampling.reuse_prefix=false "
        "generates them)", plan.run.path, plan.samples_per_problem, donor_samples, donor.path,
    )  # fmt: skip
    frame = take_prefix(donor, [p.id for p in plan.problems], plan.samples_per_problem)
    rows = dict(tuple(frame.groupby("problem_id", sort=False)))
    for index in todo:
        chunk = pd.concat([rows[p.id] for p in plan.chunks[index]], ignore_index=True)
        runs.atomic_write_parquet(plan.run.chunk_path(index), chunk[COLUMNS])
    source = donor.read_summary()
    work = Work(engine=source.get("engine"), reproducible=source.get("reproducible"))
    derived = {"run": str(donor.path), "samples_per_problem": donor_samples}
    return _merge(plan, started, work, on_finish, derived_from=derived)


def _requests(plan: SamplingPlan, todo: list[int]) -> Iterator[tuple[tuple[int, int], Request]]:
    """Every request of the chunks ``todo``, in chunk order, keyed by (chunk, position in chunk); built only
    as the engine asks for them."""
    for index in todo:
        for position, problem in enumerate(plan.chunks[index]):
            prompt = plan.template.render(problem.question)
            yield (
                (index, position),
                Request(prompt, plan.samples_per_problem, problem_seed(plan.seed, problem.id)),
            )


def _write_chunk(plan: SamplingPlan, index: int, generations: dict[int, Generation]) -> None:
    """Grade one chunk's samples and write them as one atomic Parquet file."""
    rows = []
    for position, problem in enumerate(plan.chunks[index]):
        generation = generations[position]
        rows += [
            {
                "problem_id": problem.id,
                "sample_index": k,
                "level": problem.level,
                "subject": problem.subject,
                "gold_answer": problem.answer,
                "completion": c.text,
                "prompt_tokens": generation.prompt_tokens,
                "generated_tokens": c.generated_tokens,
                "finish_reason": c.finish_reason,
            }
            for k, c in enumerate(generation.completions)
        ]
    _grade(rows, plan.dataset.answer_format)
    runs.atomic_write_parquet(plan.run.chunk_path(index), _frame(rows))


def _grade(rows: list[dict[str, Any]], answer_format: str) -> None:
    from .grading import grade_completions

    grades = grade_completions(
        [r["completion"] for r in rows], [r["gold_answer"] for r in rows], answer_format
    )
    for row, grade in zip(rows, grades, strict=True):
        row.update(extracted_answer=grade.extracted, correct=grade.correct, grade_status=grade.status)


def _finish_shard(
    plan: SamplingPlan, started: float, work: Work, on_finish: Callable[[dict[str, Any]], None] | None
) -> dict[str, Any]:
    """Record this shard's work; the shard that finds every chunk written merges them (once, under a lock)."""
    run = plan.run
    _record_shard(plan, work)
    missing = [i for i in range(len(plan.chunks)) if not run.chunk_path(i).is_file()]
    if missing:
        log.info(
            "%s: shard %d/%d done; %d chunks of other shards to go (the last shard to finish merges)",
            run.path,
            plan.shard,
            plan.num_shards,
            len(missing),
        )
        return {"finished": False, "run_dir": str(run.path), "shard": plan.shard,
                "num_shards": plan.num_shards, "missing_chunks": len(missing)}  # fmt: skip
    with FileLock(str(run.merge_lock)):  # two shards finishing together merge once
        if run.is_finished():
            return run.read_summary()
        shards = _shard_records(plan)
        total = Work(
            new_samples=sum(r["new_samples"] for r in shards),
            new_tokens=sum(r["new_tokens"] for r in shards),
            engine_time_s=sum(r["engine_time_s"] for r in shards),
            engine=next((r["engine"] for r in shards if r["engine"]), None),
            reproducible=_all_reproducible([r.get("reproducible") for r in shards]),
        )
        return _merge(plan, started, total, on_finish, shards=shards)


def _record_shard(plan: SamplingPlan, work: Work) -> None:
    """Add this job's work to its shard's record (a requeued shard adds to what it did before)."""
    path = plan.run.shard_path(plan.shard, plan.num_shards)
    record = runs.read_json(path) if path.is_file() else {"shard": plan.shard, "jobs": 0}
    for key in WORK_COUNTS:
        record[key] = record.get(key, 0) + getattr(work, key)
    record["engine"] = work.engine or record.get("engine")
    record["reproducible"] = _all_reproducible([record.get("reproducible"), work.reproducible])
    if work.api_usage is not None:
        record["api_usage"] = work.api_usage
    record["jobs"] += 1
    runs.atomic_write_json(path, record)


def _all_reproducible(flags: list[bool | None]) -> bool | None:
    """False if any job's engine was not reproducible; None where no job sampled anything."""
    known = [f for f in flags if f is not None]
    return all(known) if known else None


def _shard_records(plan: SamplingPlan) -> list[dict[str, Any]]:
    return [
        runs.read_json(p) for p in sorted(plan.run.shards_dir.glob(f"shard-*-of-{plan.num_shards:05d}.json"))
    ]


def _merge(
    plan: SamplingPlan,
    started: float,
    work: Work,
    on_finish: Callable[[dict[str, Any]], None] | None,
    shards: list[dict[str, Any]] | None = None,
    derived_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """All chunks done: the samples table in chunk order, the summary, and last the completion marker."""
    run = plan.run
    frame = pd.concat(
        [pd.read_parquet(run.chunk_path(i)) for i in range(len(plan.chunks))], ignore_index=True
    )
    _check_exactly_once(frame, plan)
    runs.atomic_write_parquet(run.samples_path, frame)
    summary = summarize(frame, plan)
    seconds = work.engine_time_s
    summary.update(
        wall_time_s=round(time.time() - started, 3),
        engine_time_s=round(seconds, 3),
        new_samples=work.new_samples,
        engine=work.engine,
        # False where the engine cannot promise that the same seeds give the same samples (hosted APIs).
        reproducible=work.reproducible,
        api_usage=work.api_usage,
        samples_per_s=round(work.new_samples / seconds, 3) if seconds else None,
        tokens_per_s=round(work.new_tokens / seconds, 3) if seconds else None,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        derived_from=derived_from,  # the larger run whose first samples these are (sample_prefix), or None
    )
    if shards is not None:  # wall_time_s is the merging job's; engine time and samples add up over shards
        summary["shards"] = shards
    if on_finish is not None:
        on_finish(summary)
    run.write_summary(summary)  # the completion marker: last
    return summary


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype(
        {
            "level": "Int64",
            "sample_index": "int32",
            "prompt_tokens": "int64",
            "generated_tokens": "int64",
            "correct": "bool",
        }
    )


def _check_exactly_once(frame: pd.DataFrame, plan: SamplingPlan) -> None:
    expected = {(p.id, k) for p in plan.problems for k in range(plan.samples_per_problem)}
    got = list(zip(frame["problem_id"], frame["sample_index"], strict=True))
    if len(got) != len(expected) or set(got) != expected:
        raise runs.RunError(
            f"{plan.run.path}: the chunks hold {len(got)} samples ({len(set(got))} distinct), expected "
            f"{len(expected)}; the run folder is inconsistent — delete {plan.run.path / 'chunks'} to resample"
        )


def summarize(frame: pd.DataFrame, plan: SamplingPlan) -> dict[str, Any]:
    """The numbers every later stage reads: budget ledger, accuracy, coverage."""
    ledger = Ledger(
        params=plan.model.params,
        samples_per_problem=plan.samples_per_problem,
        num_problems=len(plan.problems),
        tokens_per_solution=plan.budget.tokens_per_solution,
        generated_tokens=int(frame["generated_tokens"].sum()),
        # The prompt is encoded once per problem (prefix caching; one request of n samples), not once per sample.
        prompt_tokens=int(frame.groupby("problem_id")["prompt_tokens"].first().sum()),
        price_per_mtok=plan.model.price_per_mtok,
        input_price_per_mtok=plan.model.input_price_per_mtok,
    )
    per_problem = frame.groupby("problem_id")["correct"].any()
    return {
        "model": plan.model.name,
        "dataset": plan.dataset.name,
        "split": plan.dataset.split,
        "budget": plan.budget.name,
        "budget_mode": plan.budget.mode,
        "reference_model": plan.budget.reference_model,
        "reference_samples": plan.budget.reference_samples,
        "reference_price": plan.budget.reference_price,
        "params": plan.model.params,
        "price_per_mtok": plan.model.price_per_mtok,
        "params_total": plan.model.params_total,
        "samples_per_problem": plan.samples_per_problem,
        "num_problems": len(plan.problems),
        "num_samples": len(frame),
        **ledger.as_dict(),
        "budget_flops_per_problem": plan.budget.flops_per_problem,
        "accuracy": float(frame["correct"].mean()),
        "coverage": float(per_problem.mean()),
        "correct_samples": int(frame["correct"].sum()),
        "truncated_samples": int((frame["finish_reason"] == "length").sum()),
        "no_answer_samples": int((frame["grade_status"] == "no_answer").sum()),
        **data_quality(frame, plan.samples_per_problem),  # coverage@k, diversity@k, per-level tables
        "seed": plan.seed,
        "samples_path": str(plan.run.samples_path),
    }
