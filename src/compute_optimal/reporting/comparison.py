"""WC vs SE over finished sampling runs: find the runs by config, load them, put the numbers side by side.

Runs are found under the outputs layout of :mod:`compute_optimal.runs`, never by a typed path. A
missing or unfinished compute-matched run stops with its folder and the command that makes it;
number-matched runs (the paper's ablation, ``budget.mode=number``) are shown where they exist and
listed with their command where they do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import metrics, runs
from ..analysis import AnalysisError, data_quality
from ..judge import FPR

COMPUTE, NUMBER = "compute", "number"
NUMBER_ESTIMATED = "number (WC subsampled)"


@dataclass(frozen=True)
class RunRef:
    """The sampling run of one (dataset, model, budget, mode, seed): where it lives and how to make it
    (``runs.SampleRun``)."""

    outputs: Path
    dataset: str
    model: str
    budget: str
    mode: str
    seed: int

    @property
    def budget_dir(self) -> str:
        return runs.budget_dir(self.budget, self.mode)

    @property
    def run(self) -> runs.SampleRun:
        return runs.SampleRun.of(self.outputs, self.dataset, self.model, self.budget, self.mode, self.seed)

    def problem(self) -> str | None:
        """Why this run cannot be read (missing / unfinished), or None when it is finished."""
        run = self.run
        if run.is_finished():
            return None
        state = "is unfinished (no summary.json)" if run.path.exists() else "does not exist"
        return f"{run.path} {state}; make it with: {run.command}"


@dataclass(eq=False)  # identity: runs are dictionary keys (e.g. judge items per run)
class RunData:
    """A finished sampling run: its summary, its samples and their data quality."""

    ref: RunRef
    summary: dict[str, Any]
    frame: pd.DataFrame
    quality: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.summary["model"])

    @property
    def dataset(self) -> str:
        return str(self.summary["dataset"])

    @property
    def samples(self) -> int:
        return int(self.summary["samples_per_problem"])

    def at(self, curve: str, k: int) -> float:
        """coverage_at_k / diversity_at_k / diversity_chains_at_k at k (1-based)."""
        return float(self.quality[curve][k - 1])


def load_run(ref: RunRef, near_duplicate: float | None = None) -> RunData:
    """Read a finished run and recompute its data quality (with this report's "distinct" setting)."""
    problem = ref.problem()
    if problem:
        raise runs.RunError(f"no finished sampling run: {problem}")
    summary = ref.run.read_summary()
    if summary.get("dataset") != ref.dataset:
        raise AnalysisError(
            f"{ref.run.path} holds a run of dataset {summary.get('dataset')!r}, not {ref.dataset!r}"
        )
    frame = pd.read_parquet(ref.run.samples_path)
    quality = data_quality(frame, int(summary["samples_per_problem"]), near_duplicate=near_duplicate)
    return RunData(ref, summary, frame, quality)


def check_pair(wc: RunData, se: RunData, *, same_mode: bool = True) -> list[str]:
    """Refuse pairs that cannot be compared; return warnings for pairs that can, with caveats.

    ``same_mode=False`` allows a number-matched WC run against the reference model's compute run
    (which holds the same samples as its number-matched run would).
    """
    if wc.dataset != se.dataset:
        raise AnalysisError(
            f"cannot compare runs of different datasets: {wc.dataset!r} ({wc.ref.run.path}) vs "
            f"{se.dataset!r} ({se.ref.run.path})"
        )
    for key in ("budget", "budget_mode") if same_mode else ("budget",):
        if wc.summary.get(key) != se.summary.get(key):
            raise AnalysisError(
                f"cannot compare runs of different budgets: {key} {wc.summary.get(key)!r} "
                f"({wc.ref.run.path}) vs {se.summary.get(key)!r} ({se.ref.run.path})"
            )
    warnings = []
    a, b = set(wc.frame["problem_id"]), set(se.frame["problem_id"])
    if a != b:
        warnings.append(
            f"{wc.model} and {se.model} at {wc.ref.budget_dir} sampled different problems "
            f"({len(a)} and {len(b)}, {len(a & b)} shared): coverage is compared over different sets"
        )
    return warnings


@dataclass
class BudgetComparison:
    """One budget: the compute-matched pair, and the number-matched one where it was run."""

    budget: str
    wc: RunData
    se: RunData
    number_wc: RunData | None = None
    number_se: RunData | None = None
    missing_number: list[RunRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class DataComparison:
    """Everything the data report shows; tables are raw numbers (formatting is the report's job)."""

    dataset: str
    wc_model: str
    se_model: str
    seed: int
    near_duplicate: float | None
    budgets: list[BudgetComparison]
    fpr: dict[tuple[str, str], FPR] = field(default_factory=dict)  # (model, budget folder) -> FPR
    fpr_note: str = "not measured"
    warnings: list[str] = field(default_factory=list)
    matching: str = (
        COMPUTE  # the main comparison's budget mode: compute (FLOPs) or price (dollars: API pairs)
    )

    def compute_runs(self) -> list[RunData]:
        return [r for b in self.budgets for r in (b.wc, b.se)]

    def all_runs(self) -> list[RunData]:
        extra = [r for b in self.budgets for r in (b.number_wc, b.number_se) if r is not None]
        seen: dict[Path, RunData] = {}
        for run in [*self.compute_runs(), *extra]:
            seen.setdefault(run.ref.run.path, run)
        return list(seen.values())

    def _fpr(self, run: RunData | None) -> float | None:
        found = self.fpr.get((run.model, run.ref.budget_dir)) if run else None
        return found.value if found else None

    def headline(self) -> pd.DataFrame:
        """One row per (budget, matching): coverage, diversity, FPR of WC and SE, and WC over SE."""
        rows = []
        for b in self.budgets:
            rows.append(self._row(b.budget, self.matching, b.wc, b.se, b.wc.samples))
            if b.number_wc and b.number_se:
                rows.append(self._row(b.budget, NUMBER, b.number_wc, b.number_se, b.number_wc.samples))
            elif b.missing_number:
                rows.append({"budget": b.budget, "matching": NUMBER, "missing": True})
            if b.wc.samples > b.se.samples:  # the ablation estimated from the WC run's own samples
                rows.append(self._row(b.budget, NUMBER_ESTIMATED, b.wc, b.se, b.se.samples))
        return pd.DataFrame(rows)

    def _row(self, budget: str, matching: str, wc: RunData, se: RunData, k_wc: int) -> dict[str, Any]:
        row: dict[str, Any] = {"budget": budget, "matching": matching, "missing": False}
        row.update(wc_samples=k_wc, se_samples=se.samples)
        curves = (
            ("coverage", "coverage_at_k"),
            ("diversity", "diversity_at_k"),
            ("chains", "diversity_chains_at_k"),
        )
        for name, curve in curves:
            w, s = wc.at(curve, k_wc), se.at(curve, se.samples)
            row.update(
                {f"{name}_wc": w, f"{name}_se": s, f"{name}_rel_pct": metrics.relative_difference(w, s)}
            )
        w_fpr, s_fpr = (self._fpr(wc), self._fpr(se)) if matching == self.matching else (None, None)
        row.update(
            fpr_wc=w_fpr,
            fpr_se=s_fpr,
            fpr_diff_pp=None if w_fpr is None or s_fpr is None else 100.0 * (w_fpr - s_fpr),
            fpr_rel_pct=metrics.relative_difference(w_fpr, s_fpr),
        )
        return row

    def per_group(self, key: str = "per_level") -> pd.DataFrame:
        """Compute-matched per-level (or per-subject) coverage, diversity, accuracy of WC and SE."""
        rows = []
        for b in self.budgets:
            wc, se = b.wc.quality[key], b.se.quality[key]
            for group in [*wc, *(g for g in se if g not in wc)]:
                w, s = wc.get(group), se.get(group)
                row: dict[str, Any] = {"budget": b.budget, "group": group}
                for side, stats in (("wc", w), ("se", s)):
                    stats = stats or {}
                    ci = stats.get("coverage_ci") or [None, None]
                    row.update(
                        {
                            f"problems_{side}": stats.get("num_problems"),
                            f"coverage_{side}": stats.get("coverage"),
                            f"coverage_ci_low_{side}": ci[0],
                            f"coverage_ci_high_{side}": ci[1],
                            f"diversity_{side}": stats.get("diversity"),
                            f"chains_{side}": stats.get("diversity_chains"),
                            f"accuracy_{side}": stats.get("accuracy"),
                        }
                    )
                for name in ("coverage", "diversity", "chains"):
                    row[f"{name}_rel_pct"] = metrics.relative_difference(row[f"{name}_wc"], row[f"{name}_se"])
                rows.append(row)
        return pd.DataFrame(rows)

    def runs_table(self) -> pd.DataFrame:
        """Every run the report rests on, with its ledger (planned and measured FLOPs)."""
        rows = []
        for run in self.all_runs():
            s = run.summary
            rows.append(
                {
                    "model": run.model,
                    "role": "WC" if run.model == self.wc_model else "SE",
                    "budget": run.ref.budget_dir,
                    "samples_per_problem": run.samples,
                    "num_problems": int(s.get("num_problems", run.frame["problem_id"].nunique())),
                    "accuracy": float(run.frame["correct"].mean()),
                    "coverage": run.at("coverage_at_k", run.samples),
                    "distinct_correct": run.quality["distinct_correct"],
                    "distinct_chains": run.quality.get("distinct_chains"),
                    "planned_flops": s.get("planned_flops"),
                    "measured_flops": s.get("measured_flops"),
                    "run_dir": str(run.ref.run.path),
                }
            )
        return pd.DataFrame(rows)

    def fpr_table(self) -> pd.DataFrame:
        rows = []
        for run in self.compute_runs():
            found = self.fpr.get((run.model, run.ref.budget_dir))
            if found is not None:
                rows.append({"model": run.model, "budget": run.ref.budget_dir, **found.as_dict()})
        return pd.DataFrame(rows)


def load_comparison(
    outputs: str | Path,
    *,
    dataset: str,
    wc_model: str,
    se_model: str,
    budgets: list[str],
    seed: int = 0,
    number_matched: bool = True,
    near_duplicate: float | None = None,
    matching: str = COMPUTE,
) -> DataComparison:
    """Find and load the ``matching``-matched runs (compute, or price for API pairs) of both models at each
    budget (all must be finished), and the number-matched runs where they exist."""
    if matching not in (COMPUTE, "price"):
        raise AnalysisError(f"task.matching must be compute or price, got {matching!r}")
    if wc_model == se_model:
        raise AnalysisError(f"WC and SE are the same model ({wc_model}): nothing to compare")
    if not budgets:
        raise AnalysisError("no budgets to compare (task.budgets is empty)")
    outputs = Path(outputs)

    def ref(model: str, budget: str, mode: str) -> RunRef:
        return RunRef(outputs, dataset, model, budget, mode, seed)

    refs = [ref(m, b, matching) for b in budgets for m in (wc_model, se_model)]
    problems = [p for p in (r.problem() for r in refs) if p]
    if problems:
        raise runs.RunError(
            f"the {dataset} data report needs {len(problems)} more finished sampling run(s):\n  "
            + "\n  ".join(problems)
        )
    comparison = DataComparison(dataset, wc_model, se_model, seed, near_duplicate, [], matching=matching)
    for budget in budgets:
        wc, se = (
            load_run(ref(wc_model, budget, matching), near_duplicate),
            load_run(ref(se_model, budget, matching), near_duplicate),
        )
        comparison.warnings += check_pair(wc, se)
        entry = BudgetComparison(budget, wc, se)
        if number_matched:
            _add_number_matched(
                entry, ref(wc_model, budget, NUMBER), ref(se_model, budget, NUMBER), near_duplicate
            )
            if entry.number_wc and entry.number_se:
                reused = entry.number_se is se
                comparison.warnings += check_pair(entry.number_wc, entry.number_se, same_mode=not reused)
        comparison.budgets.append(entry)
    return comparison


def _add_number_matched(entry: BudgetComparison, wc_ref: RunRef, se_ref: RunRef, near: float | None) -> None:
    entry.number_wc = load_run(wc_ref, near) if wc_ref.problem() is None else None
    if se_ref.problem() is None:
        entry.number_se = load_run(se_ref, near)
    elif _same_in_both_modes(entry.se):
        # The reference model gets S_ref samples in both modes, drawn with the same per-problem
        # seeds: its compute-matched run holds exactly the samples a number-matched run would.
        entry.number_se = entry.se
        entry.notes.append(
            f"number-matched {entry.se.model}: its compute-matched run (as the reference model it gets "
            f"S={entry.se.samples} in both modes, with the same per-problem seeds: the same samples)"
        )
    entry.missing_number = [
        r for r, run in ((wc_ref, entry.number_wc), (se_ref, entry.number_se)) if run is None
    ]


def _same_in_both_modes(run: RunData) -> bool:
    s = run.summary
    return s.get("reference_model") == run.model and s.get("reference_samples") == run.samples
