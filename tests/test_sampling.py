"""The sampling stage on real (tiny, random-weight) models: tables, ledger, resume, multiruns, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from compute_optimal import models, runs
from compute_optimal.budget import Budget
from compute_optimal.data import Problem
from compute_optimal.engines import Engine, LazyEngine, build_engine
from compute_optimal.resolvers import model_config
from compute_optimal.runs import SampleRun
from compute_optimal.sample_prefix import find_donor
from compute_optimal.sampling import (
    SamplingConfig,
    SamplingError,
    SamplingPlan,
    plan_sampling,
    problem_seed,
    run_sampling,
)
from compute_optimal.specs import Dataset, Model, Prompt
from tests.conftest import run_entry_point

# The tiny random-weight model of conf/model/tiny_random.yaml (built once, cached).
TINY = Model.from_config(model_config("tiny_random"))
PROBLEMS = [
    Problem(
        f"p{i}",
        f"Ann has {i} apples. She finds 2 more. How many apples does she have?",
        str(i + 2),
        f"{i} + 2 = {i + 2}. The answer is {i + 2}.",
        level=1,
    )
    for i in range(5)
]
DATASET = Dataset(name="toy", answer_format="arith", prompt=Prompt("arith", 2), split="train", limit=None)


def make_plan(
    run_dir: Path,
    samples: int = 3,
    chunk_size: int = 2,
    max_new_tokens: int = 12,
    seed: int = 0,
    temperature: float = 1.0,
    **shards: int,
) -> SamplingPlan:
    budget = Budget("low", "number", "tiny_random", samples, 6.6e6)
    return plan_sampling(
        run=SampleRun(run_dir),
        model=TINY,
        budget=budget,
        dataset=DATASET,
        problems=PROBLEMS,
        sampling=SamplingConfig(
            temperature=temperature, max_new_tokens=max_new_tokens, chunk_size=chunk_size, **shards
        ),
        seed=seed,
        engine_backend="hf",
    )


@pytest.fixture(scope="module")
def tiny_checkpoint() -> str:
    return models.resolve_checkpoint(TINY)


def hf_engine(checkpoint: str) -> LazyEngine:
    """The transformers engine on ``checkpoint``, started on first use; the caller closes it."""
    return LazyEngine(lambda: build_engine(checkpoint, "hf"))


def no_engine() -> LazyEngine:
    def start() -> Engine:
        raise AssertionError("a finished run must not start an engine")

    return LazyEngine(start)


def sample(plan: SamplingPlan, checkpoint: str) -> dict:
    """Run a plan on its own engine, closed afterwards (what the sampling stage does)."""
    with hf_engine(checkpoint) as engine:
        return run_sampling(plan, engine, progress=False)


def test_table_and_summary(tmp_path: Path, tiny_checkpoint: str) -> None:
    plan = make_plan(tmp_path / "run")
    with hf_engine(tiny_checkpoint) as engine:
        summary = run_sampling(plan, engine, progress=False)
        assert engine.started, "a run with chunks to sample starts its engine"
        assert engine.get().name == "hf" == summary["engine"]  # ... and leaves it running for its owner
    assert not engine.started  # the owner closed it
    frame = pd.read_parquet(summary["samples_path"])
    assert list(frame.columns[:2]) == ["problem_id", "sample_index"]
    assert len(frame) == 5 * 3 and frame.groupby("problem_id").size().eq(3).all()
    assert sorted(frame["sample_index"].unique()) == [0, 1, 2]
    # Ledger: measured FLOPs are 2·P·(tokens really generated); tokens are counted per sample.
    assert summary["generated_tokens"] == frame["generated_tokens"].sum()
    assert 0 < frame["generated_tokens"].max() <= 12
    assert summary["measured_flops"] == pytest.approx(2 * 6.6e6 * summary["generated_tokens"])
    assert summary["planned_flops"] == pytest.approx(2 * 6.6e6 * 3 * 5 * 256)
    assert summary["accuracy"] == pytest.approx(frame["correct"].mean())
    assert summary["coverage"] == pytest.approx(frame.groupby("problem_id")["correct"].any().mean())
    for key in (
        "model",
        "dataset",
        "budget",
        "params",
        "samples_per_problem",
        "num_problems",
        "planned_flops",
        "measured_flops",
        "generated_tokens",
        "accuracy",
        "coverage",
        "samples_path",
    ):
        assert key in summary
    # The prompt-token count is the tokenizer's count of the rendered prompt.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert frame["prompt_tokens"].iloc[0] == len(tok(plan.template.render(PROBLEMS[0].question)).input_ids)
    assert plan.run.is_finished() and (plan.run.path / "summary.json").is_file()
    assert plan.run.summary_path == plan.run.path / "summary.json"
    assert json.loads(plan.run.summary_path.read_text()) == summary
    assert summary["samples_path"] == str(plan.run.path / "samples.parquet")


def test_finished_run_is_skipped(tmp_path: Path, tiny_checkpoint: str) -> None:
    plan = make_plan(tmp_path / "run", chunk_size=5)
    first = sample(plan, tiny_checkpoint)
    with no_engine() as engine:
        assert run_sampling(plan, engine, progress=False) == first
        assert not engine.started


def test_samples_do_not_depend_on_chunking(tmp_path: Path, tiny_checkpoint: str) -> None:
    """Per-problem seeds: a resumed run (other chunk boundaries in time) reproduces the same samples."""
    a = sample(make_plan(tmp_path / "a", chunk_size=1), tiny_checkpoint)
    b = sample(make_plan(tmp_path / "b", chunk_size=5), tiny_checkpoint)
    cols = ["problem_id", "sample_index", "completion", "generated_tokens"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(a["samples_path"])[cols], pd.read_parquet(b["samples_path"])[cols]
    )
    # ... and the n samples of one problem are not all the same.
    frame = pd.read_parquet(a["samples_path"])
    assert frame.groupby("problem_id")["completion"].nunique().max() > 1


def test_shards_merge_into_the_single_job_table(tmp_path: Path, tiny_checkpoint: str) -> None:
    """Three shards (5 problems in 3 chunks: 2+2+1) fill one run; the last merges it, as one job would."""
    single = sample(make_plan(tmp_path / "single"), tiny_checkpoint)
    run_dir = tmp_path / "sharded"
    done = []
    for shard in (2, 0):
        part = sample(make_plan(run_dir, num_shards=3, shard=shard), tiny_checkpoint)
        assert part["finished"] is False and not SampleRun(run_dir).is_finished()
        assert part["run_dir"] == str(run_dir)
        done.append(part["missing_chunks"])
    assert done == [2, 1]  # shard s does chunks s, s+3, ...: one chunk each here
    merged = sample(make_plan(run_dir, num_shards=3, shard=1), tiny_checkpoint)
    assert SampleRun(run_dir).is_finished()
    pd.testing.assert_frame_equal(
        pd.read_parquet(merged["samples_path"]), pd.read_parquet(single["samples_path"])
    )
    # The ledger adds up over shards: the same tokens and FLOPs as the single job, and every shard's work.
    for key in ("generated_tokens", "measured_flops", "planned_flops", "num_samples", "coverage", "accuracy"):
        assert merged[key] == single[key], key
    assert [r["shard"] for r in merged["shards"]] == [0, 1, 2]
    assert sum(r["new_samples"] for r in merged["shards"]) == merged["new_samples"] == 5 * 3
    assert sum(r["new_tokens"] for r in merged["shards"]) == merged["generated_tokens"]
    # A shard relaunched after the merge (a requeued array task) finds the run finished.
    with no_engine() as engine:
        again = run_sampling(make_plan(run_dir, num_shards=3, shard=0), engine, progress=False)
    assert again == merged


def _layout(root: Path, budget: str, seed: int = 0) -> Path:
    """A run folder where the sampling stage puts it (runs.SampleRun.of)."""
    return root / "sample" / "toy" / "tiny_random" / budget / f"seed{seed}"


def test_a_smaller_run_takes_the_first_samples_of_a_larger_one(tmp_path: Path, tiny_checkpoint: str) -> None:
    """Sample i of a problem is seeded problem_seed + i whatever n is: a run of 2 per problem beside a finished
    run of 4 (another budget, same definition) takes the first 2, generates nothing, and says where from."""
    large = sample(make_plan(_layout(tmp_path, "high-number"), samples=4, chunk_size=5), tiny_checkpoint)
    small_plan = make_plan(_layout(tmp_path, "low-number"), samples=2)
    with no_engine() as engine:
        small = run_sampling(small_plan, engine, progress=False)
        assert not engine.started
    assert small["derived_from"] == {"run": str(_layout(tmp_path, "high-number")), "samples_per_problem": 4}
    assert large["derived_from"] is None and small["new_samples"] == 0
    frame = pd.read_parquet(small["samples_path"])
    first = pd.read_parquet(large["samples_path"]).query("sample_index < 2").reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, first)
    assert small["num_samples"] == 5 * 2 and small["samples_per_problem"] == 2
    assert small["generated_tokens"] == frame["generated_tokens"].sum() < large["generated_tokens"]
    assert small["coverage"] == pytest.approx(frame.groupby("problem_id")["correct"].any().mean())
    # ... which are the samples the run generates itself (sampling.reuse_prefix=false).
    own = make_plan(_layout(tmp_path, "low-compute"), samples=2)
    own.reuse_prefix = False
    generated = sample(own, tiny_checkpoint)
    assert generated["derived_from"] is None and generated["new_samples"] == 5 * 2
    pd.testing.assert_frame_equal(pd.read_parquet(generated["samples_path"]), frame)


def test_only_a_larger_run_of_the_same_definition_gives_its_samples(
    tmp_path: Path, tiny_checkpoint: str
) -> None:
    sample(make_plan(_layout(tmp_path, "high-number"), samples=3), tiny_checkpoint)
    for plan in (
        make_plan(_layout(tmp_path, "x-number"), samples=4),  # more samples than the finished run holds
        make_plan(_layout(tmp_path, "y-number"), samples=2, max_new_tokens=10),  # other decoding
        make_plan(_layout(tmp_path, "z-number", seed=1), samples=2, seed=1),  # another seed
        make_plan(tmp_path / "eval" / "greedy", samples=2),  # not in the sampling layout
    ):
        assert find_donor(plan.run, plan.signature) is None, plan.run.path
    # A greedy run draws nothing: another seed's greedy run of the same problems is the same run.
    greedy = make_plan(_layout(tmp_path, "g-number"), samples=1, temperature=0.0)
    sample(greedy, tiny_checkpoint)
    again = make_plan(_layout(tmp_path, "g-number", seed=2), samples=1, temperature=0.0, seed=2)
    assert find_donor(again.run, again.signature) == (greedy.run, 1)
    evaluation = tmp_path / "eval" / "toy" / "base" / "tiny_random"
    sample(make_plan(evaluation / "seed0" / "greedy", samples=1, temperature=0.0), tiny_checkpoint)
    again = make_plan(evaluation / "seed1" / "greedy", samples=1, temperature=0.0, seed=1)
    assert find_donor(again.run, again.signature) == (SampleRun(evaluation / "seed0" / "greedy"), 1)
    # An unfinished larger run gives nothing either.
    (_layout(tmp_path, "high-number") / "summary.json").unlink()
    plan = make_plan(_layout(tmp_path, "low-number"), samples=2)
    assert find_donor(plan.run, plan.signature) is None


def test_bad_shard_is_refused(tmp_path: Path) -> None:
    for bad in (dict(num_shards=2, shard=2), dict(num_shards=2, shard=-1), dict(num_shards=0, shard=0)):
        with pytest.raises(SamplingError, match=r"sampling\.shard"):
            make_plan(tmp_path / "run", **bad)
    with pytest.raises(SamplingError, match=r"sampling\.chunk_size"):
        make_plan(tmp_path / "run", chunk_size=0)
    assert not (tmp_path / "run").exists()


def test_problem_seed_is_stable_and_spread() -> None:
    assert problem_seed(0, "p1") == problem_seed(0, "p1")
    seeds = {problem_seed(0, f"p{i}") for i in range(1000)}
    assert len(seeds) == 1000 and max(seeds) < 2**31
    assert problem_seed(1, "p1") != problem_seed(0, "p1")


def test_each_problem_is_sampled_with_its_own_seed(tmp_path: Path, tiny_checkpoint: str) -> None:
    """The stage seeds problem p's request with problem_seed(seed, p.id): samples of two problems are
    independent, and a problem's samples do not depend on which others share its run or chunk."""
    plan = make_plan(tmp_path / "run", chunk_size=2, seed=3)
    seen: dict[str, int] = {}

    class Recording(Engine):
        name = "hf"

        def __init__(self):
            self.inner = build_engine(tiny_checkpoint, "hf")

        def close(self):
            self.inner.close()

        def generate(self, requests, settings):
            seen.update({r.prompt: r.seed for r in requests})
            return self.inner.generate(requests, settings)

    with LazyEngine(Recording) as engine:
        run_sampling(plan, engine, progress=False)
    expected = {plan.template.render(p.question): problem_seed(3, p.id) for p in PROBLEMS}
    assert seen == expected and len(set(seen.values())) == len(PROBLEMS)


