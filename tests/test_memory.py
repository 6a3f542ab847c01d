"""The memory plan of a training job: DeepSpeed's estimators for the states, our counts for activations and
logits, the site's limit enforced before any work (and, in a recipe, before submission), and the estimate
held against the measured peak of real training steps on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compute_optimal import memory, models
from compute_optimal.recipes import Stage, check_training_memory, compose_job, run_recipe
from compute_optimal.resolvers import model_config
from compute_optimal.specs import Model

REPO = Path(__file__).resolve().parents[1]
PAPER_W2S = ["experiment=paper_train", "regime=weak_to_strong", "site=example_cluster"]


def test_the_paper_recipe_fits_80_gb_cards_and_not_40() -> None:
    """Gemma2-27B as the weak-to-strong student, ZeRO-3 over 2 x 8 GPUs, micro-batch 8 x 1024, checkpointing:
    states from DeepSpeed's ZeRO-3 estimator, logits of the 256k vocabulary at 8k tokens in the 60-70 GiB peak
    an independent review estimated."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    cfg = compose_job("run_train.py", PAPER_W2S)
    plan = memory.plan_for_config(cfg)
    shape, job = plan.shape, plan.job
    assert shape.params == Model.from_config(model_config("gemma2_27b")).params_total
    assert (job.nodes, job.gpus_per_node, job.zero_stage, job.micro_batch, job.seq_len) == (2, 8, 3, 8, 1024)
    assert job.weights_dtype == "bfloat16" and job.checkpointing and job.eager_attention
    _, gpu, _ = estimate_zero3_model_states_mem_needs(
        shape.params, shape.largest_layer_params, 8, 2, cpu_offload=False, cpu_offload_params=False
    )
    assert plan.states == gpu
    assert shape.largest_layer_params == 256000 * 4608  # the embedding, gathered whole by ZeRO-3
    assert plan.logits == 8 * 1024 * 256000 * (2 + 4 + 4 + 2 + 2)  # soft-capped: one copy more
    assert plan.activations < plan.activations_other / 5  # checkpointing is what makes it fit
    assert 60 * memory.GIB < plan.peak < 72 * memory.GIB
    memory.check_fits(plan, 80)
    with pytest.raises(memory.DoesNotFitError, match=r"site\.gpu_mem_gb") as refused:
        memory.check_fits(plan, 40)
    assert "train.batch_size=4" in str(refused.value) and "peak" in str(refused.value)


def test_the_memory_command_prints_the_plan_and_refuses_what_does_not_fit() -> None:
    def run(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "compute_optimal.memory", *PAPER_W2S, *overrides],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    fits = run()
    assert fits.returncode == 0, fits.stderr[-2000:]
    assert "ZeRO-3" in fits.stdout and "of 80 GB the site gives" in fits.stdout
    refused = run("site.gpu_mem_gb=40")
    assert refused.returncode == 1
    assert "error: this training job needs about" in refused.stderr and "to fit:" in refused.stderr


def test_a_recipe_stops_before_submitting_a_training_job_that_does_not_fit(tmp_path: Path) -> None:
    stage = Stage("train", "run_train.py", ("experiment=paper_train", "regime=weak_to_strong"), multirun=True)
    check_training_memory(stage, ("site=example_cluster",))  # fits: nothing raised
    with pytest.raises(memory.DoesNotFitError, match="48 GB"):
        check_training_memory(stage, ("site=example_cluster", "site.gpu_mem_gb=48"))
    check_training_memory(stage, ("site.gpu_mem_gb=null",))  # the default site: not checked
    # Through the recipe runner: refused before the stage's command runs (it would exit with SystemExit).
    with pytest.raises(memory.DoesNotFitError, match="48 GB"):
        run_recipe(
            REPO / "sweeps" / "paper.yaml", ("site=example_cluster", "site.gpu_mem_gb=48"), only="train"
        )


def test_a_dry_run_of_a_recipe_shows_each_training_jobs_memory(capsys) -> None:
    stage = Stage(
        "train",
        "run_train.py",
        ("experiment=paper_train", "regime=weak_to_strong,self_improvement"),
        multirun=True,
    )
    check_training_memory(stage, ("site=example_cluster",), show=True)
    [line] = [line for line in capsys.readouterr().out.splitlines() if "memory plan" in line]
    assert "at most 67.7 GiB per GPU of 80 GB over 2 job(s)" in line and "regime=weak_to_strong" in line


def test_the_training_stage_stops_before_any_work(tmp_path: Path) -> None:
    from tests.conftest import run_entry_point

    proc = run_entry_point("run_train.py", tmp_path, *PAPER_W2S, "site.gpu_mem_gb=40", check=False)
    assert proc.returncode != 0
    assert "more than the 40 GB the site gives" in proc.stderr
    assert not (tmp_path / "train").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("model", "batch", "seq", "checkpointing"), [
    ("smollm2_135m", 4, 256, False), ("smollm2_135m", 4, 256, True), ("tiny_random", 8, 512, False),
])  # fmt: skip
def test_the_estimate_is_close_to_the_measured_peak_on_the_cpu(
    model: str, batch: int, seq: int, checkpointing: bool
) -> None:
    """Two fp32 AdamW steps of a real architecture in a fresh process (eager attention, one thread): the
    growth of its peak resident memory against the plan for one device without ZeRO (fp32 weights,
    gradients and two Adam moments, activations, logits). CPU memory, compared with a CPU estimate."""
    spec = Model.from_config(model_config(model))
    folder = models.resolve_checkpoint(spec)
    from transformers import AutoConfig

    shape = memory.shape_of(AutoConfig.from_pretrained(folder))
    job = memory.Job(1, 1, 0, False, False, batch, seq, "float32", checkpointing, eager_attention=True)
    plan = memory.plan(shape, job)
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "measure_peak.py"), folder, str(batch), str(seq), str(int(checkpointing))],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])["delta"]
    assert 0.85 < plan.peak / measured < 1.15, (plan.peak / memory.GIB, measured / memory.GIB)
