"""Evaluation: accuracy metrics against hand-computed values, the stage on a real tiny model, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from compute_optimal import models, runs
from compute_optimal.engines import LazyEngine, build_engine
from compute_optimal.evaluation import (
    EvalTarget,
    accuracy_metrics,
    greedy_by_level,
    majority_answer,
    plan_runs,
    run_evaluation,
    student_target,
)
from compute_optimal.runs import EvalRun, TrainRun

from .test_sampling import DATASET, PROBLEMS, TINY


def test_majority_vote_and_its_tie_rule() -> None:
    assert majority_answer(["3", "5", "5"]) == "5"
    assert majority_answer(["3", "5", "5", "3"]) == "3"  # tie: the answer seen first wins
    assert majority_answer(["5", "3", "3", "5"]) == "5"
    assert majority_answer([None, "", "7"]) == "7"  # no answer never votes
    assert majority_answer([None, None]) is None
    assert majority_answer([float("nan"), "4", float("nan")]) == "4"  # Parquet reads a missing answer as NaN


def frame(rows: list[tuple[str, int, str | None, bool]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["problem_id", "sample_index", "extracted_answer", "correct"])


def test_accuracy_metrics_by_hand() -> None:
    greedy = frame([("p1", 0, "5", True), ("p2", 0, "9", False)])
    sampled = frame(
        [
            ("p1", 0, "5", True),
            ("p1", 1, "5", True),
            ("p1", 2, "3", False),
            ("p1", 3, None, False),
            ("p2", 0, "3", False),
            ("p2", 1, "2", True),
            ("p2", 2, "2", True),
            ("p2", 3, "3", False),
        ]
    )
    m = accuracy_metrics(greedy, sampled, ks=(1, 2, 4))
    assert m["pass@1_greedy"] == 0.5 and m["greedy_problems"] == 2
    assert m["samples_per_problem"] == 4 and m["mean@4"] == 0.5
    # pass@k with n=4, c=2 for both problems: 1 - C(2,k)/C(4,k)
    assert m["pass@1"] == pytest.approx(0.5)
    assert m["pass@2"] == pytest.approx(1 - 1 / 6)
    assert m["pass@4"] == 1.0
    # maj@1: p1 "5" right, p2 "3" wrong; maj@2: p2 ties 3 vs 2 -> "3" (first) wrong;
    # maj@4: p1 "5" (2 votes) right, p2 ties 3 vs 2 -> "3" wrong.
    assert (m["maj@1"], m["maj@2"], m["maj@4"]) == (0.5, 0.5, 0.5)


def test_greedy_pass_at_1_per_level_by_answer_and_by_process() -> None:
    from compute_optimal.data.arith import generate_split

    problems = generate_split("test", num_test=4, levels=[1, 2])  # levels 1, 2, 1, 2
    completions = [
        problems[0].solution,  # right answer, valid chain
        f"I think so. The answer is {problems[1].answer}.",  # right answer by luck
        problems[2].solution.replace(problems[2].answer, "1"),  # wrong answer
        problems[3].solution,
    ]
    greedy = pd.DataFrame(
        {
            "problem_id": [p.id for p in problems],
            "sample_index": [0] * 4,
            "level": pd.array([p.level for p in problems], dtype="Int64"),
            "completion": completions,
            "correct": [True, True, False, True],
        }
    )
    out = greedy_by_level(greedy, problems, "arith")
    assert out["greedy_per_level"] == {
        "1": {"problems": 2, "pass@1": 0.5, "pass@1_process": 0.5},
        "2": {"problems": 2, "pass@1": 1.0, "pass@1_process": 0.5},
    }
    assert out["pass@1_greedy_process"] == 0.5
    # No exact check for GSM8K: by answer only.
    assert greedy_by_level(greedy, problems, "gsm8k") == {
        "greedy_per_level": {"1": {"problems": 2, "pass@1": 0.5}, "2": {"problems": 2, "pass@1": 1.0}}
    }


def test_evaluation_stage_on_a_tiny_model(tmp_path: Path) -> None:
    checkpoint = models.resolve_checkpoint(TINY)
    target = EvalTarget("base", f"base/{TINY.name}", TINY)
    run = EvalRun.of_base(tmp_path, DATASET.name, TINY.name, 0)
    assert run.path == tmp_path / "eval/toy/base/tiny_random/seed0" and run.target == "base/tiny_random"
    plan_args = dict(run=run, model=TINY, dataset=DATASET, problems=PROBLEMS[:3], num_samples=3,
                     temperature=1.0, max_new_tokens=8, chunk_size=2, seed=0)  # fmt: skip
    plans = plan_runs(**plan_args)
    started = []

    def make_engine():
        started.append(1)
        return build_engine(checkpoint, "hf")

    with LazyEngine(make_engine) as engine:
        summary = run_evaluation(run, target, plans, engine, ks=(1, 2), progress=False)
    assert len(started) == 1, "greedy and sampled runs share one engine"
    assert (
        plans["greedy"].run.path == run.path / "greedy" and plans["sampled"].run.path == run.path / "sampled"
    )
    greedy = pd.read_parquet(run.path / "greedy/samples.parquet")
    sampled = pd.read_parquet(run.path / "sampled/samples.parquet")
    assert len(greedy) == 3 and len(sampled) == 9
    # The summary's metrics are those of the two tables the runs wrote.
    for key, value in accuracy_metrics(greedy, sampled, (1, 2)).items():
        assert summary[key] == value, key
    assert summary["num_problems"] == 3 and summary["split"] == "test" and summary["kind"] == "base"
    assert {"pass@1_greedy", "mean@3", "maj@1", "maj@2", "maj@3", "pass@1", "pass@2", "pass@3"} <= set(
        summary
    )
    assert summary["target"] == "base/tiny_random" and summary["model"] == "tiny_random"
    assert summary["runs"] == {"greedy": str(run.path / "greedy"), "sampled": str(run.path / "sampled")}
    assert run.is_finished() and run.summary_path == run.path / "eval_summary.json"
    assert json.loads((run.path / "eval_summary.json").read_text()) == summary
    # Finished: no engine is started again.
    with LazyEngine(make_engine) as engine:
        assert run_evaluation(run, target, plans, engine, progress=False) == summary
        assert not engine.started
    assert len(started) == 1
    # Nor is it taken for the evaluation of another model: a retrained student keeps its name and folder,
    # so its training run's finish time is part of the evaluation's config (before the fix: returned as done).
    trained = {"label": "self_improvement/tiny_random/wc-high-compute", "finished_at": "2026-12-02T10:00"}
    retrained = plan_runs(**plan_args, trained=trained)
    refused = pytest.raises(runs.RunError, match=r"different config \(trained: None -> ")
    with refused, LazyEngine(make_engine) as engine:
        run_evaluation(run, target, retrained, engine, progress=False)
    assert len(started) == 1


def test_students_of_two_seeds_finished_in_one_second_are_two_students(tmp_path: Path) -> None:
    """A greedy evaluation takes the generations of a finished one of the same model whatever its seed
    (sample_prefix: a base model's are generated once for all seeds). Two seeds' students of one training
    label are two models, even when they finished in the same second, as two side by side did in the
    embedded study (seed 1 was then scored on seed 0's generations: 0.150 for both, 0.160 its own)."""
    checkpoint = models.resolve_checkpoint(TINY)
    targets = []
    for seed in (0, 1):
        trained = TrainRun.of(
            tmp_path, DATASET.name, "knowledge_distillation", TINY.name, "wc", "high", "compute", seed
        )
        summary = {"dataset": DATASET.name, "model_dir": checkpoint, "seed": seed,
                   "finished_at": "2026-12-04T04:52:03+0000"}  # fmt: skip
        runs.atomic_write_json(trained.path / "train_summary.json", summary)
        targets.append(
            (
                EvalRun.of_student(tmp_path, DATASET.name, trained, seed),
                student_target(trained, DATASET.name, TINY),
            )
        )
    assert targets[0][1].trained != targets[1][1].trained
    summaries = []
    for seed, (run, target) in enumerate(targets):
        plans = plan_runs(run=run, model=target.model, dataset=DATASET, problems=PROBLEMS[:3], num_samples=0,
                          temperature=1.0, max_new_tokens=6, chunk_size=2, seed=seed, trained=target.trained)  # fmt: skip
        with LazyEngine(lambda: build_engine(checkpoint, "hf")) as engine:
            run_evaluation(run, target, plans, engine, progress=False)
            assert engine.started, f"seed {seed}'s student must generate its own greedy completions"
        summaries.append(json.loads((run.path / "greedy/summary.json").read_text()))
    assert summaries[1]["derived_from"] is None
    # A base model's greedy evaluation is still generated once for all seeds.
    base = [EvalRun.of_base(tmp_path, DATASET.name, TINY.name, seed) for seed in (0, 1)]
    target = EvalTarget("base", f"base/{TINY.name}", TINY)
    for seed, run in enumerate(base):
        plans = plan_runs(run=run, model=TINY, dataset=DATASET, problems=PROBLEMS[:3], num_samples=0,
                          temperature=1.0, max_new_tokens=6, chunk_size=2, seed=seed)  # fmt: skip
        with LazyEngine(lambda: build_engine(checkpoint, "hf")) as engine:
            run_evaluation(run, target, plans, engine, progress=False)
            assert engine.started == (seed == 0)
    derived = json.loads((base[1].path / "greedy/summary.json").read_text())["derived_from"]
    assert derived["run"] == str(base[0].path / "greedy")


def test_student_checkpoint_errors(tmp_path: Path) -> None:
    trained = TrainRun.of(tmp_path, "arith", "self_improvement", "tiny_random", "wc", "high", "compute", 0)
    run = trained.path
    assert run == tmp_path / "train/arith/self_improvement/tiny_random/wc-high-compute/seed0"
    with pytest.raises(runs.RunError, match=r"is missing.*train it first: python run_train\.py"):
        student_target(trained, "arith", TINY)
    run.mkdir(parents=True)
    with pytest.raises(runs.RunError, match="unfinished"):
        student_target(trained, "arith", TINY)
    runs.atomic_write_json(
        run / "train_summary.json",
        {
            "dataset": "gsm8k",
            "model_dir": str(trained.model_dir),
            "regime": "self_improvement",
            "student": "tiny_random",
        },
    )
    with pytest.raises(runs.RunError, match="trained on 'gsm8k', not on 'arith'"):
        student_target(trained, "arith", TINY)
    with pytest.raises(runs.RunError, match="not a Hugging Face checkpoint"):
        student_target(trained, "gsm8k", TINY)
    # Exported: the student's own model config, loaded from the exported folder.
    trained.model_dir.mkdir()
    (trained.model_dir / "config.json").write_text("{}")
    target = student_target(trained, "gsm8k", TINY)
    assert (target.kind, target.name) == ("student", "self_improvement/tiny_random/wc-high-compute")
    assert target.model.origin == "local" and target.model.path == str(run / "model")
    assert (target.model.name, target.model.params) == (TINY.name, TINY.params)
    assert target.train_summary["student"] == "tiny_random"


def test_student_evaluation_takes_the_engine_settings_of_the_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paper's weak-to-strong student (Gemma2-27B) evaluated under eval.yaml, whose default model is
    the embedded Gemma-3-270M: vLLM must get the student's tensor-parallel size (2, what its SLURM job
    asks GPUs for) and max length (4096). A 27B engine cannot start here, so the engine start is the one
    call this test replaces (it records the settings and stops)."""
    from hydra import compose, initialize_config_dir

    from compute_optimal.stages import common
    from compute_optimal.stages import evaluate as evaluate_stage

    trained = TrainRun.of(tmp_path, "arith", "weak_to_strong", "gemma2_27b", "wc", "high", "compute", 0)
    run = trained.path
    trained.model_dir.mkdir(parents=True)
    (trained.model_dir / "config.json").write_text("{}")
    runs.atomic_write_json(run / runs.SIGNATURE, {"hparams": {"num_shots": 0}})
    summary = {"dataset": "arith", "regime": "weak_to_strong", "student": "gemma2_27b"}
    runs.atomic_write_json(run / "train_summary.json", {**summary, "model_dir": str(trained.model_dir)})
    monkeypatch.setenv("COMPUTE_OPTIMAL_OUTPUTS", str(tmp_path))
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            config_name="eval",
            overrides=[
                "task=evaluate",
                "pair=gemma2",
                "task.student.regime=weak_to_strong",
                "task.student.sampler=wc",
                "task.limit=2",
                "logger=none",
                "site=example_cluster",
            ],
        )
    started = {}

    class Started(Exception):
        pass

    real_engine_for = evaluate_stage.engine_for

    def engine_for(model, engine, seed):
        started.update(model=model)
        return real_engine_for(model, engine, seed)

    def build_engine(checkpoint, backend, **settings):
        started.update(checkpoint=checkpoint, settings=settings)
        raise Started

    monkeypatch.setattr(evaluate_stage, "engine_for", engine_for)
    monkeypatch.setattr(common, "build_engine", build_engine)
    with pytest.raises(Started):
        evaluate_stage.run(cfg)
    vllm = started["settings"]["vllm"]
    assert (vllm["tensor_parallel_size"], vllm["max_model_len"]) == (2, 4096)
    assert vllm["tensor_parallel_size"] == cfg.resources.gpus_per_node  # the job asks for what vLLM uses
    model = started["model"]
    assert model.path == str(run / "model") == started["checkpoint"] and model.origin == "local"
    assert model.name == "gemma2_27b" and model.tensor_parallel_size == 2
