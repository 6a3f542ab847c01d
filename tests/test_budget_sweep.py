"""The budget sweep (run_eval.py task=budget_sweep): runs with known samples at several budgets give exact
coverage, diversity, FPR and FLOPs; the crossover where SE overtakes and where it never does; missing runs
carry their commands; no runs at all is an error; the config and the recipe compose."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from compute_optimal import metrics, runs
from compute_optimal.budget import Budget
from compute_optimal.recipes import compose_job, expand_jobs, load_recipe, merge_overrides
from compute_optimal.reporting.budget_sweep import BudgetSweep, Crossover, add_fpr, budget_name
from compute_optimal.resolvers import model_config
from compute_optimal.sampling import SamplingConfig, plan_sampling
from compute_optimal.specs import Dataset, Model
from compute_optimal.stages import budget_sweep
from tests.fake_runs import arith_split, write_graded_run

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
WC, SE = "tiny_random", "tiny_random_x2"  # pair=tiny: SE has 2x the parameters, so WC gets 2n samples
MODELS = {m: Model.from_config(model_config(m, CONF)) for m in (WC, SE)}
ARITH = arith_split("train")
PROBLEMS = [
    next(p for p in ARITH if p.level == 1),
    [p for p in ARITH if p.level == 1][1],
    next(p for p in ARITH if p.level == 2),
    next(p for p in ARITH if p.level == 3),
]
TOKENS = 20  # generated tokens per fake sample
W = 256  # conf/budget/*.yaml tokens_per_solution


# --- runs with known samples -------------------------------------------------------------------------


def completion(problem, text: str) -> str:
    """REF: the reference solution (passes the exact process check); any other letter: the right answer
    with no computation (an answer-correct false positive), distinct per letter."""
    if text == "REF":
        return problem.solution
    return f"Solution {text}. The answer is {problem.answer}."


def padded(samples: int, *correct: list[str | None]) -> list[list[str | None]]:
    """Per problem, its correct samples first, then wrong ones (None) up to ``samples``."""
    return [list(c) + [None] * (samples - len(c)) for c in correct]


def write_run(root: Path, model: str, n: int, completions: list[list[str | None]]) -> Path:
    """A finished budget custom-s<n> run in the sampling stage's format (its plan, dtypes, summarize())."""
    budget = Budget(budget_name(n), "compute", SE, n, MODELS[SE].params, tokens_per_solution=W)
    dataset = Dataset.from_config(
        {"name": "arith", "answer_format": "arith", "split": "train", "limit": None,
         "prompt": {"template": "arith", "num_shots": 2}}
    )  # fmt: skip
    plan = plan_sampling(
        run=runs.SampleRun.of(root, "arith", model, budget_name(n), "compute", 0),
        model=MODELS[model],
        budget=budget,
        dataset=dataset,
        problems=PROBLEMS,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=8, chunk_size=4),
        seed=0,
        engine_backend="hf",
    )
    return write_graded_run(plan, PROBLEMS, completions, completion, generated_tokens=TOKENS)


# WC's runs, the same in both cases. n=1 (S=2): coverage 2/4, diversity (2+1)/4, FPR 1/3 (A is a lucky guess).
# n=2 (S=4): coverage 2/4, diversity 2/4, FPR 1/3. n=4 (S=8): coverage 3/4, diversity (1+2+1)/4, FPR 2/4.
# n=8 (S=16): coverage 1/4; SE has no run there.
WC_RUNS = {
    1: padded(2, ["REF", "A"], ["REF"], [], []),
    2: padded(4, ["REF", "REF"], [], ["A"], []),
    4: padded(8, ["REF"], ["A", "B"], [], ["REF"]),
    8: padded(16, ["REF"], [], [], []),
}
# SE overtakes at n=2: coverage 1/4, 3/4, 4/4 (diversity 1/4, 4/4, 6/4; FPR 0/1, 1/4, 2/7).
SE_OVERTAKES = {
    1: padded(1, ["REF"], [], [], []),
    2: padded(2, ["REF", "A"], ["REF"], ["REF"], []),
    4: padded(4, ["REF", "REF", "A"], ["REF"], ["REF", "B"], ["REF"]),
}
# SE stays behind: coverage 1/4 < 2/4, 1/4 < 2/4, 2/4 < 3/4.
SE_BEHIND = {
    1: padded(1, ["REF"], [], [], []),
    2: padded(2, ["REF"], [], [], []),
    4: padded(4, ["REF"], ["REF"], [], []),
}
# SE reaches WC at n=2 only: coverage 1/4 < 2/4, 2/4 = 2/4, 2/4 < 3/4 (one budget's noise, no crossover).
SE_REACHES_ONCE = {
    1: padded(1, ["REF"], [], [], []),
    2: padded(2, ["REF"], ["REF"], [], []),
    4: padded(4, ["REF"], ["REF"], [], []),
}
BUDGETS = "task.reference_samples=[1,2,4,8,16]"  # 16: no run of either model


