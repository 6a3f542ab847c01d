"""The budget sweep: WC vs SE sample quality as a curve over sampling budgets, not two points.

Input: the compute-matched sampling runs (``runs.SampleRun``, found by config as the data report finds
them) of the pair's WC and SE model at budgets ``custom-s<n>`` (``budget=custom
budget.reference_samples=<n>``: FLOPs of n SE samples per problem; WC gets ``n·P_SE/P_WC``), and,
optionally, the students trained on each side's data at some of those budgets (the study report's
cells). Output: ``report.md``, ``budget_sweep.json`` and PNGs of coverage, diversity and the
false-positive rate against FLOPs per problem, the crossover (the smallest budget from which on SE's
coverage is at least WC's at every budget compared) in the headline.

FLOPs per problem come from each run's summary (``budget_flops_per_problem``, what the sampling stage
recorded from :mod:`compute_optimal.budget`, and its measured ledger); only a run whose summary lacks
them falls back to the budget arithmetic the caller passes in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from .. import process_check, runs
from ..analysis import ALL_LEVELS, AnalysisError
from ..judge import FPR
from . import plots
from .comparison import COMPUTE, RunData, RunRef, check_pair, load_run
from .study_report import Comparison

REPORT, DATA = "report.md", "budget_sweep.json"
FIGURES = {
    "coverage": "coverage_vs_flops.png",
    "diversity": "diversity_vs_flops.png",
    "fpr": "fpr_vs_flops.png",
    "students": "students_vs_flops.png",
}
ROLES = ("WC", "SE")
RECIPE = "python -m compute_optimal.recipes sweeps/budget_sweep.yaml"
_TIE = 1e-12  # coverage "≥": float round-off of equal shares is not a win for WC


def budget_name(reference_samples: int) -> str:
    """The budget folder name of ``budget=custom budget.reference_samples=<n>``: ``custom-s<n>``."""
    return f"custom-s{reference_samples}"


# --- the runs --------------------------------------------------------------------------------------


@dataclass(eq=False)
class SweepPoint:
    """One model at one budget: its run (where it lives, how to make it) and, when finished, its data."""

    role: str  # "WC" or "SE"
    model: str
    reference_samples: int
    ref: RunRef
    data: RunData | None = None
    fpr: FPR | None = None  # the checker's rate over every answer-correct sample (None: not measured)

    @property
    def done(self) -> bool:
        return self.data is not None

    def summary_value(self, key: str) -> Any:
        return None if self.data is None else self.data.summary.get(key)

    def at_all_samples(self, curve: str) -> float | None:
        """coverage_at_k / diversity_at_k at k = all the run's samples."""
        return None if self.data is None else self.data.at(curve, self.data.samples)

    def measured_flops_per_problem(self) -> float | None:
        measured, problems = self.summary_value("measured_flops"), self.summary_value("num_problems")
        return None if measured is None or not problems else float(measured) / int(problems)


@dataclass(frozen=True)
class Crossover:
    """The smallest budget (among those with both runs finished) from which on SE's coverage ≥ WC's at
    every budget: a lasting crossover, not one budget's noise."""

    compared: tuple[int, ...]  # budgets (reference samples) with both runs finished, ascending
    reference_samples: int | None = None  # None: SE does not stay at or above WC up to the largest budget
    flops_per_problem: float | None = None
    coverage_se: float | None = None
    coverage_wc: float | None = None
    se_reaches: tuple[int, ...] = ()  # every compared budget at which SE's coverage ≥ WC's

    @property
    def found(self) -> bool:
        return self.reference_samples is not None

    def sentence(self) -> str:
        if not self.compared:
            return "No budget has both the WC and the SE run finished: the crossover is unknown."
        if not self.found:
            low, high = self.compared[0], self.compared[-1]
            sentence = f"SE does not overtake WC between {low} and {high} reference samples."
            if self.se_reaches:
                at = ", ".join(str(n) for n in self.se_reaches)
                sentence += (
                    f" SE's coverage reaches WC's at {at} reference sample(s), but WC leads again at a larger "
                    "budget: noise at that budget, not a crossover."
                )
            return sentence
        n = self.reference_samples
        where = f"{n} reference sample{'s' if n != 1 else ''} ({_flops(self.flops_per_problem)} FLOPs per problem)"
        numbers = f"coverage SE {self.coverage_se:.3f} ≥ WC {self.coverage_wc:.3f}"
        if n == self.compared[0]:
            return f"SE's coverage is already ≥ WC's at the smallest budget, {where}: {numbers}."
        return f"SE overtakes WC at {where}: {numbers}."

    def as_dict(self) -> dict[str, Any]:
        return {
            "compared": list(self.compared),
            "reference_samples": self.reference_samples,
            "budget": None if self.reference_samples is None else budget_name(self.reference_samples),
            "flops_per_problem": self.flops_per_problem,
            "coverage_se": self.coverage_se,
            "coverage_wc": self.coverage_wc,
            "se_reaches": list(self.se_reaches),
            "sentence": self.sentence(),
        }


