"""Every config group combination composes, resolves and yields the intended sample counts."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from compute_optimal.budget import BudgetError
from compute_optimal.resolvers import pair_se

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_sample(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="sample", overrides=list(overrides))


COMBOS = list(itertools.product(options("model"), options("dataset"), options("budget"), options("engine")))


def pairwise_rows(combos: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """A subset of `combos` in which every pair of values of any two groups appears together (greedy
    covering array): what a config of one group can do to another's shows up in these rows."""

    def pairs(row: tuple[str, ...]) -> set[tuple]:
        return {(i, row[i], j, row[j]) for i, j in itertools.combinations(range(len(row)), 2)}

    uncovered = set().union(*(pairs(r) for r in combos))
    rows: list[tuple[str, ...]] = []
    while uncovered:
        best = max(combos, key=lambda r: len(pairs(r) & uncovered))  # first best: deterministic
        rows.append(best)
        uncovered -= pairs(best)
    return rows


# The fast run composes the pairwise rows; `make test` adds the rest of the product (every row once).
PAIRWISE = pairwise_rows(COMBOS)
REST = [c for c in COMBOS if c not in set(PAIRWISE)]


def pairs_of_models() -> dict[str, dict[str, str]]:
    """Each model a pair config names (WC, SE or distillation student) -> {pair name: that pair's SE model},
    read from the YAML files themselves (not through the resolver under test)."""
    found: dict[str, dict[str, str]] = {}
    for name in options("pair"):
        pair = OmegaConf.load(CONF / "pair" / f"{name}.yaml")
        for member in (pair.wc, pair.se, pair.get("distill_student")):
            if member:
                found.setdefault(str(member), {})[name] = str(pair.se)
    return found


PAIRS_OF = pairs_of_models()


def test_the_pairwise_rows_cover_every_pair_and_with_the_rest_the_whole_product() -> None:
    groups = ("model", "dataset", "budget", "engine")
    for (i, gi), (j, gj) in itertools.combinations(enumerate(groups), 2):
        seen = {(r[i], r[j]) for r in PAIRWISE}
        assert seen == set(itertools.product(options(gi), options(gj))), (gi, gj)
    assert sorted(PAIRWISE + REST) == sorted(COMBOS)
    assert len(PAIRWISE) < len(COMBOS) / 5  # the point of the split


@pytest.mark.parametrize(("model", "dataset", "budget", "engine"), PAIRWISE)
def test_every_pair_of_choices_composes(model: str, dataset: str, budget: str, engine: str) -> None:
    check_combination(model, dataset, budget, engine)


@pytest.mark.slow  # ~1,100 composes at ~0.2 s each
@pytest.mark.parametrize(("model", "dataset", "budget", "engine"), REST)
def test_every_combination_composes(model: str, dataset: str, budget: str, engine: str) -> None:
    check_combination(model, dataset, budget, engine)


