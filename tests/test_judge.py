"""The false-positive-rate methods: the judge prompt and its strict parser, a real (tiny) judge model,
and human label sheets exported and imported."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from compute_optimal import judge, models
from compute_optimal.analysis import AnalysisError
from compute_optimal.engines import Completion, Engine, Generation, build_engine
from compute_optimal.resolvers import model_config
from compute_optimal.specs import Model

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("Step 1: CORRECT\nStep 2: CORRECT\nVERDICT: CORRECT", "correct"),
        ("Step 1: INCORRECT (18 - 6 = 12)\nVERDICT: INCORRECT\n", "incorrect"),
        ("verdict: incorrect.", "incorrect"),
        ("**VERDICT: CORRECT**", "correct"),
        ("VERDICT: **INCORRECT**", "incorrect"),
        ("  Final verdict: Correct", "correct"),
        ("VERDICT：CORRECT", "correct"),  # full-width colon
        ("VERDICT: CORRECT\n\nVERDICT: CORRECT", "correct"),  # repeated, consistent
        ("VERDICT: CORRECT\nVERDICT: INCORRECT", "unknown"),  # contradictory
        ("VERDICT: PARTIALLY CORRECT", "unknown"),
        ("VERDICT: CORRECT or INCORRECT", "unknown"),
        ("VERDICT - CORRECT", "unknown"),
        ("VERDICT:", "unknown"),
        ("The solution is correct.", "unknown"),
        ("Step 1: CORRECT\nStep 2: CORRECT", "unknown"),  # no final verdict
        ("", "unknown"),
        ("Verdicts are hard. CORRECT", "unknown"),
    ],
)
def test_parse_verdict(text: str, verdict: str) -> None:
    assert judge.parse_verdict(text) == verdict


def test_prompt_numbers_the_steps_and_ends_where_the_judge_writes() -> None:
    prompt = judge.render_judge_prompt("Ann has 2 apples. How many?", "2", "She has 2. The answer is 2.")
    assert prompt.endswith("### Solution\n[1] She has 2.\n[2] The answer is 2.\n### Evaluation\n")
    assert "VERDICT: CORRECT" in prompt and "VERDICT: INCORRECT" in prompt
    assert judge.split_steps("line one\n\nline two") == ["line one", "line two"]
    assert judge.split_steps("3.5 + 1 = 4.5. So 4.5.") == ["3.5 + 1 = 4.5.", "So 4.5."]


def samples() -> pd.DataFrame:
    rows = []
    for p in range(6):
        for k in range(3):
            ok = p < 4 and k != 2  # p0-p3: samples 0 and 1 correct; p4, p5: none
            rows.append(
                {
                    "problem_id": f"p{p}",
                    "sample_index": k,
                    "gold_answer": str(p),
                    "completion": f"solution {k} of p{p}",
                    "correct": ok,
                }
            )
    return pd.DataFrame(rows)


def test_select_items_samples_correct_solutions_reproducibly() -> None:
    kw = dict(dataset="arith", model="m", budget="low-compute", questions={"p1": "Q1"})
    items = judge.select_items(samples(), num_problems=3, per_problem=1, seed=0, **kw)
    assert len(items) == 3 and len({i.problem_id for i in items}) == 3
    assert all(i.problem_id in {"p0", "p1", "p2", "p3"} and i.sample_index in (0, 1) for i in items)
    assert items == judge.select_items(samples(), num_problems=3, per_problem=1, seed=0, **kw)
    every = judge.select_items(samples(), num_problems=50, per_problem=5, seed=0, **kw)
    assert len(every) == 8  # 4 problems with a correct solution, 2 correct solutions each
    assert {i.item_id for i in every} == {f"m/low-compute/p{p}/{k}" for p in range(4) for k in (0, 1)}
    assert next(i for i in every if i.problem_id == "p1").question == "Q1"


def test_fpr_counts_unknown_apart() -> None:
    fpr = judge.fpr_from_verdicts(
        ["correct", "incorrect", "unknown", "incorrect", "garbage"], "LLM judge (x)"
    )
    assert (fpr.correct, fpr.incorrect, fpr.unknown, fpr.rated) == (1, 2, 2, 3)
    assert fpr.value == pytest.approx(2 / 3)
    low, high = fpr.interval
    assert low < 2 / 3 < high
    assert fpr.as_dict()["fpr"] == pytest.approx(2 / 3) and fpr.as_dict()["method"] == "LLM judge (x)"
    empty = judge.fpr_from_verdicts(["unknown"], "x")
    assert empty.value is None and empty.interval == (0.0, 1.0)


def test_calibration_against_reference_verdicts_by_hand() -> None:
    pairs = (
        [("incorrect", "incorrect")] * 3  # TP
        + [("incorrect", "correct")]  # FP
        + [("correct", "incorrect")] * 2  # FN
        + [("correct", "correct")] * 4  # TN
        + [("unknown", "incorrect"), ("garbage", "correct")]  # the judge gave no verdict
        + [("incorrect", "unknown")]  # no reference verdict
    )
    c = judge.calibrate(pairs)
    assert (c.tp, c.fp, c.fn, c.tn, c.unknown, c.unreferenced, c.rated) == (3, 1, 2, 4, 2, 1, 10)
    # p_o = 7/10; the judge says incorrect 4/10, the reference 5/10: p_e = .4*.5 + .6*.5 = .5.
    assert c.agreement == pytest.approx(0.7) and c.kappa == pytest.approx((0.7 - 0.5) / (1 - 0.5))
    assert c.precision == pytest.approx(3 / 4) and c.recall == pytest.approx(3 / 5)
    assert c.as_dict()["kappa"] == pytest.approx(0.4) and c.as_dict()["rated"] == 10
    # Undefined where nothing was rated or both sides agree on one verdict throughout.
    empty = judge.calibrate([("unknown", "correct")])
    assert empty.rated == 0 and empty.agreement is empty.kappa is empty.precision is None
    same = judge.calibrate([("correct", "correct")] * 3)
    assert same.agreement == 1.0 and same.kappa is None and same.recall is None
    # Perfect disagreement on a balanced set: kappa -1.
    assert judge.calibrate([("correct", "incorrect"), ("incorrect", "correct")]).kappa == pytest.approx(-1.0)


class ScriptedEngine(Engine):
    """Replies with fixed texts: the parsing and counting around a judge, without a model."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.requests = []

    def generate(self, requests, settings):
        self.requests += list(requests)
        return [Generation(10, (Completion(self.replies.pop(0), 5, "stop"),)) for _ in requests]