def test_resume_after_a_crash_in_the_middle(tmp_path: Path, tiny_checkpoint: str) -> None:
    """An engine that dies after two chunks: the relaunch redoes only the rest, every sample once."""
    plan = make_plan(tmp_path / "run", chunk_size=1)
    calls, closed = [], []

    class Dying(Engine):
        name = "hf"

        def __init__(self):
            self.inner = build_engine(tiny_checkpoint, "hf")

        def close(self):
            closed.append(1)
            self.inner.close()

        def generate(self, requests, settings):
            if len(calls) == 2:
                raise KeyboardInterrupt("killed")
            calls.append(requests[0].prompt)
            return self.inner.generate(requests, settings)

    with pytest.raises(KeyboardInterrupt), LazyEngine(Dying) as engine:
        run_sampling(plan, engine, progress=False)
    assert closed == [1], "the engine's owner closes it when the run dies"
    assert not plan.run.is_finished()
    assert len(list((plan.run.path / "chunks").glob("chunk-*.parquet"))) == 2
    assert plan.run.chunk_path(1).is_file() and not plan.run.chunk_path(2).exists()
    # A leftover temporary file from a write that was cut short is never read.
    (plan.run.path / "chunks" / ".chunk-00002.parquet.x.tmp").write_bytes(b"garbage")
    summary = sample(plan, tiny_checkpoint)
    assert summary["new_samples"] == 3 * 3
    reference = sample(make_plan(tmp_path / "ref", chunk_size=1), tiny_checkpoint)
    pd.testing.assert_frame_equal(
        pd.read_parquet(summary["samples_path"]), pd.read_parquet(reference["samples_path"])
    )


