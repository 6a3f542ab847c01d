"""The WC-vs-SE data report: from real tiny sampling runs (library and run_eval.py, W&B offline), from
runs with known samples (hand-computed numbers, number-matched rows, human and judge FPR), bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from compute_optimal import metrics, models, runs
from compute_optimal.analysis import AnalysisError, data_quality
from compute_optimal.budget import Budget
from compute_optimal.engines import Completion, Engine, Generation, LazyEngine, build_engine
from compute_optimal.reporting import RunRef, check_pair, load_comparison, load_run, write_report
from compute_optimal.resolvers import model_config
from compute_optimal.sampling import SamplingConfig, plan_sampling, run_sampling
from compute_optimal.specs import Dataset, Model
from compute_optimal.stages import data_report
from compute_optimal.stages.common import engine_settings, model_named
from tests.conftest import run_entry_point
from tests.fake_runs import arith_split, write_graded_run

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
WC, SE = "tiny_random", "tiny_random_x2"
MODELS = {m: Model.from_config(model_config(m, CONF)) for m in (WC, SE)}  # pair=tiny
ARITH = arith_split("train")
BUDGETS = {"low": 1, "high": 2}  # reference samples of SE: WC gets 2 / 4, SE 1 / 2


def dataset_cfg(name: str = "arith", limit: int | None = None) -> Dataset:
    return Dataset.from_config(
        {
            "name": name,
            "answer_format": "arith",
            "split": "train",
            "limit": limit,
            "prompt": {"template": "arith", "num_shots": 2},
        }
    )


def budget(name: str, mode: str = "compute") -> Budget:
    return Budget(name, mode, SE, BUDGETS[name], MODELS[SE].params)


def plan(root: Path, model: str, budget_name: str, mode: str, problems, dataset: str = "arith", limit=None):
    return plan_sampling(
        run=runs.SampleRun.of(root, dataset, model, budget_name, mode, 0),
        model=MODELS[model],
        budget=budget(budget_name, mode),
        dataset=dataset_cfg(dataset, limit),
        problems=problems,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=8, chunk_size=4),
        seed=0,
        engine_backend="hf",
    )


# --- real tiny sampling runs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both tiny models at both budgets through the real sampling stage (2 arith problems each)."""
    root = tmp_path_factory.mktemp("outputs")
    for model in (WC, SE):
        checkpoint = models.resolve_checkpoint(MODELS[model])
        for name in BUDGETS:
            p = plan(root, model, name, "compute", ARITH, limit=2)
            with LazyEngine(lambda c=checkpoint: build_engine(c, "hf")) as engine:
                run_sampling(p, engine, progress=False)
    return root


def parquet_metrics(run_dir: Path) -> tuple[int, float]:
    """(S, coverage@S) straight from samples.parquet, with the estimator alone."""
    frame = pd.read_parquet(run_dir / "samples.parquet")
    counts = frame.groupby("problem_id")["correct"].agg(["size", "sum"])
    n = int(counts["size"].iloc[0])
    return n, metrics.coverage_at_k(zip(counts["size"], counts["sum"], strict=True), n)