@dataclass
class BudgetSweep:
    """Everything the sweep report shows; tables hold raw numbers (formatting is the report's job)."""

    dataset: str
    wc_model: str
    se_model: str
    seed: int
    reference_samples: list[int]
    points: list[SweepPoint]
    near_duplicate: float | None = None
    budget_flops: dict[int, float | None] = field(default_factory=dict)  # fallback: budget.py's B per n
    fpr_method: str | None = None  # process_check's method; None: not measured
    fpr_label: str | None = None
    fpr_definition: str | None = None
    fpr_note: str = "not measured"
    students: dict[int, Comparison] = field(default_factory=dict)  # reference samples -> the study cells
    regime: str | None = None
    trainings: dict[tuple[int, str], runs.TrainRun] = field(default_factory=dict)  # (n, wc|se) -> run
    warnings: list[str] = field(default_factory=list)

    def point(self, role: str, reference_samples: int) -> SweepPoint:
        return next(p for p in self.points if p.role == role and p.reference_samples == reference_samples)

    def missing(self) -> list[SweepPoint]:
        return [p for p in self.points if not p.done]

    def flops(self, reference_samples: int) -> tuple[float | None, str | None]:
        """FLOPs per problem of a budget and where they come from: a finished run's summary (the
        sampling stage's ``budget_flops_per_problem``), else the budget arithmetic (budget.py)."""
        for role in ("SE", "WC"):
            found = [p for p in self.points if p.role == role and p.reference_samples == reference_samples]
            value = found[0].summary_value("budget_flops_per_problem") if found else None
            if value is not None:
                return float(value), "summary"
        value = self.budget_flops.get(reference_samples)
        return (None, None) if value is None else (float(value), "budget.py")

    def table(self) -> pd.DataFrame:
        """One row per budget and model (WC first): the data's numbers, or the command of a missing run."""
        return pd.DataFrame([self._row(p) for p in self.points])

    def _row(self, p: SweepPoint) -> dict[str, Any]:
        flops, source = self.flops(p.reference_samples)
        row: dict[str, Any] = {
            "role": p.role,
            "model": p.model,
            "reference_samples": p.reference_samples,
            "budget": p.ref.budget_dir,
            "flops_per_problem": flops,
            "flops_source": source,
            "missing": not p.done,
            "state": p.ref.run.state(),
            "run_dir": str(p.ref.run.path),
            "command": p.ref.run.command,
        }
        if p.data is None:
            return row
        frame = p.data.frame
        fpr = p.fpr.as_dict() if p.fpr is not None else {}
        row.update(
            samples_per_problem=p.data.samples,
            num_problems=int(frame["problem_id"].nunique()),
            measured_flops_per_problem=p.measured_flops_per_problem(),
            accuracy=float(frame["correct"].astype(bool).mean()),
            coverage=p.at_all_samples("coverage_at_k"),
            diversity=p.at_all_samples("diversity_at_k"),
            distinct_correct=int(p.data.quality["distinct_correct"]),
            fpr=fpr.get("fpr"),
            fpr_ci_low=fpr.get("ci_low"),
            fpr_ci_high=fpr.get("ci_high"),
            fpr_rated=fpr.get("rated"),
            fpr_incorrect=fpr.get("incorrect"),
            fpr_unknown=fpr.get("unknown"),
        )
        return row

    def crossover(self) -> Crossover:
        return find_crossover(self)

    def student_table(self) -> pd.DataFrame:
        """One row per student budget: test pass@1 (greedy) of the base student and after WC / SE data."""
        rows = []
        for n, c in sorted(self.students.items()):
            diff = c.difference or (None, None, None)
            rows.append(
                {
                    "reference_samples": n,
                    "budget": c.budget,
                    "flops_per_problem": self.flops(n)[0],
                    "regime": c.regime,
                    "student": c.student,
                    "base": c.base.metric("pass@1_greedy"),
                    "wc": c.wc.metric("pass@1_greedy"),
                    "se": c.se.metric("pass@1_greedy"),
                    "wc_minus_se": diff[0],
                    "ci_low": diff[1],
                    "ci_high": diff[2],
                    "num_problems": c.num_problems,
                    "missing_commands": [cell.run.command for cell in (c.wc, c.se) if not cell.done],
                }
            )
        return pd.DataFrame(rows)

    def missing_students(self) -> list[dict[str, Any]]:
        """Every student cell (base included) not evaluated yet: its budget, label, folder and the commands
        that make it (the training first, where it is not finished either)."""
        found, seen = [], set()
        for n, c in sorted(self.students.items()):
            for sampler, cell in (("base", c.base), ("wc", c.wc), ("se", c.se)):
                if cell.done or cell.run.path in seen:
                    continue
                seen.add(cell.run.path)
                commands = [cell.run.command]
                trained = self.trainings.get((n, sampler))
                if trained is not None and not trained.is_finished():
                    commands.insert(0, trained.command)
                found.append(
                    {
                        "reference_samples": n,
                        "label": cell.label,
                        "run_dir": str(cell.run.path),
                        "commands": commands,
                    }
                )
        return found


