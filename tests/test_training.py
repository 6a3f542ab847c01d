"""The training stage on real tiny models: loss masking, learning, export, resume, DeepSpeed, regimes."""

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
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from compute_optimal import models
from compute_optimal.data.arith import generate_split
from compute_optimal.prompts import get_template
from compute_optimal.training.module import lr_lambda
from compute_optimal.training.regimes import Regime, RegimeError, Sampler
from compute_optimal.training.sft_data import (
    IGNORE_INDEX,
    LengthBucketBatches,
    SFTExample,
    collate,
    select_examples,
    tokenize,
)
from tests.conftest import run_entry_point

from .fake_runs import write_sampling_run
from .test_sampling import TINY

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PROBLEMS = generate_split("train", num_train=200, num_test=100, seed=1234)[
    :24
]  # conf/dataset/arith.yaml's data


@pytest.fixture(scope="module")
def tiny_checkpoint() -> str:
    return models.resolve_checkpoint(TINY)


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoint)


# --- SFT data ---------------------------------------------------------------------------------


def test_prompt_tokens_carry_no_loss(tokenizer) -> None:
    ex = SFTExample("p", "Question: What is 2 + 3?\nAnswer:", " 2 + 3 = 5. The answer is 5.")
    [item] = tokenize([ex], tokenizer, max_length=256)
    prompt_ids = tokenizer(ex.prompt).input_ids
    target_ids = [*tokenizer(ex.completion, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    assert item["input_ids"] == prompt_ids + target_ids
    assert item["labels"] == [IGNORE_INDEX] * len(prompt_ids) + target_ids
    # Truncation cuts the prompt from the left, never the solution.
    [short] = tokenize([ex], tokenizer, max_length=len(target_ids) + 3)
    assert (
        short["labels"][-len(target_ids) :] == target_ids and len(short["input_ids"]) == len(target_ids) + 3
    )


def test_select_examples_keeps_correct_dedups_and_caps() -> None:
    frame = pd.DataFrame(
        {
            "problem_id": ["a", "a", "a", "a", "b", "b", "c"],
            "sample_index": [0, 1, 2, 3, 0, 1, 0],
            "completion": ["x = 1", "x  =  1", "X = 1", "y = 1", "z", "w", "v"],
            "correct": [True, True, True, True, False, True, False],
        }
    )
    questions = {"a": "qa", "b": "qb", "c": "qc"}
    examples, stats = select_examples(frame, questions, lambda q: f"Q: {q}", dedup=True)
    assert [e.completion for e in examples] == [
        " x = 1",
        " y = 1",
        " w",
    ]  # whitespace/case duplicates dropped
    assert (stats.correct_samples, stats.after_dedup, stats.after_cap, stats.problems) == (5, 3, 3, 2)
    assert examples[0].prompt == "Q: qa"
    capped, stats = select_examples(frame, questions, lambda q: q, dedup=False, max_per_problem=2, seed=1)
    assert sum(e.problem_id == "a" for e in capped) == 2 and stats.after_dedup == 5
    with pytest.raises(KeyError, match="unknown problem"):
        select_examples(frame, {"a": "qa"}, str)


def test_length_buckets_cover_every_example_once_per_epoch_and_shard_over_ranks() -> None:
    lengths = [5, 50, 6, 49, 7, 48, 8, 47, 45, 46]
    batches = list(LengthBucketBatches(lengths, batch_size=2, seed=0, bucket_factor=5))
    assert sorted(i for b in batches for i in b) == list(range(10))
    for b in batches:  # similar lengths end up together
        assert max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 3
    ranks = [
        list(LengthBucketBatches(lengths, 2, seed=0, bucket_factor=5, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 2
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}


def test_collate_pads_with_ignored_labels() -> None:
    batch = collate(
        [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}], pad_id=0
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_lr_schedule() -> None:
    f = dict(warmup_steps=2, max_steps=10, schedule="cosine", min_ratio=0.1)
    assert [round(lr_lambda(s, **f), 3) for s in (0, 1, 2, 10)] == [0.5, 1.0, 1.0, 0.1]
    assert lr_lambda(6, **{**f, "schedule": "linear"}) == pytest.approx(1 - 0.9 * 0.5)


# --- regimes ----------------------------------------------------------------------------------

WC, SE, THIRD = Sampler("gemma2_9b", 9e9), Sampler("gemma2_27b", 27e9), Sampler("gemma_7b", 7e9)


def test_regimes_that_fit() -> None:
    assert Regime("knowledge_distillation", THIRD, WC, SE).relation("wc") == "WC data"
    assert Regime("self_improvement", WC, WC, SE).relation("wc") == "own data"
    assert Regime("weak_to_strong", SE, WC, SE).relation("se") == "own data"
    assert Regime("weak_to_strong", SE, WC, SE).sampler_for("wc") == WC


@pytest.mark.parametrize(
    ("regime", "student", "wc", "se", "message"),
    [
        ("knowledge_distillation", WC, WC, SE, "student other than the samplers"),
        ("self_improvement", SE, WC, SE, "student must be gemma2_9b"),
        ("weak_to_strong", WC, WC, SE, "student must be gemma2_27b"),
        ("weak_to_strong", Sampler("gemma2_27b", 2e9), WC, Sampler("gemma2_27b", 2e9), "must be cheaper"),
        ("weak_to_strong", Sampler("big", 27e9), WC, Sampler("big", 27e9), None),
        ("distill", THIRD, WC, SE, "unknown regime"),
    ],
)
def test_regime_misfits(regime, student, wc, se, message) -> None:
    if message is None:
        Regime(regime, student, wc, se)
        return
    with pytest.raises(RegimeError, match=message):
        Regime(regime, student, wc, se)


def test_weak_to_strong_student_must_outgrow_the_data_sampler() -> None:
    with pytest.raises(RegimeError, match="stronger than the data's sampler"):
        Regime("weak_to_strong", Sampler("se", 0.4e9), Sampler("wc", 0.5e9), Sampler("se", 1e9))


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("trainer", sorted(p.stem for p in (CONF / "trainer").glob("*.yaml")))
@pytest.mark.parametrize("regime", ["knowledge_distillation", "self_improvement", "weak_to_strong"])
def test_every_trainer_and_regime_config_composes(trainer: str, regime: str) -> None:
    cfg = compose_train(f"trainer={trainer}", f"regime={regime}", "pair=gemma2")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    student = {
        "knowledge_distillation": "gemma_7b",
        "self_improvement": "gemma2_9b",
        "weak_to_strong": "gemma2_27b",
    }
    assert resolved["regime"]["student"] == student[regime]
    assert resolved["run_dir"].endswith(f"/train/arith/{regime}/{student[regime]}/wc-high-compute/seed0")
    assert resolved["trainer"]["strategy"] in ("auto", "ddp", "deepspeed")
    # GPU configs pick the accelerator themselves (CPU fallback without CUDA, see effective_trainer).
    assert resolved["trainer"]["accelerator"] == ("cpu" if trainer == "cpu" else "auto")
    assert resolved["resources"]["nodes"] >= 1 and resolved["student"]["name"] == student[regime]
    if trainer.startswith("deepspeed"):
        assert resolved["trainer"]["strategy_options"]["stage"] in (2, 3)


# --- real training ----------------------------------------------------------------------------


def run_cli(outputs: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_entry_point("run_train.py", outputs, *args, check=check)


@pytest.fixture()
def tiny_data(tmp_path: Path) -> Path:
    """Finished sampling runs of the tiny pair (WC, SE) with known correct samples."""
    for model in ("tiny_random", "tiny_random_x2"):
        write_sampling_run(tmp_path, PROBLEMS, dataset="arith", model=model, samples_per_problem=4)
    return tmp_path


@pytest.mark.slow
def test_loss_falls_on_a_fixed_batch_and_the_export_reloads(
    tmp_path: Path, tiny_checkpoint: str, tokenizer
) -> None:
    """4 examples = one fixed batch: 100 AdamW steps take the loss from ~10.8 (random weights, 49k
    vocabulary) below 0.5. The exported checkpoint generates exactly what the in-memory model does."""
    import pytorch_lightning as pl

    from compute_optimal.training.module import SFTDataModule, SFTModule
    from compute_optimal.training.stage import export_checkpoint

    template = get_template("arith", 0)
    examples = [SFTExample(p.id, template.render(p.question), " " + p.solution) for p in PROBLEMS[:4]]
    items = tokenize(examples, tokenizer, max_length=256)
    pl.seed_everything(0, verbose=False)
    module = SFTModule(tiny_checkpoint, lr=3e-3, warmup_steps=0, max_steps=100, schedule="constant")
    data = SFTDataModule(items, batch_size=4, pad_id=tokenizer.eos_token_id)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=100,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(module, datamodule=data)
    assert losses[0] > 9.0
    assert losses[-1] < 0.5, losses[-5:]
    export_checkpoint(module, tokenizer, tmp_path / "checkpoint")
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint").eval()
    module.model.eval()
    ids = tokenizer(examples[0].prompt, return_tensors="pt").input_ids
    kwargs = dict(do_sample=False, max_new_tokens=30, pad_token_id=tokenizer.eos_token_id)
    with torch.inference_mode():
        a, b = module.model.generate(ids, **kwargs), reloaded.generate(ids, **kwargs)
    assert torch.equal(a, b)
    # It learned its training solution.
    assert (
        tokenizer.decode(a[0, ids.shape[1] :], skip_special_tokens=True)
        .strip()
        .startswith(PROBLEMS[0].solution[:20])
    )


def test_training_stage_through_the_entry_point(tiny_data: Path) -> None:
    args = (
        "pair=tiny",
        "regime=self_improvement",
        "data.source=se",
        "logger=none",
        "progress=false",
        "train.max_steps=6",
        "train.batch_size=4",
        "train.max_per_problem=1",
    )
    proc = run_cli(tiny_data, *args)
    run_dir = tiny_data / "train/arith/self_improvement/tiny_random/se-high-compute/seed0"
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert "self_improvement: tiny_random on SE data" in proc.stdout
    assert summary["steps"] == 6 and [s for s, _ in summary["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    assert summary["data_relation"] == "SE data" and summary["sampler"] == "tiny_random_x2"
    assert summary["num_examples"] == summary["num_problems"] <= 24  # max_per_problem=1
    assert 0 < summary["real_token_share"] <= 1
    assert summary["trained_tokens"] > 0 and summary["training_length"].startswith("6 optimizer steps")
    ckpt = Path(summary["checkpoint"])
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in ckpt.iterdir()}
    assert not (run_dir / "lightning").exists(), "the resume state is removed once the run is finished"
    again = run_cli(tiny_data, *args)  # the finished run is skipped
    assert "Trainer.fit" not in again.stderr


@pytest.mark.slow
def test_kill_during_training_and_resume(tiny_data: Path) -> None:
    args = [
        "pair=tiny",
        "regime=weak_to_strong",
        "data.source=wc",
        "logger=none",
        "progress=false",
        "train.max_steps=30",
        "train.batch_size=8",
        "trainer.checkpoint_every_n_steps=2",
    ]
    env = {**os.environ, "COMPUTE_OPTIMAL_OUTPUTS": str(tiny_data)}
    proc = subprocess.Popen(
        [sys.executable, "run_train.py", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = tiny_data / "train/arith/weak_to_strong/tiny_random_x2/wc-high-compute/seed0"
    last = run_dir / "lightning/last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not (last.exists() and _step(last) >= 4):
        time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _step(last)
    assert 4 <= killed_at < 30 and not (run_dir / "train_summary.json").exists()
    run_cli(tiny_data, *args)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["steps"] == 30
    assert summary["resumed_from_step"] >= killed_at
    assert [s for s, _ in summary["loss_curve"]] == list(range(1, 31))  # steps before the kill too


def _step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # being written
        return 0


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "devices"), [(2, 1), (3, 2)])
def test_deepspeed_zero_on_cpu(tiny_data: Path, stage: int, devices: int) -> None:
    """Real DeepSpeed ZeRO steps on CPU over gloo (ZeRO-3 with 2 processes, parameters partitioned).

    The trainer configs are the GPU ones, unchanged but for the process count: without CUDA they fall
    back to the CPU in fp32 (the same command a cluster runs trains here)."""
    run_cli(
        tiny_data,
        "pair=tiny",
        "regime=knowledge_distillation",
        "data.source=wc",
        "logger=none",
        "progress=false",
        "train.max_steps=3",
        f"trainer=deepspeed_zero{stage}",
        f"trainer.devices={devices}",
    )
    run_dir = tiny_data / "train/arith/knowledge_distillation/tiny_random_student/wc-high-compute/seed0"
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["steps"] == 3
    trainer = summary["trainer"]
    assert (trainer["accelerator"], trainer["precision"], trainer["world_size"]) == (
        "cpu",
        "32-true",
        devices,
    )
    assert trainer["strategy_options"]["stage"] == stage
    assert "no CUDA device" in trainer["fallback"] and "bf16-mixed -> 32-true" in trainer["fallback"]
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(summary["checkpoint"])
    base = AutoModelForCausalLM.from_pretrained(
        models.resolve_checkpoint(
            OmegaConf.to_container(OmegaConf.load(CONF / "model/tiny_random_student.yaml"))
        )
    )
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in base.parameters())
    changed = [
        n
        for (n, p), q in zip(student.named_parameters(), base.parameters(), strict=True)
        if not torch.equal(p.float(), q.float())
    ]
    assert changed, "3 ZeRO steps must have changed the weights"


# --- bad input --------------------------------------------------------------------------------


def test_missing_sampling_run_names_it_and_the_command(tmp_path: Path) -> None:
    proc = run_cli(
        tmp_path, "pair=tiny", "regime=self_improvement", "data.source=se", "budget=low", check=False
    )
    assert proc.returncode == 2
    assert "tiny_random_x2's sampling run" in proc.stderr and "missing" in proc.stderr
    assert "python run_sample.py model=tiny_random_x2 dataset=arith budget=low" in proc.stderr
    assert not (tmp_path / "train").exists()


def test_embedded_pair_has_no_distillation_student(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "regime=knowledge_distillation", "trainer=deepspeed_zero2", check=False)
    assert proc.returncode == 2 and "pair.distill_student" in proc.stderr
    assert "pair=gemma2" in proc.stderr and "pair=tiny" in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_trainer_configs_fall_back_to_the_cpu() -> None:
    from compute_optimal.training.stage import effective_trainer

    gpu = OmegaConf.to_container(compose_train("trainer=deepspeed_zero3").trainer, resolve=True)
    on_gpu = effective_trainer(gpu, cuda=True)
    assert on_gpu == gpu  # as written
    on_cpu = effective_trainer(gpu, cuda=False)
    assert (on_cpu["accelerator"], on_cpu["precision"], on_cpu["devices"]) == ("cpu", "32-true", 1)
    assert on_cpu["strategy"] == "deepspeed" and on_cpu["strategy_options"] == {"stage": 3}
    cpu = OmegaConf.to_container(compose_train("trainer=cpu").trainer, resolve=True)
    assert effective_trainer(cpu, cuda=False) == cpu  # the CPU config is never rewritten


def test_misfit_student_is_refused(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "pair=tiny", "regime=weak_to_strong", "regime.student=tiny_random", check=False)
    assert proc.returncode == 2 and "student must be tiny_random_x2" in proc.stderr