def test_resuming_with_another_config_is_refused(tmp_path: Path, tiny_checkpoint: str) -> None:
    run_dir = tmp_path / "run"
    SampleRun(run_dir).claim(make_plan(run_dir).signature)
    (run_dir / "chunks").mkdir()
    (run_dir / "chunks" / "chunk-00000.parquet").write_bytes(b"")  # the folder holds results now
    other = make_plan(run_dir, max_new_tokens=20)
    with pytest.raises(runs.RunError, match=r"max_new_tokens: 12 -> 20"), no_engine() as engine:
        run_sampling(other, engine, progress=False)


def test_a_finished_run_of_another_model_is_not_taken_for_this_one(
    tmp_path: Path, tiny_checkpoint: str
) -> None:
    """A retrained family member keeps its name: its finished samples folder must not be skipped as done
    (before the fix, the second call returned the old model's summary)."""
    run_dir = tmp_path / "run"
    with hf_engine(tiny_checkpoint) as engine:
        run_sampling(make_plan(run_dir), engine, progress=False)
    retrained = make_plan(run_dir)
    retrained.signature["model"] = {**retrained.signature["model"], "pretrain": {"train": {"lr": 1.5e-3}}}
    with (
        pytest.raises(runs.RunError, match=r"different config \(model.pretrain: None -> "),
        no_engine() as engine,
    ):
        run_sampling(retrained, engine, progress=False)
    with no_engine() as engine:  # the same config is still read back, not redone
        assert run_sampling(make_plan(run_dir), engine, progress=False)["num_samples"] == len(PROBLEMS) * 3