def items(n: int) -> list[judge.JudgeItem]:
    frame = samples()
    return judge.select_items(
        frame, dataset="arith", model="m", budget="low-compute", num_problems=n, per_problem=1
    )


def test_judge_solutions_parses_every_reply() -> None:
    engine = ScriptedEngine(["Step 1: CORRECT\nVERDICT: CORRECT", "I think it is fine", "VERDICT: INCORRECT"])
    verdicts = judge.judge_solutions(engine, items(3), judge.JudgeSettings(batch_size=2))
    assert [v.verdict for v in verdicts] == ["correct", "unknown", "incorrect"]
    assert all(r.n == 1 for r in engine.requests) and len(engine.requests) == 3
    fpr = judge.fpr_from_verdicts([v.verdict for v in verdicts], "LLM judge (scripted)")
    assert (fpr.correct, fpr.incorrect, fpr.unknown) == (1, 1, 1)


def test_a_real_tiny_judge_is_never_counted_as_correct_by_default() -> None:
    """A random-weight model writes no parseable verdict: every such verdict is unknown, none correct."""
    tiny = Model.from_config(model_config("tiny_random", CONF))
    todo = items(3)
    with build_engine(models.resolve_checkpoint(tiny), "hf") as engine:
        verdicts = judge.judge_solutions(engine, todo, judge.JudgeSettings(max_new_tokens=12))
    assert [v.item_id for v in verdicts] == [i.item_id for i in todo]
    for v in verdicts:
        assert v.verdict == judge.parse_verdict(v.output)
    fpr = judge.fpr_from_verdicts([v.verdict for v in verdicts], "LLM judge (tiny_random)")
    assert fpr.unknown == sum(v.verdict == "unknown" for v in verdicts)
    assert fpr.correct == sum(v.verdict == "correct" for v in verdicts)
    assert fpr.unknown + fpr.rated == 3


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_sheet_round_trip(tmp_path: Path, suffix: str) -> None:
    todo = items(4)
    path = judge.export_sheet(tmp_path / f"sheet{suffix}", todo)
    with pytest.raises(AnalysisError, match="already exists"):
        judge.export_sheet(path, todo)
    sheet = judge.import_sheet(path)
    assert list(sheet.columns) == judge.SHEET_COLUMNS and (sheet["label"] == "").all()
    assert sorted(sheet["item_id"]) == sorted(i.item_id for i in todo)
    assert set(sheet["completion"]) == {i.completion for i in todo}
    # Label three of four (mixed case and spaces), leave one blank.
    labels = {0: " Correct", 1: "INCORRECT", 2: "incorrect", 3: ""}
    labelled = sheet.assign(label=[labels[i] for i in range(len(sheet))])
    out = tmp_path / f"labelled{suffix}"
    if suffix == ".csv":
        labelled.to_csv(out, index=False)
    else:
        labelled.to_json(out, orient="records", lines=True)
    fpr = judge.human_fpr(judge.import_sheet(out), "human labels (labelled)")
    assert list(fpr) == [("m", "low-compute")]
    f = fpr["m", "low-compute"]
    assert (f.correct, f.incorrect, f.unknown) == (1, 2, 1) and f.value == pytest.approx(2 / 3)


def test_bad_sheets_are_refused_with_the_row_named(tmp_path: Path) -> None:
    path = judge.export_sheet(tmp_path / "sheet.csv", items(3))
    sheet = pd.read_csv(path, dtype=str, keep_default_na=False)
    sheet.loc[1, "label"] = "maybe"
    sheet.to_csv(path, index=False)
    with pytest.raises(AnalysisError, match=r"row 2 \(item_id m/low-compute/.*'maybe'"):
        judge.import_sheet(path)
    sheet.drop(columns=["label"]).to_csv(path, index=False)
    with pytest.raises(AnalysisError, match="lacks the column"):
        judge.import_sheet(path)
    sheet.loc[1, "label"] = "correct"
    pd.concat([sheet, sheet.iloc[[0]]]).to_csv(path, index=False)
    with pytest.raises(AnalysisError, match="more than once"):
        judge.import_sheet(path)
    with pytest.raises(AnalysisError, match="does not exist"):
        judge.import_sheet(tmp_path / "missing.csv")
    with pytest.raises(AnalysisError, match=r"\.csv or \.jsonl"):
        judge.export_sheet(tmp_path / "sheet.xlsx", items(1))