def check_combination(model: str, dataset: str, budget: str, engine: str) -> None:
    ses = PAIRS_OF.get(model, {})
    # A model of one pair (or of pairs with one SE model) needs no pair=; any other names the pair its
    # budget counts in (a model in no pair: the tiny pair).
    pair = next(iter(ses), "tiny")
    overrides = [] if len(set(ses.values())) == 1 else [f"pair={pair}"]
    reference = ses.get(pair) or str(OmegaConf.load(CONF / "pair" / f"{pair}.yaml").se)
    cfg = compose_sample(
        f"model={model}", f"dataset={dataset}", f"budget={budget}", f"engine={engine}", *overrides
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["run_dir"].endswith(
        f"/sample/{dataset}/{model}/{resolved['budget']['name']}-compute/seed0"
    )
    b = instantiate(cfg.budget)
    ref = OmegaConf.load(CONF / "model" / f"{reference}.yaml")
    assert b.reference_model == reference  # the SE model of the model's pair
    assert (b.reference_params, b.reference_price) == (ref.params, ref.price_per_mtok)
    if cfg.model.params is None:  # an API model: no FLOPs to match; dollars are (budget.mode=price)
        with pytest.raises(BudgetError, match=r"budget\.mode=price"):
            b.samples_for(cfg.model.name, cfg.model.params)
        b = dataclasses.replace(b, mode="price")
    try:
        samples = b.samples_for(cfg.model.name, cfg.model.params, cfg.model.price_per_mtok)
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


def test_budget_reference_is_the_pairs_se_model() -> None:
    """No model config names its reference (nor a regime its student): each member of a pair budgets
    against the pair's SE model, which is its own reference and at least as large as every member."""
    for name in options("model"):
        model = OmegaConf.load(CONF / "model" / f"{name}.yaml")
        assert model.name == name and "reference" not in model, name
    for name in options("regime"):
        regime = OmegaConf.load(CONF / "regime" / f"{name}.yaml")
        assert regime.name == name and "student" not in regime, name
    for name in options("pair"):
        pair = OmegaConf.load(CONF / "pair" / f"{name}.yaml")
        se = OmegaConf.load(CONF / "model" / f"{pair.se}.yaml")
        assert pair_se(pair.se) == pair.se, f"{pair.se} is a reference, so it must be its own"
        for member in (pair.wc, pair.se, pair.get("distill_student")):
            if not member:
                continue
            assert pair_se(member, name) == pair.se, (name, member)  # pair=<name>
            assert pair_se(member) == pair.se, (name, member)  # found among conf/pair/ without pair=
            cost = OmegaConf.load(CONF / "model" / f"{member}.yaml")
            if se.params is None:  # an API pair: sizes unpublished, the SE model is the dearer one
                assert cost.price_per_mtok <= se.price_per_mtok, (name, member)
            else:
                assert cost.params <= se.params, (name, member)


def test_a_model_in_no_pair_or_in_pairs_with_different_se_models_must_name_its_pair(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "pair").mkdir(parents=True)
    (conf / "pair" / "a.yaml").write_text("name: a\nwc: small\nse: big\ndistill_student: null\n")
    (conf / "pair" / "b.yaml").write_text("name: b\nwc: small\nse: bigger\ndistill_student: null\n")
    with pytest.raises(BudgetError, match=r"in pairs with different SE models.*pair=a"):
        pair_se("small", conf=conf)
    with pytest.raises(BudgetError, match=r"in no pair.*pair=a"):
        pair_se("lonely", conf=conf)
    assert (pair_se("small", "b", conf=conf), pair_se("big", conf=conf)) == ("bigger", "big")
    # The real configs: a model of conf/model/ in no pair cannot sample without pair=; with it, it can.
    lonely = [m for m in options("model") if m not in PAIRS_OF]
    assert lonely, "this check needs a model config in no pair"
    with pytest.raises(BudgetError, match=r"in no pair.*pair="):
        pair_se(lonely[0])
    with pytest.raises(InterpolationResolutionError, match=r"BudgetError.*pair="):
        OmegaConf.to_container(compose_sample(f"model={lonely[0]}").budget, resolve=True)
    cfg = compose_sample(f"model={lonely[0]}", "pair=tiny")
    assert instantiate(cfg.budget).reference_model == OmegaConf.load(CONF / "pair" / "tiny.yaml").se


def test_number_matched_and_custom_budgets() -> None:
    cfg = compose_sample("model=gemma2_9b", "budget=high", "budget.mode=number")
    assert instantiate(cfg.budget).samples_for("gemma2_9b", cfg.model.params) == 10
    assert cfg.run_dir.endswith("/gemma2_9b/high-number/seed0")
    cfg = compose_sample("model=gemma2_9b", "budget=custom", "budget.reference_samples=4")
    assert cfg.budget.name == "custom-s4"
    assert instantiate(cfg.budget).samples_for("gemma2_9b", cfg.model.params) == 12


def cfg_job(repo_root: Path, *args: str) -> DictConfig:
    """What `python run_sample.py --cfg job <args>` prints, as a config."""
    out = subprocess.run(
        [sys.executable, "run_sample.py", "--cfg", "job", *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return OmegaConf.create(out)


def test_cfg_job_prints_the_composed_config(repo_root: Path) -> None:
    cfg = cfg_job(repo_root, "model=gemma2_27b", "dataset=gsm8k", "budget=high")
    assert cfg.model.hf_id == "google/gemma-2-27b"
    assert cfg.model.tensor_parallel_size == 2
    assert cfg.budget.reference_samples == 10
    assert cfg.dataset.prompt.num_shots == 8


def test_composed_budget_derives_its_reference_without_a_pair(repo_root: Path) -> None:
    """`run_sample.py model=gemma2_9b budget=high`: no pair named; the budget counts in Gemma2-27B samples."""
    cfg = cfg_job(repo_root, "--resolve", "model=gemma2_9b", "budget=high")
    assert cfg.get("pair") is None  # no pair composed: found in conf/pair/
    assert (cfg.budget.reference_model, cfg.budget.reference_params) == ("gemma2_27b", 27e9)
    gemma2_27b = OmegaConf.load(CONF / "model" / "gemma2_27b.yaml")
    assert cfg.budget.reference_price == gemma2_27b.price_per_mtok
    assert instantiate(cfg.budget).samples_for("gemma2_9b", cfg.model.params) == 30


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
        "eval", "task=evaluate", "pair=gemma2", "task.student.regime=self_improvement", cluster
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
    # The student is the pair's distillation student (the regime config names none).
    assert "student" not in resolved["regime"] and resolved["pair"]["distill_student"] == "gemma_7b"
    assert resolved["student"]["name"] == "gemma_7b" and resolved["student"]["hf_id"] == "google/gemma-7b"
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


def test_a_typo_in_a_model_config_stops_before_any_work(repo_root: Path, tmp_path: Path) -> None:
    """specs.Model refuses unknown fields: `parms: 9e9` must not pass as a model without a size."""
    from compute_optimal.specs import Model, SpecError

    with pytest.raises(SpecError, match=r"unknown field\(s\) \['parms'\]"):
        Model.from_config({"name": "m", "params": 1e9, "parms": 9e9})
    with pytest.raises(SpecError, match="origin"):
        Model.from_config({"name": "m", "params": 1e9, "origin": "ftp"})
    proc = subprocess.run(
        [sys.executable, "run_sample.py", "model=tiny_random", "+model.parms=3", "logger=none",
         f"paths.outputs={tmp_path}"],
        cwd=repo_root, capture_output=True, text=True,
    )  # fmt: skip
    assert (
        proc.returncode == 2
        and "unknown field(s) ['parms']" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    assert not (tmp_path / "sample").exists()