def test_a_run_of_other_problems_with_the_same_ids_is_not_taken_for_this_one(
    tmp_path: Path, tiny_checkpoint: str
) -> None:
    """A generator that changes keeps its ids (arith-test-L1-00000): the run's signature holds the problems'
    text and the prompt's exemplars, so a finished run of the old problems or prompt is refused (before
    the fix, both reruns returned the old run as finished)."""
    import dataclasses

    run_dir = tmp_path / "run"
    with hf_engine(tiny_checkpoint) as engine:
        run_sampling(make_plan(run_dir), engine, progress=False)
    reworded = make_plan(run_dir)
    problems = [dataclasses.replace(PROBLEMS[0], question=PROBLEMS[0].question + " Think."), *PROBLEMS[1:]]
    changed = plan_sampling(
        run=SampleRun(run_dir), model=TINY, budget=reworded.budget, dataset=DATASET, problems=problems,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=12, chunk_size=2), seed=0, engine_backend="hf",
    )  # fmt: skip
    assert changed.signature["dataset"]["problems_sha256"] != reworded.signature["dataset"]["problems_sha256"]
    with (
        pytest.raises(runs.RunError, match=r"different config \(dataset.problems_sha256: "),
        no_engine() as engine,
    ):
        run_sampling(changed, engine, progress=False)
    other_prompt = make_plan(run_dir)
    other_prompt.signature["prompt"] = {**other_prompt.signature["prompt"], "exemplars_sha256": "0" * 16}
    with pytest.raises(runs.RunError, match=r"prompt.exemplars_sha256"), no_engine() as engine:
        run_sampling(other_prompt, engine, progress=False)