def test_sampling_summaries_gain_the_data_quality(real_runs: Path) -> None:
    for summary_path in real_runs.glob("sample/arith/*/*/seed0/summary.json"):
        summary = json.loads(summary_path.read_text())
        n = summary["samples_per_problem"]
        assert len(summary["coverage_at_k"]) == len(summary["diversity_at_k"]) == n
        assert summary["coverage_at_k"][-1] == pytest.approx(summary["coverage"])
        assert set(summary["per_level"]) <= {"1", "2", "3", "4", "5"}
        frame = pd.read_parquet(summary_path.parent / "samples.parquet")
        assert json.loads(json.dumps(data_quality(frame, n))).items() <= summary.items()


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def test_report_from_real_runs(real_runs: Path, tmp_path: Path) -> None:
    comparison = load_comparison(
        real_runs, dataset="arith", wc_model=WC, se_model=SE, budgets=["low", "high"]
    )
    paths = write_report(comparison, tmp_path / "report")
    text = Path(paths["report"]).read_text()
    for budget_name in BUDGETS:
        (s_wc, cov_wc), (s_se, cov_se) = (
            parquet_metrics(runs.SampleRun.of(real_runs, "arith", m, budget_name, "compute", 0).path)
            for m in (WC, SE)
        )
        assert f"| {budget_name} | compute | {s_wc} / {s_se} | {cov_wc:.3f} | {cov_se:.3f} |" in text
    assert (
        "| low | number | not run (command: `python run_sample.py model=tiny_random dataset=arith budget=low budget.mode=number`)"
        in text
    )
    for section in ("## Headline: WC over SE", "## coverage@k", "## Per level", "## diversity@k", "## Runs"):
        assert section in text
    assert 'What "distinct" means' in text and "thousands separators" in text
    assert "Not measured" in text
    pngs = sorted((tmp_path / "report").glob("*.png"))
    assert [p.name for p in pngs] == ["coverage_at_k.png", "coverage_per_level.png", "diversity_at_k.png"]
    for png in pngs:
        check_png(png)
        assert f"]({png.name})" in text
    data = json.loads(Path(paths["data"]).read_text())
    assert [r["matching"] for r in data["headline"]][:2] == ["compute", "number"]
    # Rebuilding replaces the folder: nothing of the old build is left.
    (tmp_path / "report" / "stale.png").write_bytes(b"x")
    write_report(comparison, tmp_path / "report")
    assert not (tmp_path / "report" / "stale.png").exists()


def run_eval(outputs: Path, *args: str) -> subprocess.CompletedProcess:
    return run_entry_point(
        "run_eval.py", outputs, "task=data_report", "dataset=arith", *args, check=False, timeout=300
    )


def test_run_eval_builds_the_report_and_logs_to_wandb(real_runs: Path) -> None:
    proc = run_eval(real_runs, "pair=tiny")  # WC, SE
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = real_runs / "reports/data/arith/tiny_random-vs-tiny_random_x2/seed0"
    assert f"report: {folder / 'report.md'}" in proc.stdout
    assert "| low | compute | 2 / 1 |" in proc.stdout and "| high | compute | 4 / 2 |" in proc.stdout
    assert len(list(folder.glob("*.png"))) == 3
    (wandb_run,) = real_runs.glob("wandb/offline-run-*")
    assert any(p.stat().st_size > 0 for p in wandb_run.glob("run-*.wandb"))
    images = sorted(p.name.split("_")[0] for p in wandb_run.glob("files/media/images/figures/*.png"))
    assert len(images) == 3
    tables = {p.name.split("_")[0] for p in wandb_run.glob("files/media/table/*.table.json")}
    assert {"headline", "runs"} <= tables