def find_sweep(
    outputs: str | Path,
    *,
    dataset: str,
    wc_model: str,
    se_model: str,
    reference_samples: Sequence[int],
    seed: int = 0,
    near_duplicate: float | None = None,
    budget_flops: Mapping[int, float | None] | None = None,
) -> BudgetSweep:
    """Find both models' compute-matched runs at every budget and load the finished ones.

    Missing or unfinished runs become rows with their command; none finished at all is a RunError
    naming the first command, raised before anything is loaded.
    """
    budgets = _budgets(reference_samples)
    if wc_model == se_model:
        raise AnalysisError(f"WC and SE are the same model ({wc_model}): nothing to compare")
    outputs = Path(outputs)
    points = [
        SweepPoint(role, model, n, RunRef(outputs, dataset, model, budget_name(n), COMPUTE, seed))
        for n in budgets
        for role, model in (("WC", wc_model), ("SE", se_model))
    ]
    if all(p.ref.problem() for p in points):
        raise runs.RunError(
            f"the {dataset} budget sweep of {wc_model} vs {se_model} (seed {seed}) found no finished sampling "
            f"run at budgets {', '.join(budget_name(n) for n in budgets)}: make them first, e.g. "
            f"{points[0].ref.run.command} (every run of the sweep: {RECIPE})"
        )
    sweep = BudgetSweep(
        dataset, wc_model, se_model, seed, budgets, points, near_duplicate, dict(budget_flops or {})
    )
    for p in points:
        if p.ref.problem() is None:
            p.data = load_run(p.ref, near_duplicate)
    for n in budgets:
        wc, se = sweep.point("WC", n), sweep.point("SE", n)
        if wc.data is not None and se.data is not None:
            sweep.warnings += check_pair(wc.data, se.data)
    return sweep