def test_a_claim_without_results_gives_way_to_another_config(tmp_path: Path, tiny_checkpoint: str) -> None:
    """A run that failed before its first chunk (here: its engine failed to start) has lost nothing: the
    corrected command, with another config, takes the folder over instead of being refused."""
    run_dir = tmp_path / "run"

    def broken():
        raise RuntimeError("engine failed to start")

    with pytest.raises(RuntimeError, match="failed to start"), LazyEngine(broken) as engine:
        run_sampling(make_plan(run_dir, max_new_tokens=20), engine, progress=False)
    assert (run_dir / "run.json").is_file() and not list(run_dir.glob("chunks/*"))
    with hf_engine(tiny_checkpoint) as engine:
        summary = run_sampling(make_plan(run_dir), engine, progress=False)
    assert summary["num_samples"] == len(PROBLEMS) * 3
    assert SampleRun(run_dir).signature()["sampling"]["max_new_tokens"] == 12


@pytest.mark.parametrize(
    "override, message",
    [
        ("sampling.temperature=-1", "sampling.temperature must be >= 0, got -1"),
        ("sampling.top_p=0", "sampling.top_p must be in (0, 1], got 0"),
        ("sampling.top_p=1.5", "sampling.top_p must be in (0, 1], got 1.5"),
        ("sampling.max_new_tokens=0", "sampling.max_new_tokens must be >= 1, got 0"),
    ],
)
def test_out_of_range_sampling_settings_stop_in_the_plan(
    repo_root: Path, tmp_path: Path, override: str, message: str
) -> None:
    """Checked in the plan: no engine starts (engine=vllm_cpu would take ~25 s and end in a vLLM traceback)."""
    proc = run_entry_point(
        "run_sample.py",
        tmp_path,
        "model=tiny_random",
        "engine=vllm_cpu",
        override,
        "logger=none",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sample").exists()  # nothing claimed, nothing written


class Watch(Engine):
    """A real engine, watched: how many chunks had requests in the engine at the same time."""

    def __init__(self, inner: Engine, chunk_of: dict[str, int]) -> None:
        self.inner, self.chunk_of, self.name = inner, chunk_of, inner.name
        self.in_flight: dict[str, int] = {}
        self.most_chunks = 0

    def _note(self) -> None:
        self.most_chunks = max(self.most_chunks, len({self.chunk_of[p] for p in self.in_flight}))

    def generate(self, requests, settings):  # the stage before streaming: one call per chunk
        self.in_flight = {r.prompt: 1 for r in requests}
        self._note()
        return self.inner.generate(requests, settings)

    def stream(self, requests, settings):
        def added():
            for key, request in requests:
                self.in_flight[request.prompt] = 1
                self._note()
                yield (key, request.prompt), request

        for (key, prompt), generation in self.inner.stream(added(), settings):
            del self.in_flight[prompt]
            yield key, generation


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.xdist_group("tiny_vllm")
def test_no_barrier_between_chunks_on_vllm(tmp_path: Path, tiny_vllm, monkeypatch) -> None:
    """The stage streams every chunk's requests into one vLLM session: requests of later chunks are in the
    engine while earlier chunks still generate, so its batch never drains at a chunk's end."""
    plan = make_plan(tmp_path / "run", samples=2, chunk_size=1)
    chunk_of = {plan.template.render(p.question): i for i, chunk in enumerate(plan.chunks) for p in chunk}
    monkeypatch.setattr(tiny_vllm, "max_in_flight_seqs", 8)  # engine.vllm_cpu.max_in_flight_seqs=8
    watch = Watch(tiny_vllm, chunk_of)
    summary = run_sampling(plan, LazyEngine(lambda: watch), progress=False)
    assert watch.most_chunks == 4  # 8 sequences in flight = 4 one-problem chunks of n=2
    assert summary["num_samples"] == len(PROBLEMS) * 2 and not watch.in_flight


# --- through the real entry point -------------------------------------------------------------


def run_cli(repo_root: Path, outputs: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_entry_point("run_sample.py", outputs, *args, check=check, timeout=600)


TINY_ARGS = ("engine=hf", "dataset.limit=3", "sampling.max_new_tokens=6", "sampling.chunk_size=2")


@pytest.mark.slow
def test_multirun_compute_matched(repo_root: Path, tmp_path: Path) -> None:
    """A real Hydra multirun: 2 models x 2 budgets; the cheaper model gets 2x the samples, equal FLOPs."""
    run_cli(repo_root, tmp_path, "-m", "model=tiny_random,tiny_random_x2", "budget=low,high", *TINY_ARGS)
    summaries = {
        (s["model"], s["budget"]): s
        for s in (json.loads(p.read_text()) for p in tmp_path.glob("sample/arith/*/*/seed0/summary.json"))
    }
    assert {k: s["samples_per_problem"] for k, s in summaries.items()} == {
        ("tiny_random", "low"): 2,
        ("tiny_random", "high"): 20,
        ("tiny_random_x2", "low"): 1,
        ("tiny_random_x2", "high"): 10,
    }
    # The budgets count in samples of the SE model of the models' pair (conf/pair/tiny.yaml), found by model.
    assert {s["reference_model"] for s in summaries.values()} == {"tiny_random_x2"}
    for budget in ("low", "high"):
        wc, se = summaries["tiny_random", budget], summaries["tiny_random_x2", budget]
        assert wc["budget_flops_per_problem"] == se["budget_flops_per_problem"]
        assert wc["planned_flops"] == pytest.approx(se["planned_flops"])
        # Random weights rarely stop early, so the measured ledgers should agree too.
        assert wc["measured_flops"] == pytest.approx(se["measured_flops"], rel=0.25)
    # W&B offline runs were written, one per job.
    assert len(list(tmp_path.glob("wandb/offline-run-*"))) == 4
    # Launching the finished sweep again does no work.
    before = {k: s["finished_at"] for k, s in summaries.items()}
    proc = run_cli(
        repo_root, tmp_path, "-m", "model=tiny_random,tiny_random_x2", "budget=low,high", *TINY_ARGS
    )
    assert "Loading weights" not in proc.stderr
    after = {
        (s["model"], s["budget"]): s["finished_at"]
        for s in (json.loads(p.read_text()) for p in tmp_path.glob("sample/arith/*/*/seed0/summary.json"))
    }
    assert after == before


@pytest.mark.slow
def test_sigkill_and_relaunch(repo_root: Path, tmp_path: Path) -> None:
    """SIGKILL the real process mid-run; the relaunch finishes with every sample exactly once."""
    args = [
        "model=tiny_random",
        "engine=hf",
        "engine.hf.batch_size=1",  # one sample per generate call: chunks come back a few at a time
        "dataset.limit=8",
        "sampling.chunk_size=1",
        "sampling.max_new_tokens=24",
        "logger=none",
    ]
    env = {**os.environ, "COMPUTE_OPTIMAL_OUTPUTS": str(tmp_path / "killed")}
    proc = subprocess.Popen(
        [sys.executable, "run_sample.py", *args],
        cwd=repo_root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    chunks = tmp_path / "killed/sample/arith/tiny_random/low-compute/seed0/chunks"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(chunks.glob("chunk-*.parquet"))) < 2:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(chunks.glob("chunk-*.parquet")))
    assert 2 <= done_before < 8, "the kill should land mid-run"
    assert not (chunks.parent / "summary.json").exists()
    run_cli(repo_root, tmp_path / "killed", *args)
    run_cli(repo_root, tmp_path / "clean", *args)
    killed = pd.read_parquet(chunks.parent / "samples.parquet")
    clean = pd.read_parquet(tmp_path / "clean/sample/arith/tiny_random/low-compute/seed0/samples.parquet")
    assert not killed.duplicated(["problem_id", "sample_index"]).any()
    pd.testing.assert_frame_equal(killed, clean)


# --- bad input: a clear message, before any model is loaded, nothing written ------------------


def assert_refused(proc: subprocess.CompletedProcess, outputs: Path, *needles: str) -> None:
    assert proc.returncode != 0
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-2000:]
    assert "Loading weights" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (outputs / "sample").exists(), "a refused run must not leave a run folder"


