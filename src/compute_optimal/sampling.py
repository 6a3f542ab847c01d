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
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from . import runs
from .analysis import data_quality
from .budget import Budget, BudgetError, Ledger
from .data import Problem, select_subset
from .engines import Engine, Request, SamplingSettings
from .prompts import PromptTemplate, get_template

log = logging.getLogger(__name__)

SAMPLES = "samples.parquet"
CHUNKS = "chunks"
SHARDS = "shards"
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


class SamplingError(ValueError):
    """A sampling setting out of range (chunk size, shard index)."""


@dataclass
class SamplingPlan:
    """Everything a sampling run needs, validated; no model loaded yet."""

    run_dir: Path
    model: Mapping[str, Any]
    budget: Budget
    samples_per_problem: int
    dataset: str
    split: str
    answer_format: str
    problems: list[Problem]
    template: PromptTemplate
    settings: SamplingSettings
    seed: int
    chunk_size: int
    signature: dict[str, Any] = field(default_factory=dict)
    shard: int = 0  # this job's shard of num_shards (not in the signature: all shards share one run)
    num_shards: int = 1

    @property
    def chunks(self) -> list[list[Problem]]:
        size = self.chunk_size
        return [self.problems[i : i + size] for i in range(0, len(self.problems), size)]


def problem_seed(seed: int, problem_id: str) -> int:
    """A per-problem seed independent of chunking and batching; spread over 31 bits because vLLM
    seeds the i-th of n samples with seed + i."""
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def plan_sampling(
    *,
    run_dir: str | Path,
    model: Mapping[str, Any],
    budget: Budget,
    dataset: Mapping[str, Any],
    problems: Sequence[Problem],
    sampling: Mapping[str, Any],
    seed: int,
    engine_backend: str = "auto",
) -> SamplingPlan:
    """Validate and fix everything about a run; raises BudgetError / DatasetError / PromptError."""
    samples = budget.samples_for(str(model["name"]), float(model["params"]), model.get("price_per_mtok"))
    prompt = dataset.get("prompt") or {}
    template = get_template(str(prompt.get("template", dataset["name"])), prompt.get("num_shots"))
    selected = select_subset(list(problems), dataset.get("limit"), seed)
    if not selected:
        raise BudgetError(f"dataset {dataset['name']!r} has no problems to sample")
    stop = tuple(sampling.get("stop") or template.stop)
    settings = SamplingSettings(
        temperature=float(sampling["temperature"]),
        top_p=float(sampling.get("top_p", 1.0)),
        max_new_tokens=int(sampling["max_new_tokens"]),
        stop=stop,
    )
    chunk_size = int(sampling.get("chunk_size", 16))
    if chunk_size < 1:
        raise SamplingError(f"sampling.chunk_size must be >= 1, got {chunk_size}")
    shard, num_shards = int(sampling.get("shard", 0)), int(sampling.get("num_shards", 1))
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise SamplingError(
            f"sampling.shard must be in [0, sampling.num_shards) and num_shards >= 1; got shard={shard}, "
            f"num_shards={num_shards}"
        )
    split = str(dataset.get("split", "train"))
    signature = {
        "stage": "sample",
        "model": {k: model.get(k) for k in ("name", "source", "hf_id", "embedded", "arch", "params")},
        "dataset": {
            "name": dataset["name"],
            "split": split,
            "limit": dataset.get("limit"),
            "problem_ids_sha256": _ids_digest(selected),
        },
        "budget": {
            "name": budget.name,
            "mode": budget.mode,
            "reference_model": budget.reference_model,
            "reference_samples": budget.reference_samples,
            "reference_params": budget.reference_params,
        },
        "samples_per_problem": samples,
        "prompt": {"template": template.name, "num_shots": len(template.exemplars)},
        "sampling": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_new_tokens": settings.max_new_tokens,
            "stop": list(stop),
            "chunk_size": chunk_size,
        },
        "engine": engine_backend,
        "seed": seed,
    }
    return SamplingPlan(
        run_dir=Path(run_dir),
        model=dict(model),
        budget=budget,
        samples_per_problem=samples,
        dataset=str(dataset["name"]),
        split=split,
        answer_format=str(dataset["answer_format"]),
        problems=selected,
        template=template,
        settings=settings,
        seed=seed,
        chunk_size=chunk_size,
        signature=signature,
        shard=shard,
        num_shards=num_shards,
    )


