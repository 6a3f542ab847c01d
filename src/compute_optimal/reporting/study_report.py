"""The study report: students trained on WC data vs SE data, per dataset, budget and regime.

For each (dataset, budget, regime): the base student's test accuracy, the student's accuracy after
fine-tuning on compute-matched WC data and on SE data, and the difference WC − SE with a 95%
confidence interval from a paired bootstrap over test problems (both students answer the same
problems, so resampling problems keeps the pairing). Accuracy is pass@1 of greedy decoding, as in
the paper; mean@n over sampled completions is shown beside it. Loss curves of every training run,
the data report's headline (when built) and the runs each number rests on complete the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import runs
from ..metrics import paired_bootstrap

REPORT, DATA = "report.md", "study.json"


@dataclass
class Cell:
    """One evaluated model: its summary and per-problem greedy correctness."""

    label: str
    run: runs.EvalRun
    summary: dict[str, Any] | None = None
    per_problem: pd.Series | None = None  # problem_id -> correct (greedy)

    @property
    def done(self) -> bool:
        return self.summary is not None

    def metric(self, key: str) -> float | None:
        return None if self.summary is None else self.summary.get(key)


@dataclass
class Comparison:
    dataset: str
    budget: str
    regime: str
    student: str
    base: Cell
    wc: Cell
    se: Cell
    train: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    difference: tuple[float, float, float] | None = None  # WC - SE, CI low, CI high
    num_problems: int = 0


def load_cell(label: str, run: runs.EvalRun) -> Cell:
    cell = Cell(label, run)
    if run.is_finished():
        cell.summary = run.read_summary()
        greedy = pd.read_parquet(run.generation("greedy").samples_path, columns=["problem_id", "correct"])
        cell.per_problem = greedy.groupby("problem_id")["correct"].first().astype(float)
    return cell


def compare(
    dataset: str,
    budget: str,
    regime: str,
    student: str,
    base: Cell,
    wc: Cell,
    se: Cell,
    train: dict[str, dict[str, Any] | None],
    *,
    seed: int = 0,
) -> Comparison:
    comp = Comparison(dataset, budget, regime, student, base, wc, se, train)
    if wc.per_problem is not None and se.per_problem is not None:
        common = wc.per_problem.index.intersection(se.per_problem.index)
        if len(common):
            comp.num_problems = len(common)
            comp.difference = paired_bootstrap(
                wc.per_problem[common].to_numpy(), se.per_problem[common].to_numpy(), seed=seed
            )
    return comp


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _diff(c: Comparison) -> str:
    if c.difference is None:
        return "—"
    d, lo, hi = c.difference
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def headline_table(comparisons: Sequence[Comparison]) -> str:
    rows = [
        "| dataset | budget | regime | student | base | after WC data | after SE data | WC − SE (95% CI) | problems |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in comparisons:
        rows.append(
            f"| {c.dataset} | {c.budget} | {c.regime} | {c.student} | {_fmt(c.base.metric('pass@1_greedy'))} | "
            f"{_fmt(c.wc.metric('pass@1_greedy'))} | {_fmt(c.se.metric('pass@1_greedy'))} | {_diff(c)} | "
            f"{c.num_problems or '—'} |"
        )
    return "\n".join(rows)


def _detail_table(comparisons: Sequence[Comparison]) -> str:
    rows = [
        "| regime | budget | model | pass@1 (greedy) | mean@n | maj@n | pass@n | n | train examples | steps | final loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in comparisons:
        for cell, sampler in ((c.base, None), (c.wc, "wc"), (c.se, "se")):
            s = cell.summary or {}
            n = s.get("samples_per_problem")
            t = c.train.get(sampler) or {} if sampler else {}
            rows.append(
                f"| {c.regime} | {c.budget} | {cell.label} | {_fmt(s.get('pass@1_greedy'))} | {_fmt(s.get(f'mean@{n}'))} "
                f"| {_fmt(s.get(f'maj@{n}'))} | {_fmt(s.get(f'pass@{n}'))} | {n or '—'} | {t.get('num_examples', '—')} "
                f"| {t.get('steps', '—')} | {_fmt(t.get('final_loss'))} |"
            )
    return "\n".join(rows)


def draw_accuracy(path: Path, comparisons: Sequence[Comparison]) -> Path:
    """Grouped bars: base / after WC data / after SE data, one group per (regime, budget)."""
    fig = Figure(figsize=(max(5.0, 1.9 * len(comparisons) + 1.5), 3.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(comparisons))
    for i, (key, label, colour) in enumerate(
        (("base", "base", "#7f7f7f"), ("wc", "after WC data", "#1f77b4"), ("se", "after SE data", "#d62728"))
    ):
        values = [getattr(c, key).metric("pass@1_greedy") or 0.0 for c in comparisons]
        ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label, color=colour)
    ax.set_xticks(x, [f"{c.regime}\n{c.student} · {c.budget}" for c in comparisons], fontsize=8)
    ax.set_ylabel("test pass@1 (greedy)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def draw_differences(path: Path, comparisons: Sequence[Comparison]) -> Path:
    """WC − SE accuracy differences with their bootstrap intervals."""
    done = [c for c in comparisons if c.difference is not None]
    fig = Figure(figsize=(6.0, 0.6 * max(1, len(done)) + 1.4), layout="constrained")
    ax = fig.subplots()
    for i, c in enumerate(done):
        d, lo, hi = c.difference
        ax.errorbar([d], [i], xerr=[[d - lo], [hi - d]], fmt="o", color="#1f77b4", capsize=4)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(done)), [f"{c.regime} · {c.student} · {c.budget}" for c in done], fontsize=8)
    ax.set_xlabel("accuracy after WC data − after SE data (95% paired bootstrap CI)")
    ax.grid(axis="x", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def draw_loss_curves(path: Path, comparisons: Sequence[Comparison]) -> Path:
    """Training loss per step, WC data vs SE data, one panel per (regime, budget)."""
    panels = [c for c in comparisons if any(c.train.values())]
    fig = Figure(figsize=(max(4.8, 4.2 * max(1, len(panels))), 3.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, c in zip(axes, panels, strict=False):
        for sampler, colour in (("wc", "#1f77b4"), ("se", "#d62728")):
            curve = (c.train.get(sampler) or {}).get("loss_curve") or []
            if curve:
                ax.plot(
                    [s for s, _ in curve],
                    [v for _, v in curve],
                    color=colour,
                    label=f"{sampler.upper()} data",
                )
        ax.set_title(f"{c.regime} · {c.student} · {c.budget}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def render(
    comparisons: Sequence[Comparison],
    figures: dict[str, Path],
    *,
    title: str,
    notes: Sequence[str],
    data_report: str | None,
) -> str:
    missing = [cell for c in comparisons for cell in (c.base, c.wc, c.se) if not cell.done]
    parts = [
        f"# {title}",
        "Test accuracy of students fine-tuned on compute-matched data from the weaker-cheaper (WC) and the "
        "stronger-expensive (SE) sampler. Accuracy: pass@1 of greedy decoding on the test split. "
        "WC − SE: difference of the two students' accuracies, 95% CI from a paired bootstrap over test problems "
        "(2,000 resamples).",
        *[f"> {n}" for n in notes],
        "## Headline",
        headline_table(comparisons),
        f"![accuracy]({figures['accuracy'].name})",
        f"![differences]({figures['differences'].name})",
        "## All metrics",
        _detail_table(comparisons),
        "## Training",
        f"![loss curves]({figures['loss'].name})",
    ]
    if data_report:
        parts += [
            "## The synthetic data",
            f"Coverage, diversity and false positives of the samples: [data report]({data_report}).",
        ]
    if missing:
        lines = "\n".join(f"- {cell.label}: `{cell.run.command}`" for cell in missing)
        parts += ["## Missing runs", "These cells are empty until their runs exist:", lines]
    done = [(c, cell) for c in comparisons for cell in (c.base, c.wc, c.se) if cell.done]
    parts += [
        "## Runs",
        "\n".join(f"- {cell.label} ({c.regime}, {c.budget}): `{cell.run.path}`" for c, cell in done),
    ]
    return "\n\n".join(parts) + "\n"


def study_data(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    out = []
    for c in comparisons:
        out.append(
            {
                "dataset": c.dataset,
                "budget": c.budget,
                "regime": c.regime,
                "student": c.student,
                "base": c.base.metric("pass@1_greedy"),
                "wc": c.wc.metric("pass@1_greedy"),
                "se": c.se.metric("pass@1_greedy"),
                "wc_minus_se": None if c.difference is None else list(c.difference),
                "num_problems": c.num_problems,
                "runs": {k: str(getattr(c, k).run.path) for k in ("base", "wc", "se")},
            }
        )
    return out


def write_study_report(
    comparisons: Sequence[Comparison],
    out_dir: str | Path,
    *,
    title: str,
    notes: Sequence[str] = (),
    data_report: str | None = None,
) -> dict[str, Any]:
    """Write report.md, study.json and the PNGs into a temporary folder, then swap it into place."""
    out_dir = Path(out_dir)
    with runs.atomic_folder(out_dir) as tmp:
        figures = {
            "accuracy": draw_accuracy(tmp / "accuracy.png", comparisons),
            "differences": draw_differences(tmp / "wc_minus_se.png", comparisons),
            "loss": draw_loss_curves(tmp / "loss_curves.png", comparisons),
        }
        runs.atomic_write_json(tmp / DATA, study_data(comparisons))
        runs.atomic_write_text(
            tmp / REPORT, render(comparisons, figures, title=title, notes=notes, data_report=data_report)
        )
    return {
        "report_dir": str(out_dir),
        "report": str(out_dir / REPORT),
        "figures": {k: str(out_dir / p.name) for k, p in figures.items()},
    }