def test_unknown_model_and_dataset(repo_root: Path, tmp_path: Path) -> None:
    proc = run_cli(repo_root, tmp_path, "model=gpt5", check=False)
    assert (
        proc.returncode != 0 and "Could not find 'model/gpt5'" in proc.stderr and "gemma2_9b" in proc.stderr
    )
    proc = run_cli(repo_root, tmp_path, "dataset=aime", check=False)
    assert proc.returncode != 0 and "Could not find 'dataset/aime'" in proc.stderr


def test_budget_below_one_sample(repo_root: Path, tmp_path: Path) -> None:
    proc = run_cli(
        repo_root,
        tmp_path,
        "model=gemma2_27b",
        "budget.reference_model=gemma2_9b",  # derived (the pair's SE model) unless set; its params follow
        "budget=low",
        check=False,
    )
    assert_refused(proc, tmp_path, "error:", "buys 0.333 samples of gemma2_27b")
    assert proc.returncode == 2


def test_malformed_dataset_row(repo_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"question": "1+1?", "answer": "2\\n#### 2"}\n{"question": "2+2?", "answer": "no marker"}\n'
    )
    proc = run_cli(repo_root, tmp_path, "dataset=gsm8k", f"dataset.loader.files.train={bad}", check=False)
    assert_refused(proc, tmp_path, "error:", "bad.jsonl", "line 2")
    assert proc.returncode == 2
