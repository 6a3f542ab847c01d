"""Every config group combination composes, resolves and yields the intended sample counts."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from compute_optimal.budget import BudgetError

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_sample(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="sample", overrides=list(overrides))


COMBOS = list(itertools.product(options("model"), options("dataset"), options("budget"), options("engine")))


@pytest.mark.parametrize(("model", "dataset", "budget", "engine"), COMBOS)
def test_every_combination_composes(model: str, dataset: str, budget: str, engine: str) -> None:
    cfg = compose_sample(f"model={model}", f"dataset={dataset}", f"budget={budget}", f"engine={engine}")
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["run_dir"].endswith(
        f"/sample/{dataset}/{model}/{resolved['budget']['name']}-compute/seed0"
    )
    b = instantiate(cfg.budget)
    assert b.reference_model == cfg.model.reference.name
    try:
        samples = b.samples_for(cfg.model.name, cfg.model.params)
    except BudgetError:
        pytest.fail(f"{model} cannot sample at budget {budget}")
    assert samples >= b.reference_samples  # every model is at most as expensive as its reference


def test_paper_and_embedded_sample_counts() -> None:
    expected = {
        ("gemma2_9b", "low"): 3,
        ("gemma2_9b", "high"): 30,
        ("gemma2_27b", "low"): 1,
        ("gemma2_27b", "high"): 10,
        ("smollm2_135m", "low"): 2,
        ("smollm2_135m", "high"): 20,
        ("gemma3_270m", "low"): 1,
        ("gemma3_270m", "high"): 10,
    }
    for (model, budget), samples in expected.items():
        cfg = compose_sample(f"model={model}", f"budget={budget}")
        assert instantiate(cfg.budget).samples_for(model, cfg.model.params) == samples, (model, budget)


def test_reference_blocks_match_the_referenced_model() -> None:
    """Each model names its pair's expensive model; the copied params/price must be that model's."""
    for name in options("model"):
        model = OmegaConf.load(CONF / "model" / f"{name}.yaml")
        ref = OmegaConf.load(CONF / "model" / f"{model.reference.name}.yaml")
        assert model.name == name
        assert model.reference.params == ref.params, name
        assert model.reference.price_per_mtok == ref.price_per_mtok, name
        assert ref.reference.name == ref.name, f"{ref.name} is a reference, so it must be its own"
        assert model.params <= ref.params, name


def test_number_matched_and_custom_budgets() -> None:
    cfg = compose_sample("model=gemma2_9b", "budget=high", "budget.mode=number")
    assert instantiate(cfg.budget).samples_for("gemma2_9b", cfg.model.params) == 10
    assert cfg.run_dir.endswith("/gemma2_9b/high-number/seed0")
    cfg = compose_sample("model=gemma2_9b", "budget=custom", "budget.reference_samples=4")
    assert cfg.budget.name == "custom-s4"
    assert instantiate(cfg.budget).samples_for("gemma2_9b", cfg.model.params) == 12


def test_cfg_job_prints_the_composed_config(repo_root: Path) -> None:
    out = subprocess.run(
        [sys.executable, "run_sample.py", "--cfg", "job", "model=gemma2_27b", "dataset=gsm8k", "budget=high"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cfg = OmegaConf.create(out)
    assert cfg.model.hf_id == "google/gemma-2-27b"
    assert cfg.model.tensor_parallel_size == 2
    assert cfg.budget.reference_samples == 10
    assert cfg.dataset.prompt.num_shots == 8


# --- what one SLURM job asks for (compute_optimal.resolvers) --------------------------------------


def compose_config(config: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config, overrides=list(overrides))


def test_job_resources_come_from_the_model_with_site_overrides() -> None:
    cluster = "site=example_cluster"  # no resource overrides: what the models ask for
    sample = compose_config("sample", "model=gemma2_27b", cluster).resources
    assert (sample.nodes, sample.gpus_per_node, sample.tasks_per_node) == (1, 2, 1)  # tensor parallel 2
    assert compose_config("sample", "model=gemma2_9b", cluster).resources.gpus_per_node == 1
    # Training: nodes x GPUs of the student, one process per GPU, CPUs split over the processes.
    zero3 = "trainer=deepspeed_zero3"
    train = compose_config("train", "pair=gemma2", "regime=weak_to_strong", zero3, cluster).resources
    assert (train.nodes, train.gpus_per_node, train.tasks_per_node, train.cpus_per_task) == (2, 8, 8, 8)
    assert (
        compose_config(
            "train", "pair=gemma2", "regime=knowledge_distillation", zero3, cluster
        ).resources.nodes
        == 1
    )
    # Evaluation: the model the task runs; for a checkpoint, the student it belongs to.
    base = compose_config("eval", "task=evaluate", "model=gemma2_27b", cluster).resources
    student = compose_config(
        "eval", "task=evaluate", "pair=gemma2", "task.checkpoint.regime=self_improvement", cluster
    ).resources
    assert (base.gpus_per_node, student.gpus_per_node) == (2, 1)
    # The site (here the command line) replaces any key for every job; the test site never asks for GPUs.
    assert (
        compose_config(
            "sample", "model=gemma2_27b", cluster, "+site.resources.timeout_min=30"
        ).resources.timeout_min
        == 30
    )
    assert compose_config("train", "pair=gemma2", "regime=weak_to_strong", zero3).resources.gpus_per_node == 0


@pytest.mark.parametrize(
    ("trainer", "request_"),
    [  # (nodes, GPUs per node, tasks per node) for Gemma2-27B's resources.train (2 nodes x 8 GPUs)
        ("cpu", (1, 0, 1)),
        ("gpu", (1, 1, 1)),
        ("ddp", (2, 8, 8)),
        ("deepspeed_zero2", (2, 8, 8)),
        ("deepspeed_zero3", (2, 8, 8)),
        ("deepspeed_zero3_offload", (2, 8, 8)),
    ],
)
def test_training_request_follows_the_trainer(trainer: str, request_: tuple[int, int, int]) -> None:
    """A single-device trainer gets one task on one GPU (Lightning refuses 8 SLURM tasks for devices=1);
    a multi-process one gets one task per GPU, and its devices come from SLURM's tasks per node."""
    from compute_optimal.training.stage import effective_trainer

    cfg = compose_config(
        "train", "pair=gemma2", "regime=weak_to_strong", f"trainer={trainer}", "site=example_cluster"
    )
    r = cfg.resources
    assert (r.nodes, r.gpus_per_node, r.tasks_per_node) == request_
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    on_gpus = effective_trainer(settings, cuda_devices=r.gpus_per_node or 1, slurm_tasks=r.tasks_per_node)
    assert on_gpus["devices"] == r.tasks_per_node  # what Lightning checks against --ntasks-per-node


