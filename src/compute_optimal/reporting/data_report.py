"""The data report: ``report.md`` + PNG figures + ``comparison.json`` for one WC-vs-SE comparison.

The folder is built next to its final place and renamed into it, so a reader sees the previous
complete report or the new complete one, never a mix (and no figure left over from an older build).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from .. import runs
from ..analysis import ALL_LEVELS, distinct_definition
from ..process_check import ProcessFPR
from . import plots
from .comparison import NUMBER, BudgetComparison, DataComparison, RunData

REPORT = "report.md"
DATA = "comparison.json"
FIGURES = {
    "coverage_at_k": "coverage_at_k.png",
    "coverage_per_level": "coverage_per_level.png",
    "diversity_at_k": "diversity_at_k.png",
    "fpr": "fpr.png",
}
PAPER = (
    "Paper (Gemma2-9B WC over Gemma2-27B SE, compute-matched, MATH): coverage +11% / +6% and diversity "
    "+86% / +125% at low / high budget; FPR higher by 7% (human judges). GSM-8K: coverage +8% / +1%, "
    "diversity +134% / +158%, FPR +2%. Number-matched, SE wins."
)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _rel(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.1f}%"


def _pp(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.1f} pp"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe records: NaN -> None."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _label(run: RunData, role: str) -> str:
    return f"{role} {run.model} {run.ref.budget_dir} (S={run.samples})"


def _missing_commands(b: BudgetComparison) -> str:
    return "; ".join(f"`{r.run.command}`" for r in b.missing_number)


def _missing(value: Any) -> bool:
    return value is None or pd.isna(value)


def headline_markdown(comparison: DataComparison, process: ProcessFPR | None = None) -> str:
    """The headline table: WC over SE per budget and matching. FPR: the judge's or the labels' where
    measured (``task.fpr``), else the process check's over every answer-correct sample, marked with its label."""
    frame = comparison.headline()
    by_budget = {b.budget: b for b in comparison.budgets}
    rows = []
    for r in frame.to_dict("records"):
        if r.get("missing"):
            cell = f"not run (command: {_missing_commands(by_budget[r['budget']])})"
            rows.append([r["budget"], r["matching"], cell, *["–"] * 12])
            continue
        fpr = [_num(r["fpr_wc"]), _num(r["fpr_se"]), _pp(r["fpr_diff_pp"])]
        b = by_budget[r["budget"]]
        if _missing(r["fpr_wc"]) and process is not None and r["matching"] == comparison.matching:
            checked = _checked_rates(process, b)
            if checked is not None:
                w, s_ = checked
                fpr = [f"{_num(w)} ({process.label})", f"{_num(s_)} ({process.label})", _pp(100.0 * (w - s_))]
        rows.append(
            [
                r["budget"],
                r["matching"],
                f"{int(r['wc_samples'])} / {int(r['se_samples'])}",
                _num(r["coverage_wc"]),
                _num(r["coverage_se"]),
                _rel(r["coverage_rel_pct"]),
                _num(r["diversity_wc"], 2),
                _num(r["diversity_se"], 2),
                _rel(r["diversity_rel_pct"]),
                _num(r["chains_wc"], 2),
                _num(r["chains_se"], 2),
                _rel(r["chains_rel_pct"]),
                *fpr,
            ]
        )
    header = [
        "budget",
        "matching",
        "S (WC / SE)",
        "coverage WC",
        "coverage SE",
        "Δ coverage",
        "diversity WC",
        "diversity SE",
        "Δ diversity",
        "chains WC",
        "chains SE",
        "Δ chains",
        "FPR WC",
        "FPR SE",
        "Δ FPR",
    ]
    return _table(header, rows)


def _curve_table(comparison: DataComparison, curve: str, digits: int) -> str:
    runs_ = comparison.all_runs()
    max_s = max(r.samples for r in runs_)
    ks = sorted({k for k in (1, 2, 3, 5, 10, 20, 30, 50, 100) if k <= max_s} | {r.samples for r in runs_})
    rows = []
    for run in runs_:
        role = "WC" if run.model == comparison.wc_model else "SE"
        rows.append(
            [_label(run, role), *(_num(run.at(curve, k), digits) if k <= run.samples else "" for k in ks)]
        )
    return _table(["run", *(f"k={k}" for k in ks)], rows)


