"""The data report's figures, drawn with matplotlib's object API (no pyplot state, no display needed).

Each function draws one PNG at ``path``: one panel per budget, WC and SE in fixed colours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

COLOURS = {"WC": "#1f77b4", "SE": "#d62728"}
DPI = 110


@dataclass(frozen=True)
class Curve:
    label: str
    values: Sequence[float]  # value at k = 1..len(values)
    role: str  # "WC" or "SE": the colour
    dashed: bool = False  # number-matched runs


def _panels(count: int, height: float = 3.6) -> tuple[Figure, list]:
    fig = Figure(figsize=(max(4.8, 4.6 * count), height), layout="constrained")
    axes = fig.subplots(1, count, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def plot_curves(path: Path, panels: Mapping[str, Sequence[Curve]], *, ylabel: str, title: str) -> Path:
    """Metric@k curves, one panel per budget."""
    fig, axes = _panels(len(panels))
    for ax, (budget, curves) in zip(axes, panels.items(), strict=True):
        for c in curves:
            ks = range(1, len(c.values) + 1)
            ax.plot(
                ks,
                c.values,
                marker="o" if len(c.values) <= 12 else None,
                markersize=3.5,
                linestyle="--" if c.dashed else "-",
                color=COLOURS.get(c.role),
                label=c.label,
            )
        ax.set_title(f"budget: {budget}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("k (samples per problem)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


@dataclass(frozen=True)
class Bar:
    label: str  # series name (legend)
    role: str
    groups: Mapping[str, tuple[float, float, float]]  # group -> (value, ci_low, ci_high)


def plot_group_bars(path: Path, panels: Mapping[str, Sequence[Bar]], *, ylabel: str, title: str) -> Path:
    """Grouped bars with interval whiskers (per-level coverage), one panel per budget."""
    fig, axes = _panels(len(panels))
    for ax, (budget, bars) in zip(axes, panels.items(), strict=True):
        groups: list[str] = []
        for bar in bars:
            groups += [g for g in bar.groups if g not in groups]
        width = 0.8 / max(1, len(bars))
        for i, bar in enumerate(bars):
            xs, ys, err_low, err_high = [], [], [], []
            for j, g in enumerate(groups):
                if g in bar.groups:
                    value, low, high = bar.groups[g]
                    xs.append(j + (i - (len(bars) - 1) / 2) * width)
                    ys.append(value)
                    err_low.append(max(0.0, value - low))
                    err_high.append(max(0.0, high - value))
            ax.bar(xs, ys, width, color=COLOURS.get(bar.role), label=bar.label, alpha=0.85)
            ax.errorbar(xs, ys, yerr=[err_low, err_high], fmt="none", ecolor="black", capsize=3, lw=1)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_xlabel("level")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"budget: {budget}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_intervals(path: Path, rows: Sequence[tuple[str, str, float, float, float]], *, title: str) -> Path:
    """One bar per (label, role, value, ci_low, ci_high) with its interval (false-positive rates)."""
    fig = Figure(figsize=(max(4.8, 1.3 * len(rows) + 1.5), 3.6), layout="constrained")
    ax = fig.subplots()
    xs = range(len(rows))
    values = [r[2] for r in rows]
    ax.bar(xs, values, color=[COLOURS.get(r[1]) for r in rows], alpha=0.85)
    ax.errorbar(
        xs,
        values,
        yerr=[[max(0.0, r[2] - r[3]) for r in rows], [max(0.0, r[4] - r[2]) for r in rows]],
        fmt="none",
        ecolor="black",
        capsize=4,
        lw=1,
    )
    ax.set_xticks(list(xs), [r[0] for r in rows], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("false-positive rate")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)