def test_bad_resource_requests_are_refused() -> None:
    from compute_optimal.resolvers import job_resources

    with pytest.raises(ValueError, match="unknown resource keys"):
        job_resources("sample", {"resources": {"sample": {"gpu": 1}}}, None)
    with pytest.raises(ValueError, match="one node"):
        job_resources("sample", {"resources": {"sample": {"nodes": 2}}}, None)
    with pytest.raises(ValueError, match="unknown stage"):
        job_resources("serve", None, None)


def test_launchers_read_the_jobs_resources() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="sample",
            overrides=["model=gemma2_27b", "site=example_cluster", "hydra/launcher=submitit_slurm"],
            return_hydra_config=True,
        )
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["_target_"].endswith("GroupedSlurmLauncher")
    assert (params["gpus_per_node"], params["timeout_min"], params["partition"]) == (2, 480, "gpu")


def test_cluster_distillation_command_trains_gemma_7b_on_8_gpus() -> None:
    """The issue's cluster command, with the paper's experiment (which picks the Gemma2 pair)."""
    cfg = compose_config(
        "train",
        "experiment=paper_train",
        "regime=knowledge_distillation",
        "dataset=math",
        "budget=high",
        "trainer=deepspeed_zero2",
        "site=example_cluster",
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["regime"]["student"] == "gemma_7b" and resolved["student"]["hf_id"] == "google/gemma-7b"
    assert resolved["trainer"]["strategy"] == "deepspeed" and resolved["trainer"]["strategy_options"] == {
        "stage": 2
    }
    assert (resolved["trainer"]["accelerator"], resolved["trainer"]["precision"]) == ("auto", "bf16-mixed")
    assert resolved["resources"] == {
        "nodes": 1,
        "gpus_per_node": 8,
        "tasks_per_node": 8,
        "cpus_per_task": 8,
        "mem_gb": 512,
        "timeout_min": 1440,
    }
    assert resolved["run_dir"].endswith("/train/math/knowledge_distillation/gemma_7b/wc-high-compute/seed0")