def write_sweep(root: Path, se_runs: dict[int, list[list[str | None]]]) -> Path:
    for n, completions in WC_RUNS.items():
        write_run(root, WC, n, completions)
    for n, completions in se_runs.items():
        write_run(root, SE, n, completions)
    return root


def write_eval(run: runs.EvalRun, correct: list[int]) -> None:
    """A finished evaluation with known greedy correctness on 4 test problems."""
    greedy = pd.DataFrame({"problem_id": [f"t{i}" for i in range(len(correct))], "correct": correct})
    greedy["correct"] = greedy["correct"].astype(bool)
    runs.atomic_write_parquet(run.generation("greedy").samples_path, greedy)
    run.write_summary({"pass@1_greedy": sum(correct) / len(correct), "greedy_problems": len(correct)})


def write_students(root: Path, n: int) -> None:
    """The base student and the students after WC data (3/4) and SE data (1/4) at budget n (pair=tiny)."""
    write_eval(runs.EvalRun.of_base(root, "arith", WC, 0), [0, 0, 0, 1])
    for sampler, correct in (("wc", [1, 1, 0, 1]), ("se", [1, 0, 0, 0])):
        trained = runs.TrainRun.of(
            root, "arith", "self_improvement", WC, sampler, budget_name(n), "compute", 0, pair="tiny"
        )
        write_eval(runs.EvalRun.of_student(root, "arith", trained, 0), correct)