def _budgets(reference_samples: Sequence[int]) -> list[int]:
    budgets = sorted({int(n) for n in reference_samples})
    if not budgets:
        raise AnalysisError("no budgets to sweep (task.reference_samples is empty)")
    if budgets[0] < 1:
        raise AnalysisError(f"task.reference_samples must all be >= 1, got {list(reference_samples)}")
    return budgets


def find_crossover(sweep: BudgetSweep) -> Crossover:
    """The smallest budget, among those with both runs finished, from which on SE's coverage@S ≥ WC's at
    every budget compared."""
    compared = tuple(
        sorted(n for n in sweep.reference_samples if sweep.point("WC", n).done and sweep.point("SE", n).done)
    )
    coverage = {
        n: (
            sweep.point("SE", n).at_all_samples("coverage_at_k"),
            sweep.point("WC", n).at_all_samples("coverage_at_k"),
        )
        for n in compared
    }
    reaches = tuple(
        n for n, (se, wc) in coverage.items() if se is not None and wc is not None and se >= wc - _TIE
    )
    lasting = [n for i, n in enumerate(compared) if set(compared[i:]) <= set(reaches)]
    if not lasting:
        return Crossover(compared, se_reaches=reaches)
    n = lasting[0]
    return Crossover(compared, n, sweep.flops(n)[0], *coverage[n], se_reaches=reaches)


def add_fpr(
    sweep: BudgetSweep,
    checker: process_check.ProcessFPR | None,
    problems: Mapping[str, Any] | None,
    *,
    answer_format: str,
) -> process_check.ProcessFPR | None:
    """The checker's false-positive rate (with its Wilson interval) of every finished run, as the data
    report measures it: the exact process check on arith (``problems``: id -> Problem with its reference
    solution), the arithmetic check on GSM8K (a lower bound), none elsewhere (said in the report)."""
    if checker is None:
        sweep.fpr_note = (
            f"not measured: the {answer_format!r} answer format has no process checker (exact on arith, a "
            "lower bound on GSM8K), and this report runs no model; the data report measures it with an LLM "
            "judge or human labels (run_eval.py task=data_report task.fpr.method=judge|human)"
        )
        return None
    sweep.fpr_method, sweep.fpr_label, sweep.fpr_definition = (
        checker.method,
        checker.label,
        checker.definition,
    )
    for p in sweep.points:
        if p.data is None:
            continue
        verdicts = process_check.sample_verdicts(p.data.frame, problems)
        checker.add_run(p.model, p.ref.budget_dir, verdicts)
        p.fpr = checker.rates[p.model, p.ref.budget_dir][ALL_LEVELS]
    sweep.fpr_note = f"{checker.method} over every answer-correct sample of each run"
    return checker


# --- formatting ------------------------------------------------------------------------------------


def _missing_value(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: Any, digits: int = 3) -> str:
    return "–" if _missing_value(value) else f"{value:.{digits}f}"


def _flops(value: Any) -> str:
    return "–" if _missing_value(value) else f"{value:.3g}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame of display strings as a Markdown table (pipes in cells escaped)."""
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def _fpr_cell(r: Mapping[str, Any]) -> str:
    if _missing_value(r.get("fpr")):
        return "–" if _missing_value(r.get("fpr_rated")) else f"– (0 rated, {int(r['fpr_unknown'])} unknown)"
    return f"{r['fpr']:.3f} [{r['fpr_ci_low']:.3f}, {r['fpr_ci_high']:.3f}] ({int(r['fpr_incorrect'])}/{int(r['fpr_rated'])})"


def sweep_markdown(sweep: BudgetSweep) -> str:
    """The per-budget table: one row per model and budget, a missing run's row with its command."""
    rows = []
    for r in sweep.table().to_dict("records"):
        head = [r["role"], r["model"], str(r["reference_samples"]), _flops(r["flops_per_problem"])]
        if r["missing"]:
            rows.append([*head, f"{r['state']}: make it with `{r['command']}`", *["–"] * 6])
            continue
        rows.append(
            [
                *head,
                str(int(r["samples_per_problem"])),
                _flops(r["measured_flops_per_problem"]),
                _num(r["accuracy"]),
                _num(r["coverage"]),
                _num(r["diversity"], 2),
                _fpr_cell(r),
                str(int(r["num_problems"])),
            ]
        )
    columns = [
        "role",
        "model",
        "reference samples",
        "FLOPs / problem",
        "S (samples / problem)",
        "measured FLOPs / problem",
        "per-sample accuracy",
        "coverage@S",
        "diversity@S",
        "FPR [95% Wilson] (wrong / rated)",
        "problems",
    ]
    return markdown_table(pd.DataFrame(rows, columns=columns))