def _group_markdown(frame: pd.DataFrame, what: str) -> str:
    rows = []
    for r in frame.to_dict("records"):

        def cov(side: str, r: dict = r) -> str:
            if r[f"coverage_{side}"] is None or pd.isna(r[f"coverage_{side}"]):
                return "–"
            return (
                f"{r[f'coverage_{side}']:.3f} [{r[f'coverage_ci_low_{side}']:.2f}, "
                f"{r[f'coverage_ci_high_{side}']:.2f}]"
            )

        problems = f"{_int(r['problems_wc'])} / {_int(r['problems_se'])}"
        rows.append(
            [
                r["budget"],
                r["group"],
                problems,
                cov("wc"),
                cov("se"),
                _rel(r["coverage_rel_pct"]),
                _num(r["diversity_wc"], 2),
                _num(r["diversity_se"], 2),
                _rel(r["diversity_rel_pct"]),
                _num(r["chains_wc"], 2),
                _num(r["chains_se"], 2),
                _rel(r["chains_rel_pct"]),
                f"{_num(r['accuracy_wc'])} / {_num(r['accuracy_se'])}",
            ]
        )
    header = [
        "budget",
        what,
        "problems (WC / SE)",
        "coverage WC [95% CI]",
        "coverage SE [95% CI]",
        "Δ coverage",
        "diversity WC",
        "diversity SE",
        "Δ diversity",
        "chains WC",
        "chains SE",
        "Δ chains",
        "accuracy (WC / SE)",
    ]
    return _table(header, rows)