def _ids_digest(problems: Sequence[Problem]) -> str:
    return hashlib.sha256("\n".join(p.id for p in problems).encode()).hexdigest()[:16]


def _chunk_path(run_dir: Path, index: int) -> Path:
    return run_dir / CHUNKS / f"chunk-{index:05d}.parquet"


def run_sampling(
    plan: SamplingPlan,
    make_engine: Callable[[], Engine],
    *,
    progress: bool = True,
    on_finish: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Execute a plan (or skip it when finished); returns the run's summary."""
    from .grading import grade_completions

    if runs.is_finished(plan.run_dir):
        log.info("skipping %s: already finished", plan.run_dir)
        return runs.read_summary(plan.run_dir)
    runs.claim_run_dir(plan.run_dir, plan.signature)
    chunks = plan.chunks
    mine = [i for i in range(len(chunks)) if i % plan.num_shards == plan.shard]
    todo = [i for i in mine if not _chunk_path(plan.run_dir, i).is_file()]
    total = sum(len(chunks[i]) for i in mine) * plan.samples_per_problem
    done = total - sum(len(chunks[i]) for i in todo) * plan.samples_per_problem
    if todo and done:
        log.info("resuming %s: %d of %d chunks already done", plan.run_dir, len(mine) - len(todo), len(mine))

    started = time.time()
    new_tokens = new_samples = 0
    engine_seconds = 0.0
    engine_name = None
    if todo:
        from tqdm.auto import tqdm

        with make_engine() as engine:
            engine_name = engine.name
            generation_started = time.time()  # rates exclude model conversion and engine start-up
            bar = tqdm(
                total=total,
                initial=done,
                unit="sample",
                desc=f"{plan.model['name']} {plan.budget.name}"
                + (f" shard {plan.shard}/{plan.num_shards}" if plan.num_shards > 1 else ""),
                disable=not progress,
                dynamic_ncols=True,
            )
            for index in todo:
                chunk = chunks[index]
                requests = [
                    Request(
                        plan.template.render(p.question),
                        plan.samples_per_problem,
                        problem_seed(plan.seed, p.id),
                    )
                    for p in chunk
                ]
                t0 = time.time()
                generations = engine.generate(requests, plan.settings)
                engine_seconds += time.time() - t0
                rows = []
                for problem, generation in zip(chunk, generations, strict=True):
                    if len(generation.completions) != plan.samples_per_problem:
                        raise RuntimeError(
                            f"engine returned {len(generation.completions)} samples for {problem.id}, "
                            f"expected {plan.samples_per_problem}"
                        )
                    for k, c in enumerate(generation.completions):
                        rows.append(
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
                        )
                grades = grade_completions(
                    [r["completion"] for r in rows], [r["gold_answer"] for r in rows], plan.answer_format
                )
                for row, grade in zip(rows, grades, strict=True):
                    row.update(
                        extracted_answer=grade.extracted, correct=grade.correct, grade_status=grade.status
                    )
                runs.atomic_write_parquet(_chunk_path(plan.run_dir, index), _frame(rows))
                tokens = sum(r["generated_tokens"] for r in rows)
                new_tokens += tokens
                new_samples += len(rows)
                bar.update(len(rows))
                elapsed = max(time.time() - generation_started, 1e-9)
                bar.set_postfix(
                    samples_s=f"{new_samples / elapsed:.1f}", tokens_s=f"{new_tokens / elapsed:.0f}"
                )
            bar.close()

    work = {
        "new_samples": new_samples,
        "new_tokens": new_tokens,
        "engine_time_s": engine_seconds,
        "engine": engine_name,
    }
    if plan.num_shards == 1:
        return _merge(plan, started, work, on_finish)
    _record_shard(plan, work)
    missing = [i for i in range(len(chunks)) if not _chunk_path(plan.run_dir, i).is_file()]
    if missing:
        log.info(
            "%s: shard %d/%d done; %d chunks of other shards to go (the last shard to finish merges)",
            plan.run_dir,
            plan.shard,
            plan.num_shards,
            len(missing),
        )
        return {"finished": False, "run_dir": str(plan.run_dir), "shard": plan.shard,
                "num_shards": plan.num_shards, "missing_chunks": len(missing)}  # fmt: skip
    with FileLock(str(plan.run_dir / ".merge.lock")):  # two shards finishing together merge once
        if runs.is_finished(plan.run_dir):
            return runs.read_summary(plan.run_dir)
        shards = _shard_records(plan)
        total_work = {key: sum(r[key] for r in shards) for key in WORK_COUNTS}
        total_work["engine"] = next((r["engine"] for r in shards if r["engine"]), None)
        return _merge(plan, started, total_work, on_finish, shards=shards)


def _shard_path(plan: SamplingPlan, shard: int) -> Path:
    return plan.run_dir / SHARDS / f"shard-{shard:05d}-of-{plan.num_shards:05d}.json"


def _record_shard(plan: SamplingPlan, work: dict[str, Any]) -> None:
    """Add this job's work to its shard's record (a requeued shard adds to what it did before)."""
    path = _shard_path(plan, plan.shard)
    record = runs.read_json(path) if path.is_file() else {"shard": plan.shard, "jobs": 0}
    for key in WORK_COUNTS:
        record[key] = record.get(key, 0) + work[key]
    record["engine"] = work["engine"] or record.get("engine")
    record["jobs"] += 1
    runs.atomic_write_json(path, record)


def _shard_records(plan: SamplingPlan) -> list[dict[str, Any]]:
    return [
        runs.read_json(p)
        for p in sorted((plan.run_dir / SHARDS).glob(f"shard-*-of-{plan.num_shards:05d}.json"))
    ]


def _merge(
    plan: SamplingPlan,
    started: float,
    work: Mapping[str, Any],
    on_finish: Callable[[dict[str, Any]], None] | None,
    shards: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """All chunks done: the samples table in chunk order, the summary, and last the completion marker."""
    chunks = plan.chunks
    frame = pd.concat(
        [pd.read_parquet(_chunk_path(plan.run_dir, i)) for i in range(len(chunks))], ignore_index=True
    )
    _check_exactly_once(frame, plan)
    runs.atomic_write_parquet(plan.run_dir / SAMPLES, frame)
    wall = time.time() - started
    summary = summarize(frame, plan)
    seconds, new_samples, new_tokens = work["engine_time_s"], work["new_samples"], work["new_tokens"]
    summary.update(
        wall_time_s=round(wall, 3),
        engine_time_s=round(seconds, 3),
        new_samples=new_samples,
        engine=work["engine"],
        samples_per_s=round(new_samples / seconds, 3) if seconds else None,
        tokens_per_s=round(new_tokens / seconds, 3) if seconds else None,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    if shards is not None:  # wall_time_s is the merging job's; engine time and samples add up over shards
        summary["shards"] = shards
    if on_finish is not None:
        on_finish(summary)
    runs.atomic_write_json(plan.run_dir / runs.SUMMARY, summary)  # the completion marker: last
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
            f"{plan.run_dir}: the chunks hold {len(got)} samples ({len(set(got))} distinct), expected "
            f"{len(expected)}; the run folder is inconsistent — delete {plan.run_dir / CHUNKS} to resample"
        )


def summarize(frame: pd.DataFrame, plan: SamplingPlan) -> dict[str, Any]:
    """The numbers every later stage reads: budget ledger, accuracy, coverage."""
    ledger = Ledger(
        params=float(plan.model["params"]),
        samples_per_problem=plan.samples_per_problem,
        num_problems=len(plan.problems),
        tokens_per_solution=plan.budget.tokens_per_solution,
        generated_tokens=int(frame["generated_tokens"].sum()),
        # The prompt is encoded once per problem (prefix caching), not once per sample.
        prompt_tokens=int(frame.groupby("problem_id")["prompt_tokens"].first().sum()),
    )
    per_problem = frame.groupby("problem_id")["correct"].any()
    return {
        "model": plan.model["name"],
        "dataset": plan.dataset,
        "split": plan.split,
        "budget": plan.budget.name,
        "budget_mode": plan.budget.mode,
        "reference_model": plan.budget.reference_model,
        "reference_samples": plan.budget.reference_samples,
        "params": float(plan.model["params"]),
        "params_total": plan.model.get("params_total"),
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
        "samples_path": str(plan.run_dir / SAMPLES),
    }