def students_markdown(sweep: BudgetSweep) -> str:
    rows = []
    for r in sweep.student_table().to_dict("records"):
        diff = (
            "–"
            if _missing_value(r["wc_minus_se"])
            else f"{r['wc_minus_se']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        )
        rows.append(
            [
                str(r["reference_samples"]),
                _flops(r["flops_per_problem"]),
                f"{r['regime']} / {r['student']}",
                _num(r["base"]),
                _num(r["wc"]),
                _num(r["se"]),
                diff,
                str(r["num_problems"] or "–"),
            ]
        )
    columns = [
        "reference samples",
        "FLOPs / problem",
        "regime / student",
        "base",
        "after WC data",
        "after SE data",
        "WC − SE (95% CI)",
        "problems",
    ]
    return markdown_table(pd.DataFrame(rows, columns=columns))


def headline(sweep: BudgetSweep) -> str:
    """The console message's and the report's first lines: the crossover and what is missing."""
    lines = [f"Crossover: {sweep.crossover().sentence()}"]
    if sweep.missing():
        lines.append(f"{len(sweep.missing())} sampling run(s) of the sweep are not finished (see the table).")
    return "\n".join(lines)


# --- figures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    label: str
    role: str  # the colour: "WC", "SE" (plots.COLOURS) or anything else (grey)
    points: Sequence[tuple[float, float, float | None, float | None]]  # x, y, interval low, high
    dashed: bool = False


def plot_vs_flops(
    path: Path,
    series: Sequence[Series],
    *,
    ylabel: str,
    title: str,
    ticks: Mapping[float, str],
    marker_x: float | None = None,
    ylim_top: float | None = None,
    dodge: float = 0.0,
) -> Path:
    """Lines against FLOPs per problem on a log-2 axis, with interval whiskers where given; ``dodge``
    shifts series apart by that fraction of a doubling, so that their whiskers do not hide each other."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for i, s in enumerate(series):
        shift = 2.0 ** ((i - (len(series) - 1) / 2) * dodge)
        xs, ys = [p[0] * shift for p in s.points], [p[1] for p in s.points]
        colour = plots.COLOURS.get(s.role, "#7f7f7f")
        style = {"linestyle": "--", "marker": None} if s.dashed else {"linestyle": "-", "marker": "o"}
        ax.plot(xs, ys, markersize=4, color=colour, label=s.label, **style)
        bars = [p for p in s.points if p[2] is not None and p[3] is not None]
        if bars:
            ax.errorbar(
                [p[0] * shift for p in bars],
                [p[1] for p in bars],
                yerr=[[max(0.0, p[1] - p[2]) for p in bars], [max(0.0, p[3] - p[1]) for p in bars]],
                fmt="none",
                ecolor=colour,
                capsize=3,
                lw=1,
                alpha=0.7,
            )
    if marker_x is not None:
        ax.axvline(marker_x, color="black", linestyle=":", linewidth=1, label="crossover")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ticks), list(ticks.values()), fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("sampling FLOPs per problem (reference samples of SE)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0, top=ylim_top)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=plots.DPI)
    return path


def _ticks(sweep: BudgetSweep, budgets: Sequence[int]) -> dict[float, str]:
    ticks = {}
    for n in budgets:
        x = sweep.flops(n)[0]
        if x is not None:
            ticks[x] = f"{x:.2g}\n(n={n})"
    return ticks


def _role_series(sweep: BudgetSweep, value: str) -> list[Series]:
    """WC's and SE's finished runs as lines: ``value`` is coverage, diversity or fpr (with its interval)."""
    out = []
    for role, model in (("WC", sweep.wc_model), ("SE", sweep.se_model)):
        pts = []
        for p in sweep.points:
            x = sweep.flops(p.reference_samples)[0]
            if p.role != role or not p.done or x is None:
                continue
            if value == "fpr":
                if p.fpr is None or p.fpr.value is None:
                    continue
                pts.append((x, p.fpr.value, *p.fpr.interval))
            else:
                pts.append((x, p.at_all_samples(f"{value}_at_k"), None, None))
        if pts:
            out.append(Series(f"{role} {model}", role, pts))
    return out


def _student_series(sweep: BudgetSweep) -> list[Series]:
    out = []
    for key, label, role in (("wc", "after WC data", "WC"), ("se", "after SE data", "SE")):
        pts = []
        for n, c in sorted(sweep.students.items()):
            x, y = sweep.flops(n)[0], getattr(c, key).metric("pass@1_greedy")
            if x is not None and y is not None:
                pts.append((x, float(y), None, None))
        if pts:
            out.append(Series(f"{next(iter(sweep.students.values())).student} {label}", role, pts))
    bases = [c.base.metric("pass@1_greedy") for c in sweep.students.values() if c.base.done]
    xs = [x for x in (sweep.flops(n)[0] for n in sweep.students) if x is not None]
    if bases and xs and out:
        out.append(
            Series(
                "base (before fine-tuning)",
                "base",
                [(min(xs), bases[0], None, None), (max(xs), bases[0], None, None)],
                dashed=True,
            )
        )
    return out


def draw_figures(sweep: BudgetSweep, folder: Path) -> dict[str, Path]:
    """coverage and diversity against FLOPs; the FPR where measured; the students where evaluated."""
    ticks = _ticks(sweep, sweep.reference_samples)
    cross = sweep.crossover()
    marker = cross.flops_per_problem if cross.found else None
    title = f"{sweep.dataset}: WC {sweep.wc_model} vs SE {sweep.se_model}"
    figures = {
        "coverage": plot_vs_flops(
            folder / FIGURES["coverage"],
            _role_series(sweep, "coverage"),
            ylabel="coverage@S (all samples)",
            title=f"{title}: coverage",
            ticks=ticks,
            marker_x=marker,
            ylim_top=1.05,
        ),
        "diversity": plot_vs_flops(
            folder / FIGURES["diversity"],
            _role_series(sweep, "diversity"),
            ylabel="distinct correct solutions per problem (diversity@S)",
            title=f"{title}: diversity",
            ticks=ticks,
        ),
    }
    fpr = _role_series(sweep, "fpr")
    if fpr:
        figures["fpr"] = plot_vs_flops(
            folder / FIGURES["fpr"],
            fpr,
            ylabel=f"false-positive rate ({sweep.fpr_label})",
            title=f"{title}: false-positive rate, 95% Wilson",
            ticks=ticks,
            ylim_top=1.05,
            dodge=0.08,
        )
    students = _student_series(sweep)
    if students:
        figures["students"] = plot_vs_flops(
            folder / FIGURES["students"],
            students,
            ylabel="test pass@1 (greedy)",
            title=f"{title}: students ({sweep.regime})",
            ticks=_ticks(sweep, sorted(sweep.students)),
        )
    return figures


# --- the report ------------------------------------------------------------------------------------


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe records: NaN -> None."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def sweep_data(sweep: BudgetSweep) -> dict[str, Any]:
    """Every number of the report, JSON-safe (budget_sweep.json)."""
    return {
        "dataset": sweep.dataset,
        "wc_model": sweep.wc_model,
        "se_model": sweep.se_model,
        "seed": sweep.seed,
        "matching": COMPUTE,
        "reference_samples": sweep.reference_samples,
        "rows": _records(sweep.table()),
        "crossover": sweep.crossover().as_dict(),
        "fpr": {
            "method": sweep.fpr_method,
            "label": sweep.fpr_label,
            "definition": sweep.fpr_definition,
            "note": sweep.fpr_note,
        },
        "regime": sweep.regime,
        "students": _records(sweep.student_table()),
        "missing_runs": [
            {
                "model": p.model,
                "reference_samples": p.reference_samples,
                "run_dir": str(p.ref.run.path),
                "command": p.ref.run.command,
            }
            for p in sweep.missing()
        ],
        "missing_students": sweep.missing_students(),
        "near_duplicate": sweep.near_duplicate,
        "warnings": sweep.warnings,
    }


def _students_section(sweep: BudgetSweep, figures: Mapping[str, Path]) -> list[str]:
    if not sweep.students:
        return []
    parts = [
        "",
        f"## Students ({sweep.regime})",
        "",
        "Test pass@1 (greedy) of the student fine-tuned on each side's data at these budgets; WC − SE with a "
        "95% paired bootstrap interval over test problems (as in the study report).",
        "",
        students_markdown(sweep),
    ]
    if "students" in figures:
        parts += ["", f"![students]({figures['students'].name})"]
    missing = sweep.missing_students()
    if missing:
        parts += ["", "Not evaluated yet:", ""]
        for m in missing:
            commands = " then ".join(f"`{c}`" for c in m["commands"])
            parts.append(f"- {m['label']} (n={m['reference_samples']}): {commands}")
    return parts


def render_markdown(sweep: BudgetSweep, figures: Mapping[str, Path]) -> str:
    s = sweep
    budgets = ", ".join(str(n) for n in s.reference_samples)
    fpr_figure = [f"![false-positive rate]({figures['fpr'].name})"] if "fpr" in figures else []
    parts = [
        f"# Budget sweep: WC `{s.wc_model}` vs SE `{s.se_model}` on `{s.dataset}` (seed {s.seed})",
        "",
        *(f"**{line}**" if i == 0 else line for i, line in enumerate(headline(s).splitlines())),
        "",
        f"Built {time.strftime('%Y-%m-%d %H:%M:%S')} from the compute-matched sampling runs at budgets of "
        f"n = {budgets} reference samples (`budget=custom budget.reference_samples=<n>`: the FLOPs of n "
        f"samples of `{s.se_model}` per problem; `{s.wc_model}` gets as many samples as those FLOPs buy). "
        "coverage@S and diversity@S are at k = S, all of a run's samples (unbiased estimators, "
        "`compute_optimal.metrics`).",
        "",
        *(f"> **Warning:** {w}" for w in s.warnings),
        "## Per budget",
        "",
        sweep_markdown(s),
        "",
        "FLOPs / problem: the budget, from each run's summary (`budget_flops_per_problem`: n · W · 2 · P_SE); "
        "measured: 2 · P · generated tokens per problem (the run's ledger). FPR: "
        f"{s.fpr_note}.",
        "",
        f"![coverage]({figures['coverage'].name})",
        "",
        f"![diversity]({figures['diversity'].name})",
        "",
        *fpr_figure,
    ]
    if s.fpr_definition:
        parts += ["", s.fpr_definition]
    parts += _students_section(s, figures)
    if s.missing():
        parts += ["", "## Missing runs", "", f"Every run of the sweep: `{RECIPE}`.", ""]
        parts += [f"- {p.role} n={p.reference_samples}: `{p.ref.run.command}`" for p in s.missing()]
    parts.append("")
    return "\n".join(parts)


def write_sweep_report(sweep: BudgetSweep, out_dir: str | Path) -> dict[str, Any]:
    """Build the report folder (report.md, budget_sweep.json, PNGs) and swap it into place."""
    out_dir = Path(out_dir)
    with runs.atomic_folder(out_dir) as tmp:
        figures = draw_figures(sweep, tmp)
        runs.atomic_write_json(tmp / DATA, sweep_data(sweep))
        runs.atomic_write_text(tmp / REPORT, render_markdown(sweep, figures))
    return {
        "report_dir": str(out_dir),
        "report": str(out_dir / REPORT),
        "data": str(out_dir / DATA),
        "figures": {name: str(out_dir / p.name) for name, p in figures.items()},
    }