def _int(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else str(int(value))


def _fpr_markdown(comparison: DataComparison) -> str:
    frame = comparison.fpr_table()
    if frame.empty:
        return f"Not measured: {comparison.fpr_note}."
    rows = [
        [
            r["model"],
            r["budget"],
            r["method"],
            str(r["rated"]),
            str(r["incorrect"]),
            str(r["unknown"]),
            _num(r["fpr"]),
            _ci(r["ci_low"], r["ci_high"]),
        ]
        for r in frame.to_dict("records")
    ]
    header = ["model", "budget", "method", "rated", "wrong reasoning", "unknown", "FPR", "95% CI (Wilson)"]
    diffs = []
    for r in comparison.headline().to_dict("records"):
        if (
            r.get("matching") == comparison.matching
            and r.get("fpr_diff_pp") is not None
            and not pd.isna(r["fpr_diff_pp"])
        ):
            diffs.append(
                f"- {r['budget']}: WC − SE = {_pp(r['fpr_diff_pp'])} (relative {_rel(r['fpr_rel_pct'])})"
            )
    return "\n".join(
        [
            f"{comparison.fpr_note}.",
            "",
            "FPR = wrong reasoning / rated; *unknown* (an unparseable judge verdict, or a blank human label) "
            "is excluded from the rate and never counted as correct.",
            "",
            _table(header, rows),
            "",
            *diffs,
            "",
            f"![false-positive rate]({FIGURES['fpr']})",
        ]
    )


def _ci(low: Any, high: Any) -> str:
    return f"[{low:.3f}, {high:.3f}]"


def _process_rows(process: ProcessFPR) -> list[list[str]]:
    return [
        [
            r["model"],
            r["budget"],
            r["level"],
            r["label"],
            str(r["rated"]),
            str(r["incorrect"]),
            str(r["unknown"]),
            _num(r["fpr"]),
            _ci(r["ci_low"], r["ci_high"]),
        ]
        for r in process.table().to_dict("records")
    ]


def _checked_rates(process: ProcessFPR, b: BudgetComparison) -> tuple[float, float] | None:
    """The checker's overall FPR of WC's and SE's compute-matched runs at one budget; None if either has none."""
    rates = [process.rates.get((run.model, run.ref.budget_dir), {}).get(ALL_LEVELS) for run in (b.wc, b.se)]
    if any(r is None or r.value is None for r in rates):
        return None
    return rates[0].value, rates[1].value


def _process_diffs(comparison: DataComparison, process: ProcessFPR) -> list[str]:
    """WC − SE of the checker's overall rate, per budget."""
    lines = []
    for b in comparison.budgets:
        checked = _checked_rates(process, b)
        if checked is not None:
            lines.append(
                f"- {b.budget}: WC − SE = {_pp(100.0 * (checked[0] - checked[1]))} ({process.label})"
            )
    return lines


def _calibration_markdown(process: ProcessFPR) -> str:
    rows = [
        [
            r["run"],
            str(r["rated"]),
            str(r["unknown"]),
            str(r["unreferenced"]),
            str(r["tp"]),
            str(r["fp"]),
            str(r["fn"]),
            str(r["tn"]),
            _num(r["agreement"]),
            _num(r["precision"]),
            _num(r["recall"]),
            _num(r["kappa"]),
        ]
        for r in process.calibration_table().to_dict("records")
    ]
    header = [
        "run",
        "judged",
        "judge unknown",
        "no exact verdict",
        "TP",
        "FP",
        "FN",
        "TN",
        "agreement",
        "precision",
        "recall",
        "Cohen's κ",
    ]
    return "\n".join(
        [
            f"The LLM judge `{process.judge_name}` against the exact check on the solutions it judged. Positive "
            "class: *incorrect* (a false positive). TP: both say incorrect; FP: the judge says incorrect, the "
            "exact check correct; FN: the judge says correct, the exact check incorrect; TN: both say correct. "
            "Judge verdicts that could not be parsed (*judge unknown*) and solutions without an exact verdict "
            "are counted apart and left out of every rate; – where a rate is undefined.",
            "",
            _table(header, rows),
        ]
    )


def _coverage_markdown(process: ProcessFPR) -> str:
    rows = [
        [
            r["model"],
            r["budget"],
            r["level"],
            str(r["problems"]),
            _num(r["coverage_answer"]),
            _num(r["coverage_process"]),
            "–" if _missing(r["lucky_share"]) else _num(r["lucky_share"]),
        ]
        for r in process.coverage_table().to_dict("records")
    ]
    header = [
        "model",
        "budget",
        "level",
        "problems",
        "coverage (answer)",
        "coverage (process)",
        "lucky share",
    ]
    return "\n".join(
        [
            "Coverage at k = S counting a problem as covered by any answer-correct sample (the headline's) and "
            "only by a sample that passes the exact process check. *lucky share*: of the problems covered by "
            "answer, those without one process-correct sample.",
            "",
            _table(header, rows),
        ]
    )


def process_markdown(comparison: DataComparison, process: ProcessFPR | None) -> str:
    """The checker's FPR table (every answer-correct sample of each run), and the judge scored against it;
    empty where nothing was checked (MATH has no checker)."""
    if process is None:
        return ""
    header = ["model", "budget", "level", "method", "answer-correct", "wrong reasoning", "unknown", "FPR"]
    parts = [
        f"### {process.method[:1].upper()}{process.method[1:]}: every answer-correct sample",
        "",
        f"{process.definition} Level `all`: the run overall. *unknown*: no reference for the problem, or the "
        "grader no longer finds the answer correct; left out of the rate.",
        "",
        _table([*header, "95% CI (Wilson)"], _process_rows(process)),
        "",
        *_process_diffs(comparison, process),
    ]
    if process.coverage:
        parts += ["", "### Coverage by answer and by process", "", _coverage_markdown(process)]
    if process.calibration:
        parts += ["", "### The LLM judge against the exact check", "", _calibration_markdown(process)]
    return "\n".join(parts)


def _runs_markdown(comparison: DataComparison) -> str:
    frame = comparison.runs_table()
    rows = [
        [
            r["role"],
            r["model"],
            r["budget"],
            str(r["samples_per_problem"]),
            str(r["num_problems"]),
            _num(r["accuracy"]),
            _num(r["coverage"]),
            str(r["distinct_correct"]),
            str(r["distinct_chains"]),
            "–" if r["planned_flops"] is None else f"{r['planned_flops']:.3g}",
            "–" if r["measured_flops"] is None else f"{r['measured_flops']:.3g}",
            f"`{r['run_dir']}`",
        ]
        for r in frame.to_dict("records")
    ]
    header = [
        "role",
        "model",
        "budget",
        "S",
        "problems",
        "accuracy",
        "coverage",
        "distinct correct",
        "distinct chains",
        "planned FLOPs",
        "measured FLOPs",
        "folder",
    ]
    return _table(header, rows)


def render_markdown(
    comparison: DataComparison, figures: dict[str, Path], process: ProcessFPR | None = None
) -> str:
    c = comparison
    notes = [n for b in c.budgets for n in b.notes]
    missing = [(b.budget, r) for b in c.budgets for r in b.missing_number]
    parts = [
        f"# Synthetic data: WC `{c.wc_model}` vs SE `{c.se_model}` on `{c.dataset}` (seed {c.seed})",
        "",
        f"Built {time.strftime('%Y-%m-%d %H:%M:%S')} from the finished sampling runs listed under *Runs*. "
        "coverage@k and diversity@k use unbiased estimators over each run's samples "
        "(`compute_optimal.metrics`).",
        "",
        *(f"> **Warning:** {w}" for w in c.warnings),
        "## Headline: WC over SE",
        "",
        headline_markdown(c, process),
        "",
        "S: samples per problem; coverage and diversity are at k = S of each side. Δ = relative difference "
        "WC over SE, 100·(WC − SE)/SE (n/a where SE is 0); Δ FPR in percentage points. *compute*: equal "
        "sampling FLOPs; *number*: equal samples per problem (`budget.mode=number`, the paper's ablation); "
        "*number (WC subsampled)*: WC's compute-matched samples at k = S of SE, the same comparison "
        "estimated without a new run. FPR rows only for compute-matched runs: the judge's or the labels' where "
        "measured, else the process check's, labelled (*False positives: the process check* below).",
        "",
        f"{PAPER}",
        "",
        *(f"- Note: {n}" for n in notes),
    ]
    if missing:
        parts += ["", "Number-matched runs not run yet (the row above says *not run*):", ""]
        parts += [f"- {budget}: `{r.run.command}`  (folder `{r.run.path}`)" for budget, r in missing]
    parts += [
        "",
        "## coverage@k",
        "",
        f"![coverage@k]({figures['coverage_at_k'].name})",
        "",
        "coverage@k: share of problems with at least one correct solution among k samples, "
        "1 − C(n−c, k)/C(n, k) averaged over problems (n samples, c correct).",
        "",
        _curve_table(c, "coverage_at_k", 3),
        "",
        "## Per level (compute-matched, k = S)",
        "",
        f"![coverage per level]({figures['coverage_per_level'].name})",
        "",
        _group_markdown(c.per_group("per_level"), "level"),
        "",
        "Levels: MATH difficulty 1-5, arith reasoning steps 1-5, `all` for datasets without levels (GSM8K). "
        "Coverage intervals: 95% Wilson over problems.",
    ]
    subjects = c.per_group("per_subject")
    if not subjects.empty:
        parts += ["", "## Per subject (compute-matched, k = S)", "", _group_markdown(subjects, "subject")]
    parts += [
        "",
        "## diversity@k",
        "",
        f"![diversity@k]({figures['diversity_at_k'].name})",
        "",
        "diversity@k: expected number of distinct correct solutions per problem among k random samples of "
        "the run's n (a distinct solution with m copies is among them with probability 1 − C(n−m, k)/C(n, k); "
        "summed over distinct solutions, averaged over all problems). At k = n: the number of distinct "
        "correct solutions.",
        "",
        '**What "distinct" means** (`compute_optimal.analysis.normalize_solution`):',
        "",
        "```text",
        distinct_definition(c.near_duplicate),
        "```",
        "",
        _curve_table(c, "diversity_at_k", 2),
        "",
        "### Diversity by reasoning chain",
        "",
        "The same estimator over *reasoning chains* (`compute_optimal.process_check.reasoning_chain`): two "
        "correct solutions are one chain when they write the same computations in the same order (`a op b = "
        "c`, the operands of + and * sorted), whatever their words. Distinct texts count rewordings; distinct "
        "chains count other ways of solving the problem (another order of independent steps, another "
        "grouping of a sum), which is what the paper's diversity argument is about. Columns *chains* above.",
        "",
        _curve_table(c, "diversity_chains_at_k", 2),
        "",
        "## False-positive rate",
        "",
        _fpr_markdown(c),
        "",
        process_markdown(c, process),
        "",
        "## Runs",
        "",
        _runs_markdown(c),
        "",
    ]
    return "\n".join(parts)


def _curves(c: DataComparison, curve: str) -> dict[str, list[plots.Curve]]:
    panels = {}
    for b in c.budgets:
        items = [
            plots.Curve(_label(b.wc, "WC"), b.wc.quality[curve], "WC"),
            plots.Curve(_label(b.se, "SE"), b.se.quality[curve], "SE"),
        ]
        for run, role in ((b.number_wc, "WC"), (b.number_se, "SE")):
            if run is not None and run is not (b.wc if role == "WC" else b.se):
                items.append(plots.Curve(f"{_label(run, role)} [{NUMBER}]", run.quality[curve], role, True))
        panels[b.budget] = items
    return panels


def _level_bars(c: DataComparison) -> dict[str, list[plots.Bar]]:
    panels = {}
    for b in c.budgets:
        panels[b.budget] = [
            plots.Bar(
                _label(run, role),
                role,
                {g: (s["coverage"], *s["coverage_ci"]) for g, s in run.quality["per_level"].items()},
            )
            for run, role in ((b.wc, "WC"), (b.se, "SE"))
        ]
    return panels


def draw_figures(c: DataComparison, folder: Path) -> dict[str, Path]:
    """The report's PNGs in ``folder``: 3, or 4 when an FPR was measured."""
    figures = {
        "coverage_at_k": plots.plot_curves(
            folder / FIGURES["coverage_at_k"],
            _curves(c, "coverage_at_k"),
            ylabel="coverage@k",
            title=f"{c.dataset}: coverage@k",
        ),
        "coverage_per_level": plots.plot_group_bars(
            folder / FIGURES["coverage_per_level"],
            _level_bars(c),
            ylabel="coverage@S",
            title=f"{c.dataset}: coverage per level (95% Wilson)",
        ),
        "diversity_at_k": plots.plot_curves(
            folder / FIGURES["diversity_at_k"],
            _curves(c, "diversity_at_k"),
            ylabel="distinct correct solutions per problem",
            title=f"{c.dataset}: diversity@k",
        ),
    }
    fpr = c.fpr_table()
    if not fpr.empty:
        rows = [
            (
                f"{r['model']}\n{r['budget']}\n(n={r['rated']})",
                "WC" if r["model"] == c.wc_model else "SE",
                r["fpr"] if r["fpr"] is not None and not pd.isna(r["fpr"]) else 0.0,
                r["ci_low"],
                r["ci_high"],
            )
            for r in fpr.to_dict("records")
        ]
        methods = ", ".join(sorted(set(fpr["method"])))
        figures["fpr"] = plots.plot_intervals(
            folder / FIGURES["fpr"], rows, title=f"{c.dataset}: false-positive rate, 95% Wilson\n{methods}"
        )
    return figures


def _process_data(process: ProcessFPR | None) -> dict[str, Any] | None:
    if process is None:
        return None
    return {
        "method": process.method,
        "label": process.label,
        "definition": process.definition,
        "rows": _records(process.table()),
        "judge": process.judge_name,
        "judge_calibration": _records(process.calibration_table()),
        "coverage": _records(process.coverage_table()),
    }


def comparison_data(c: DataComparison, process: ProcessFPR | None = None) -> dict[str, Any]:
    """Every number of the report, JSON-safe (comparison.json)."""
    return {
        "dataset": c.dataset,
        "wc_model": c.wc_model,
        "se_model": c.se_model,
        "seed": c.seed,
        "headline": _records(c.headline()),
        "per_level": _records(c.per_group("per_level")),
        "per_subject": _records(c.per_group("per_subject")),
        "runs": _records(c.runs_table()),
        "fpr": _records(c.fpr_table()),
        "fpr_note": c.fpr_note,
        "process_fpr": _process_data(process),
        "curves": {
            str(run.ref.run.path): {k: run.quality[k] for k in ("coverage_at_k", "diversity_at_k")}
            for run in c.all_runs()
        },
        "distinct_definition": distinct_definition(c.near_duplicate),
        "missing_runs": [
            {"run_dir": str(r.run.path), "command": r.run.command}
            for b in c.budgets
            for r in b.missing_number
        ],
        "warnings": c.warnings,
    }


def write_report(
    comparison: DataComparison, out_dir: str | Path, *, process: ProcessFPR | None = None
) -> dict[str, Any]:
    """Build the report folder and put it in place; returns the paths of report.md and the figures.

    ``process``: the checker's false-positive rates (``compute_optimal.process_check``), if measured.
    """
    out_dir = Path(out_dir)
    with runs.atomic_folder(out_dir) as tmp:
        figures = draw_figures(comparison, tmp)
        runs.atomic_write_json(tmp / DATA, comparison_data(comparison, process))
        runs.atomic_write_text(tmp / REPORT, render_markdown(comparison, figures, process))
    return {
        "report_dir": str(out_dir),
        "report": str(out_dir / REPORT),
        "data": str(out_dir / DATA),
        "figures": {name: str(out_dir / p.name) for name, p in figures.items()},
    }