def compose_eval(outputs: Path, *overrides: str):
    """run_eval.py task=budget_sweep's config on pair=tiny, W&B off."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="eval",
            overrides=[
                f"paths.outputs={outputs}",
                f"paths.root={REPO}",
                "logger=none",
                "pair=tiny",
                "task=budget_sweep",
                *overrides,
            ],
        )


def rows_by_key(data: dict) -> dict[tuple[str, int], dict]:
    return {(r["role"], r["reference_samples"]): r for r in data["rows"]}


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


# --- the report ---------------------------------------------------------------------------------------


@pytest.fixture
def overtakes(tmp_path: Path) -> Path:
    write_sweep(tmp_path, SE_OVERTAKES)
    write_students(tmp_path, 1)
    return tmp_path


def test_exact_numbers_crossover_plots_and_missing_runs(overtakes: Path) -> None:
    result = budget_sweep.run(compose_eval(overtakes, BUDGETS, "task.student_budgets=[1,4]"))
    folder = overtakes / "reports/budget_sweep/arith/tiny_random-vs-tiny_random_x2/seed0"
    assert result.summary["report_dir"] == str(folder)
    data = json.loads((folder / "budget_sweep.json").read_text())
    rows = rows_by_key(data)
    expected = {  # (role, n): S, accuracy, coverage, diversity, FPR wrong / rated
        ("WC", 1): (2, 3 / 8, 2 / 4, 3 / 4, 1, 3),
        ("WC", 2): (4, 3 / 16, 2 / 4, 2 / 4, 1, 3),
        ("WC", 4): (8, 4 / 32, 3 / 4, 4 / 4, 2, 4),
        ("WC", 8): (16, 1 / 64, 1 / 4, 1 / 4, 0, 1),
        ("SE", 1): (1, 1 / 4, 1 / 4, 1 / 4, 0, 1),
        ("SE", 2): (2, 4 / 8, 3 / 4, 4 / 4, 1, 4),
        ("SE", 4): (4, 7 / 16, 4 / 4, 6 / 4, 2, 7),
    }
    for (role, n), (s, accuracy, coverage, diversity, wrong, rated) in expected.items():
        r = rows[role, n]
        params = MODELS[WC if role == "WC" else SE].params
        assert not r["missing"] and r["samples_per_problem"] == s and r["num_problems"] == 4
        assert r["accuracy"] == pytest.approx(accuracy)
        assert r["coverage"] == pytest.approx(coverage)
        assert r["diversity"] == pytest.approx(diversity)
        # FLOPs: the budget from the run's summary (n SE samples of W tokens), the measured ledger per problem.
        assert (r["flops_per_problem"], r["flops_source"]) == (pytest.approx(n * W * 2 * 13.2e6), "summary")
        assert r["measured_flops_per_problem"] == pytest.approx(2 * params * s * TOKENS)
        # The exact process check's FPR with its Wilson interval (the data report's function).
        low, high = metrics.wilson_interval(wrong, rated)
        assert (r["fpr_incorrect"], r["fpr_rated"], r["fpr_unknown"]) == (wrong, rated, 0)
        assert (r["fpr"], r["fpr_ci_low"], r["fpr_ci_high"]) == pytest.approx((wrong / rated, low, high))
    assert data["fpr"]["method"] == "exact process check"

    # SE has no run at n=8, neither model at n=16: their rows say so, with the command; n=16's FLOPs
    # come from the budget arithmetic (no summary to read).
    for role, model, n in (("SE", SE, 8), ("WC", WC, 16), ("SE", SE, 16)):
        r = rows[role, n]
        command = (
            f"python run_sample.py model={model} dataset=arith budget=custom budget.reference_samples={n}"
        )
        assert r["missing"] and r["state"] == "missing" and r["command"] == command
        assert r["coverage"] is None
    assert (rows["SE", 16]["flops_per_problem"], rows["SE", 16]["flops_source"]) == (
        pytest.approx(16 * W * 2 * 13.2e6),
        "budget.py",
    )
    text = (folder / "report.md").read_text()
    assert f"| SE | {SE} | 8 | 5.41e+10 | missing: make it with `python run_sample.py model={SE}" in text
    assert len(data["missing_runs"]) == 3

    # The crossover: SE's coverage 0.75 >= WC's 0.5 at n=2 (WC ahead at n=1); n=8 is not compared.
    crossover = data["crossover"]
    assert (crossover["reference_samples"], crossover["compared"]) == (2, [1, 2, 4])
    assert (crossover["coverage_se"], crossover["coverage_wc"]) == pytest.approx((0.75, 0.5))
    sentence = (
        "SE overtakes WC at 2 reference samples (1.35e+10 FLOPs per problem): coverage SE 0.750 ≥ WC 0.500."
    )
    assert crossover["sentence"] == sentence
    assert f"**Crossover: {sentence}" in text
    assert result.message.startswith(f"Crossover: {sentence}")
    assert f"report: {folder / 'report.md'}" in result.message

    # Students at n=1 (evaluated: base 1/4, after WC data 3/4, after SE data 1/4) and n=4 (not run).
    students = {s["reference_samples"]: s for s in data["students"]}
    assert (students[1]["base"], students[1]["wc"], students[1]["se"]) == pytest.approx((0.25, 0.75, 0.25))
    assert students[1]["wc_minus_se"] == pytest.approx(0.5) and students[1]["num_problems"] == 4
    assert students[4]["wc"] is None and len(students[4]["missing_commands"]) == 2
    assert {m["reference_samples"] for m in data["missing_students"]} == {4}
    # Its training first (not run either), then its evaluation, which names the pair.
    assert (
        "- tiny_random after SE data (n=4): `python run_train.py pair=tiny regime=self_improvement "
        "data.sampler=se dataset=arith budget=custom budget.reference_samples=4` then `python run_eval.py "
        "pair=tiny task=evaluate dataset=arith task.student.regime=self_improvement task.student.sampler=se "
        "budget=custom budget.reference_samples=4`" in text
    )

    figures = {name: Path(path) for name, path in result.summary["figures"].items()}
    assert set(figures) == {"coverage", "diversity", "fpr", "students"}
    for path in figures.values():
        assert path.parent == folder
        check_png(path)
        assert f"]({path.name})" in text


def test_se_never_overtakes(tmp_path: Path) -> None:
    write_sweep(tmp_path, SE_BEHIND)
    result = budget_sweep.run(compose_eval(tmp_path, BUDGETS, "task.regime=null"))
    data = json.loads(Path(result.summary["data"]).read_text())
    assert data["crossover"]["reference_samples"] is None and data["crossover"]["compared"] == [1, 2, 4]
    sentence = "SE does not overtake WC between 1 and 4 reference samples."
    assert data["crossover"]["sentence"] == sentence
    assert f"Crossover: {sentence}" in result.message
    assert f"**Crossover: {sentence}" in Path(result.summary["report"]).read_text()
    assert data["students"] == [] and "students" not in result.summary["figures"]  # task.regime=null
    rows = rows_by_key(data)
    assert [rows["SE", n]["coverage"] for n in (1, 2, 4)] == pytest.approx([0.25, 0.25, 0.5])


def test_se_ahead_at_one_budget_only_is_not_a_crossover(tmp_path: Path) -> None:
    """Before the fix the report said "SE overtakes WC at 2" though WC leads again at 4 (seen in a real
    sweep: SE 0.53 vs WC 0.49 at 4 reference samples, WC ahead at 8, 16 and 32)."""
    write_sweep(tmp_path, SE_REACHES_ONCE)
    result = budget_sweep.run(compose_eval(tmp_path, BUDGETS, "task.regime=null"))
    crossover = json.loads(Path(result.summary["data"]).read_text())["crossover"]
    assert crossover["reference_samples"] is None and crossover["se_reaches"] == [2]
    assert crossover["sentence"] == (
        "SE does not overtake WC between 1 and 4 reference samples. SE's coverage reaches WC's at 2 reference "
        "sample(s), but WC leads again at a larger budget: noise at that budget, not a crossover."
    )


def test_no_runs_is_an_error_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(runs.RunError) as error:
        budget_sweep.run(compose_eval(tmp_path))
    message = str(error.value)
    assert "found no finished sampling run" in message
    assert (
        f"python run_sample.py model={WC} dataset=arith budget=custom budget.reference_samples=1" in message
    )
    assert "sweeps/budget_sweep.yaml" in message
    assert not (tmp_path / "reports").exists()


def test_crossover_sentences_and_fpr_without_a_checker() -> None:
    assert "crossover is unknown" in Crossover(()).sentence()
    first = Crossover((1, 2), 1, 3.0e9, 0.5, 0.25).sentence()
    assert first == (
        "SE's coverage is already ≥ WC's at the smallest budget, 1 reference sample (3e+09 FLOPs per problem): "
        "coverage SE 0.500 ≥ WC 0.250."
    )
    sweep = BudgetSweep("math", WC, SE, 0, [1], [])
    assert add_fpr(sweep, None, None, answer_format="math") is None
    assert sweep.fpr_note.startswith("not measured: the 'math' answer format has no process checker")


# --- configs ------------------------------------------------------------------------------------------


def test_config_composes(tmp_path: Path) -> None:
    cfg = OmegaConf.to_container(compose_eval(tmp_path), resolve=True)
    task = cfg["task"]
    assert cfg["stage"] == "budget_sweep" and task["loads"] is None
    assert task["reference_samples"] == [1, 2, 4, 8, 16, 32] and task["student_budgets"] == [1, 4, 16]
    assert task["report_dir"] == f"{tmp_path}/reports/budget_sweep/arith/{WC}-vs-{SE}/seed0"
    out = subprocess.run(
        [sys.executable, "run_eval.py", "task=budget_sweep", "pair=arith", "--cfg", "job"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    printed = OmegaConf.create(out)
    assert printed.task.name == printed.stage == "budget_sweep" and printed.task.regime == "self_improvement"


def test_recipe_jobs_compose_and_agree_with_the_report() -> None:
    """Every job of sweeps/budget_sweep.yaml composes (run folders, SLURM requests resolve); the sampled
    budgets and the trained / evaluated ones are the report's task.reference_samples / student_budgets."""
    name, stages, common = load_recipe(REPO / "sweeps/budget_sweep.yaml")
    assert name == "budget_sweep" and common == ("experiment=embedded", "hydra/launcher=parallel")
    assert stages[0].module == "compute_optimal.family"  # built before two jobs at once could need it
    composed = {}
    for stage in stages[1:]:
        jobs = expand_jobs(stage, merge_overrides(common, ()))
        composed[stage.name] = [compose_job(stage.script, job) for job in jobs]
        for cfg in composed[stage.name]:
            OmegaConf.to_container(cfg.resources, resolve=True)
            assert "run_dir" not in cfg or str(cfg.run_dir)
    assert {k: len(v) for k, v in composed.items()} == {
        "sample": 2,
        "sample_smaller": 10,
        "train": 6,
        "evaluate_base": 1,
        "evaluate_students": 6,
        "report": 1,
    }
    (report,) = composed["report"]
    assert (report.task.name, report.pair.wc, report.pair.se) == ("budget_sweep", "arith_wc", "arith_se")
    # The largest budget is generated first; the smaller ones then take its first samples (sample_prefix).
    assert {c.budget.reference_samples for c in composed["sample"]} == {max(report.task.reference_samples)}
    sampled = {(c.model.name, c.budget.name) for c in composed["sample"] + composed["sample_smaller"]}
    assert sampled == {
        (m, budget_name(n)) for m in ("arith_wc", "arith_se") for n in report.task.reference_samples
    }
    params = {c.model.name: c.model.params for c in composed["sample"]}
    ratio = params["arith_se"] / params["arith_wc"]
    for c in (
        composed["sample"] + composed["sample_smaller"]
    ):  # compute-matched: arith_se gets n samples, arith_wc n x the ratio
        n = c.budget.reference_samples
        samples = instantiate(c.budget).samples_for(c.model.name, c.model.params)
        assert samples == (math.floor(n * ratio + 1e-9) if c.model.name == "arith_wc" else n)
    students = set(report.task.student_budgets)
    trained = {(c.regime.name, c.data.sampler, c.budget.name) for c in composed["train"]}
    assert trained == {(report.task.regime, s, budget_name(n)) for s in ("wc", "se") for n in students}
    evaluated = {
        (c.task.student.regime, c.task.student.sampler, c.task.student.budget)
        for c in composed["evaluate_students"]
    }
    assert evaluated == trained
    (base,) = composed["evaluate_base"]
    assert base.model.name == "arith_wc"  # the self-improvement student before fine-tuning