def test_run_eval_names_missing_and_unfinished_runs(tmp_path: Path) -> None:
    unfinished = runs.SampleRun.of(tmp_path, "arith", WC, "low", "compute", 0).path
    (unfinished / "chunks").mkdir(parents=True)
    proc = run_eval(tmp_path, "pair=tiny", "task.budgets=[low]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: the arith data report needs 2 more finished sampling run(s)" in proc.stderr
    assert (
        f"{unfinished} is unfinished (no summary.json); make it with: python run_sample.py model={WC} dataset=arith budget=low"
        in proc.stderr
    )
    assert (
        f"tiny_random_x2/low-compute/seed0 does not exist; make it with: python run_sample.py model={SE}"
        in proc.stderr
    )
    assert not (tmp_path / "reports").exists()


# --- runs with known samples: exact numbers -----------------------------------------------------

PROBLEMS = [
    next(p for p in ARITH if p.level == 1),
    [p for p in ARITH if p.level == 1][1],
    next(p for p in ARITH if p.level == 2),
    next(p for p in ARITH if p.level == 3),
]
# Per problem, the completions of a run; None marks a wrong answer. "A  " is "A" after normalisation.
KNOWN = {
    (WC, "low", "compute"): [["A", "A  "], ["B", None], [None, "C"], [None, None]],
    (SE, "low", "compute"): [["A"], [None], [None], [None]],
    (WC, "high", "compute"): [["A", "B", "A", None], [None] * 4, ["C"] * 4, ["D", None, None, None]],
    (SE, "high", "compute"): [["A", "B"], ["E", None], [None, None], [None, None]],
    (WC, "high", "number"): [["A", "A"], [None, None], ["C", "C other"], [None, None]],
}


def known_completion(problem, text: str) -> str:
    return f"Solution {text}. The answer is {problem.answer}."


def write_known_run(
    root: Path, model: str, budget_name: str, mode: str, completions, dataset="arith", render=known_completion
) -> Path:
    """A finished run in the sampling stage's exact format (its plan, table dtypes and summarize());
    ``render(problem, text)`` writes a correct sample's completion."""
    p = plan(root, model, budget_name, mode, PROBLEMS, dataset)
    return write_graded_run(p, PROBLEMS, completions, render, generated_tokens=20)


@pytest.fixture
def known_runs(tmp_path: Path) -> Path:
    for (model, budget_name, mode), completions in KNOWN.items():
        write_known_run(tmp_path, model, budget_name, mode, completions)
    return tmp_path


def compose_eval(outputs: Path, *overrides: str, pair: str | None = "tiny"):
    """run_eval.py's config; the WC and SE models are the pair's (pair=tiny: WC, SE)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="eval",
            overrides=[
                f"paths.outputs={outputs}",
                f"paths.root={REPO}",
                "logger=none",
                *([f"pair={pair}"] if pair else []),
                *overrides,
            ],
        )


def test_eval_config_composes_and_resolves(tmp_path: Path) -> None:
    composed = compose_eval(tmp_path, "dataset=math", "task.fpr.method=judge", pair="gemma2")
    cfg = OmegaConf.to_container(composed, resolve=True)
    assert cfg["task"]["report_dir"] == f"{tmp_path}/reports/data/math/gemma2_9b-vs-gemma2_27b/seed0"
    # The judge defaults to the pair's SE model, and its engine is configured for it (not for `model`).
    judge_model = model_named(composed, cfg["task"]["fpr"]["judge_model"])
    assert (
        judge_model.name == "gemma2_27b"
        and engine_settings(composed.engine, judge_model, 0)["vllm"]["tensor_parallel_size"] == 2
    )
    assert cfg["task"]["loads"]["name"] == "gemma2_27b"  # what its SLURM job asks for
    default = OmegaConf.to_container(compose_eval(tmp_path, pair=None), resolve=True)
    assert (default["pair"]["wc"], default["pair"]["se"]) == ("arith_wc", "arith_se")  # the embedded default
    assert default["task"]["report_dir"].endswith("/arith_wc-vs-arith_se/seed0")


def test_headline_numbers_by_hand(known_runs: Path) -> None:
    result = data_report.run(compose_eval(known_runs)).summary
    text = Path(result["report"]).read_text()
    rows = [
        # low: coverage 3/4 vs 1/4, diversity 3/4 vs 1/4; WC at k=1: coverage 1/2, diversity 1/2.
        "| low | compute | 2 / 1 | 0.750 | 0.250 | +200.0% | 0.75 | 0.25 | +200.0% |",
        "| low | number | not run (command: `python run_sample.py model=tiny_random dataset=arith budget=low budget.mode=number`)",
        "| low | number (WC subsampled) | 1 / 1 | 0.500 | 0.250 | +100.0% | 0.50 | 0.25 | +100.0% |",
        # high: WC p1 has classes [2, 1], p3 [4], p4 [1]: diversity (2 + 0 + 1 + 1) / 4 = 1. No sample
        # writes a computation, so each covered problem has one reasoning chain: WC 3/4, SE 2/4.
        "| high | compute | 4 / 2 | 0.750 | 0.500 | +50.0% | 1.00 | 0.75 | +33.3% | 0.75 | 0.50 | +50.0% |",
        # number-matched: SE's run is its compute run (the reference model gets S=2 in both modes).
        "| high | number | 2 / 2 | 0.500 | 0.500 | +0.0% | 0.75 | 0.75 | +0.0% |",
        # WC at k=2 of 4: coverage (1 + 0 + 1 + 1/2) / 4; diversity (4/3 + 0 + 1 + 1/2) / 4 = 0.708.
        "| high | number (WC subsampled) | 2 / 2 | 0.625 | 0.500 | +25.0% | 0.71 | 0.75 | -5.6% |",
    ]
    for row in rows:
        assert row in text, row
    assert "number-matched tiny_random_x2: its compute-matched run" in text
    low, high = metrics.wilson_interval(2, 2)
    assert f"| low | 1 | 2 / 2 | 1.000 [{low:.2f}, {high:.2f}] | 0.500 [" in text  # level 1: p1, p2
    headline = result["headline"]
    assert headline.loc[0, "coverage_rel_pct"] == pytest.approx(200.0)
    assert result["wandb_dir"] is None  # logger=none


def test_near_duplicate_threshold_is_applied_and_reported(known_runs: Path) -> None:
    result = data_report.run(compose_eval(known_runs, "task.near_duplicate=0.5")).summary
    text = Path(result["report"]).read_text()
    assert "Near-duplicates: on, threshold 0.5" in text
    # At 0.5 the known solutions of a problem ("Solution A. The answer is 7." vs "Solution B. ...")
    # all merge into one class: diversity@S equals coverage@S.
    assert "| high | compute | 4 / 2 | 0.750 | 0.500 | +50.0% | 0.75 | 0.50 | +50.0% |" in text
    assert "| high | number | 2 / 2 | 0.500 | 0.500 | +0.0% | 0.50 | 0.50 | +0.0% |" in text


def test_human_labels_sheet_export_label_import(known_runs: Path) -> None:
    with pytest.raises(AnalysisError, match="no label sheet"):
        data_report.run(compose_eval(known_runs, "task.fpr.method=human"))
    with pytest.raises(AnalysisError, match=r"add task\.fpr\.method=human"):
        data_report.run(compose_eval(known_runs, "task.export_sheet=true"))
    export = data_report.run(compose_eval(known_runs, "task.fpr.method=human", "task.export_sheet=true"))
    assert "exported 9 correct-answer solutions to label" in export.message
    exported = export.summary
    sheet_path = Path(exported["sheet"])
    sheet = pd.read_csv(sheet_path, dtype=str, keep_default_na=False)
    assert exported["items"] == len(sheet) == 3 + 1 + 3 + 2  # problems with a correct solution, per run
    assert set(sheet["question"]) <= {p.question for p in PROBLEMS} and (sheet["label"] == "").all()
    # A labeller: WC solutions all wrong but one; SE solutions all right but one left blank.
    wc_rows, se_rows = sheet.index[sheet["model"] == WC], sheet.index[sheet["model"] == SE]
    sheet.loc[wc_rows, "label"] = "incorrect"
    sheet.loc[wc_rows[0], "label"] = "correct"
    sheet.loc[se_rows, "label"] = "correct"
    sheet.loc[se_rows[0], "label"] = ""
    sheet.to_csv(sheet_path, index=False)
    result = data_report.run(compose_eval(known_runs, "task.fpr.method=human")).summary
    text = Path(result["report"]).read_text()
    expected = {}
    for (model, budget_dir), group in sheet.groupby(["model", "budget"]):
        bad, good = (group["label"] == "incorrect").sum(), (group["label"] == "correct").sum()
        blank = (group["label"] == "").sum()
        low, high = metrics.wilson_interval(int(bad), int(bad + good))
        line = (
            f"| {model} | {budget_dir} | human labels ({sheet_path.name}) | {bad + good} | {bad} | {blank} |"
        )
        assert line in text, line
        assert f"[{low:.3f}, {high:.3f}]" in text
        expected[model, budget_dir] = bad / (bad + good)
    assert "human labels from" in text and "(8 of 9 rows labelled)" in text
    assert f"| {expected[WC, 'low-compute']:.3f} | {expected[SE, 'low-compute']:.3f} |" in text
    assert sorted(p.name for p in Path(result["report_dir"]).glob("*.png"))[-1] == "fpr.png"
    assert len(list(Path(result["report_dir"]).glob("*.png"))) == 4


def test_llm_judge_fpr_with_a_real_tiny_judge(known_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = (
        "task.fpr.method=judge",
        f"task.fpr.judge_model={WC}",
        "engine=hf",
        "task.fpr.max_new_tokens=8",
        "task.fpr.num_problems=1",
    )
    result = data_report.run(compose_eval(known_runs, *overrides)).summary
    data = json.loads(Path(result["data"]).read_text())
    assert len(data["fpr"]) == 4
    for row in data["fpr"]:
        assert row["method"] == "LLM judge (tiny_random)"
        assert row["rated"] + row["unknown"] == 1
    verdicts = pd.concat(
        pd.read_parquet(p) for p in known_runs.glob("reports/data/arith/judge/tiny_random/*.parquet")
    )
    assert len(verdicts) == 4
    assert sum(r["unknown"] for r in data["fpr"]) == (verdicts["verdict"] == "unknown").sum()
    assert sum(r["correct"] for r in data["fpr"]) == (verdicts["verdict"] == "correct").sum()
    assert "could not be parsed (unknown)" in Path(result["report"]).read_text()

    # Cached verdicts: the same judge, prompt and decoding never start an engine again.
    def no_engine(*args, **kwargs):
        raise AssertionError("cached verdicts must be reused")

    monkeypatch.setattr("compute_optimal.engines.build_engine", no_engine)
    monkeypatch.setattr("compute_optimal.stages.common.build_engine", no_engine)  # what engine_for calls
    again = json.loads(
        Path(data_report.run(compose_eval(known_runs, *overrides)).summary["data"]).read_text()
    )
    assert again["fpr"] == data["fpr"]


def test_runs_of_different_datasets_are_refused(tmp_path: Path) -> None:
    write_known_run(tmp_path, WC, "low", "compute", KNOWN[WC, "low", "compute"])
    write_known_run(tmp_path, SE, "low", "compute", KNOWN[SE, "low", "compute"], dataset="gsm8k")
    wc = load_run(RunRef(tmp_path, "arith", WC, "low", "compute", 0))
    se = load_run(RunRef(tmp_path, "gsm8k", SE, "low", "compute", 0))
    with pytest.raises(AnalysisError, match=r"cannot compare runs of different datasets: 'arith'.*'gsm8k'"):
        check_pair(wc, se)
    # A folder of one dataset holding a run of another.
    moved = runs.SampleRun.of(tmp_path, "arith", SE, "low", "compute", 0).path
    moved.parent.mkdir(parents=True)
    runs.SampleRun.of(tmp_path, "gsm8k", SE, "low", "compute", 0).path.rename(moved)
    with pytest.raises(AnalysisError, match="holds a run of dataset 'gsm8k', not 'arith'"):
        load_comparison(tmp_path, dataset="arith", wc_model=WC, se_model=SE, budgets=["low"])
    with pytest.raises(AnalysisError, match="same model"):
        load_comparison(tmp_path, dataset="arith", wc_model=WC, se_model=WC, budgets=["low"])


# --- the exact false-positive rate (arith) and the arithmetic check (GSM8K) ----------------------

# Per problem (levels 1, 1, 2, 3), the correct samples: REF is the problem's reference solution (right
# reasoning), LUCK its answer without any computation (a false positive); None a wrong answer.
EXACT_RUNS = {
    (WC, "low", "compute"): [["REF", "LUCK"], ["REF", None], ["LUCK", "LUCK"], [None, None]],
    (SE, "low", "compute"): [["REF"], ["REF"], [None], ["LUCK"]],
}


def exact_completion(problem, text: str) -> str:
    if text == "REF":
        return problem.solution
    if text == "BAD":  # a wrong computation, the right answer
        return f"So 14*20 = 140 and <<48/2=24>>24. The answer is {problem.answer}."
    return f"I just know it. The answer is {problem.answer}."


@pytest.fixture
def exact_runs(tmp_path: Path) -> Path:
    for (model, budget_name, mode), completions in EXACT_RUNS.items():
        write_known_run(tmp_path, model, budget_name, mode, completions, render=exact_completion)
    return tmp_path


def exact_row(model: str, level: str, rated: int, wrong: int, label: str = "exact") -> str:
    low, high = metrics.wilson_interval(wrong, rated)
    return (
        f"| {model} | low-compute | {level} | {label} | {rated} | {wrong} | 0 | {wrong / rated:.3f} | "
        f"[{low:.3f}, {high:.3f}] |"
    )


def test_exact_fpr_of_runs_with_known_false_positives(exact_runs: Path) -> None:
    result = data_report.run(compose_eval(exact_runs, "task.budgets=[low]")).summary
    text = Path(result["report"]).read_text()
    assert "### Exact process check: every answer-correct sample" in text
    assert "A sample passes the exact process check when" in text  # the definition beside the table
    # WC: level 1 has REF, LUCK, REF (1 of 3 false); level 2 LUCK, LUCK (2 of 2); all: 3 of 5.
    # SE: level 1 REF, REF (0 of 2); level 3 LUCK (1 of 1); all: 1 of 3.
    for row in [
        exact_row(WC, "1", 3, 1),
        exact_row(WC, "2", 2, 2),
        exact_row(WC, "all", 5, 3),
        exact_row(SE, "1", 2, 0),
        exact_row(SE, "3", 1, 1),
        exact_row(SE, "all", 3, 1),
    ]:
        assert row in text, row
    assert "- low: WC − SE = +26.7 pp (exact)" in text
    # The headline's FPR columns show the exact check where no judge or labels measured one.
    headline = next(line for line in text.splitlines() if line.startswith("| low | compute |"))
    assert headline.endswith("| 0.600 (exact) | 0.333 (exact) | +26.7 pp |"), headline
    assert "Not measured: task.fpr.method=none" in text  # the judge / human FPR is apart
    data = json.loads(Path(result["data"]).read_text())["process_fpr"]
    assert data["method"] == "exact process check" and data["judge_calibration"] == []
    overall = {(r["model"], r["level"]): (r["incorrect"], r["rated"]) for r in data["rows"]}
    assert overall[WC, "all"] == (3, 5) and overall[SE, "all"] == (1, 3)
    assert {r["label"] for r in data["rows"]} == {"exact"}
    # Coverage by process: WC's level-2 problem is covered by lucky answers only, SE's level-3 one too.
    for row in [
        f"| {WC} | low-compute | 1 | 2 | 1.000 | 1.000 | 0.000 |",
        f"| {WC} | low-compute | 2 | 1 | 1.000 | 0.000 | 1.000 |",
        f"| {WC} | low-compute | 3 | 1 | 0.000 | 0.000 | – |",
        f"| {WC} | low-compute | all | 4 | 0.750 | 0.500 | 0.333 |",
        f"| {SE} | low-compute | 2 | 1 | 0.000 | 0.000 | – |",
        f"| {SE} | low-compute | 3 | 1 | 1.000 | 0.000 | 1.000 |",
    ]:
        assert row in text, row
    coverage = {
        (r["model"], r["level"]): (r["coverage_answer"], r["coverage_process"]) for r in data["coverage"]
    }
    assert coverage[WC, "all"] == (0.75, 0.5) and coverage[SE, "1"] == (1.0, 1.0)


def test_gsm8k_reports_the_arithmetic_check_as_a_lower_bound(tmp_path: Path) -> None:
    runs_ = {(WC, "low", "compute"): [["REF", "BAD"], ["BAD", None], [None, None], [None, None]]}
    runs_[SE, "low", "compute"] = [["REF"], [None], [None], ["BAD"]]
    for (model, budget_name, mode), completions in runs_.items():
        write_known_run(tmp_path, model, budget_name, mode, completions, "gsm8k", exact_completion)
    result = data_report.run(compose_eval(tmp_path, "dataset=gsm8k", "task.budgets=[low]")).summary
    text = Path(result["report"]).read_text()
    label = "arithmetic check (lower bound)"
    assert (
        "### Arithmetic check (lower bound): every answer-correct sample" in text
        and "lower bound on the false-positive rate" in text
    )
    assert exact_row(WC, "all", 3, 2, label) in text and exact_row(SE, "all", 2, 1, label) in text
    assert "| exact |" not in text


class JudgeByProblem(Engine):
    """A scripted judge: CORRECT on p1, INCORRECT on p2, no verdict on p4, and on p3 INCORRECT when the
    solution writes no computation."""

    def generate(self, requests, settings):
        out = []
        for request in requests:
            block = request.prompt.rsplit("### Problem\n", 1)[1]
            question, rest = block.split("\n### Reference answer", 1)
            index = [p.question for p in PROBLEMS].index(question)
            solution = rest.split("### Solution\n", 1)[1]
            reply = {0: "VERDICT: CORRECT", 1: "VERDICT: INCORRECT", 3: "no idea"}.get(
                index, "VERDICT: CORRECT" if "=" in solution else "VERDICT: INCORRECT"
            )
            out.append(Generation(10, (Completion(reply, 5, "stop"),)))
        return out


def test_llm_judge_is_scored_against_the_exact_check(
    exact_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_report, "engine_for", lambda *args: LazyEngine(JudgeByProblem))
    overrides = ("task.budgets=[low]", "task.fpr.method=judge", "task.fpr.per_problem=4")
    result = data_report.run(compose_eval(exact_runs, *overrides)).summary
    data = json.loads(Path(result["data"]).read_text())["process_fpr"]
    calibration = {r["run"]: r for r in data["judge_calibration"]}
    # WC (judge / exact): p1 REF C/C, p1 LUCK C/I, p2 REF I/C, p3 LUCK I/I twice -> TP 2, FP 1, FN 1, TN 1.
    # SE: p1 REF C/C, p2 REF I/C, p4 LUCK unknown -> FP 1, TN 1, unknown 1.
    wc, se, both = calibration[f"{WC} low-compute"], calibration[f"{SE} low-compute"], calibration["all"]
    assert [wc[k] for k in ("tp", "fp", "fn", "tn", "unknown")] == [2, 1, 1, 1, 0]
    assert [se[k] for k in ("tp", "fp", "fn", "tn", "unknown")] == [0, 1, 0, 1, 1]
    # All 7 rated: p_o = 4/7, judge says incorrect 4/7, exact 3/7 -> p_e = 24/49, kappa = 4/25.
    assert [both[k] for k in ("tp", "fp", "fn", "tn", "unknown", "rated")] == [2, 2, 1, 2, 1, 7]
    assert both["agreement"] == pytest.approx(4 / 7) and both["kappa"] == pytest.approx(0.16)
    assert both["precision"] == pytest.approx(0.5) and both["recall"] == pytest.approx(2 / 3)
    text = Path(result["report"]).read_text()
    assert "### The LLM judge against the exact check" in text
    assert "| all | 7 | 1 | 0 | 2 | 2 | 1 | 2 | 0.571 | 0.500 | 0.667 | 0.160 |" in text
    assert f"LLM judge ({SE})" in text  # the judge's own FPR rows are still there
