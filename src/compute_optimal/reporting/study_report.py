"""The study report: students trained on WC data vs SE data, per dataset, budget and regime.

For each (dataset, budget, regime): the base student's test accuracy, the student's accuracy after
fine-tuning on compute-matched WC data and on SE data, and the difference WC − SE with a 95%
confidence interval from a paired bootstrap over test problems (both students answer the same
problems, so resampling problems keeps the pairing). Accuracy is pass@1 of greedy decoding, as in
the paper; mean@n over sampled completions is shown beside it. Loss curves of every training run,
the data report's headline (when built) and the runs each number rests on complete the page.

Several seeds (seed s: the training data sampled with seed s, the student trained and evaluated with
seed s): one :class:`Comparison` per seed, and per row an :class:`Aggregate` over the seeds that
finished: mean, sample standard deviation and range (min..max) of each accuracy and of WC − SE. With
one seed the report is the single-seed report, without aggregates.

Each headline row ends in a verdict on the paper's claim (:func:`verdict`): reproduced (WC − SE above zero),
reversed (below zero) or no difference, from each seed's paired interval. Beside the compute-matched students,
*controls* test the mechanism (:data:`CONTROLS`): WC at SE's sample count, students trained only on
process-correct samples, one solution per problem; they have a section of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import runs
from ..metrics import paired_bootstrap

REPORT, DATA = "report.md", "study.json"
MAIN = "compute_matched"  # the paper's comparison: WC and SE data at the same sampling FLOPs
CONTROLS = {  # name -> what its row compares (the stage finds the runs: stages/study_report.py)
    MAIN: "WC vs SE data at equal sampling compute",
    "number_matched": "WC data at SE's sample count (a third of the compute) vs SE data",
    "process_only": "only process-correct samples of each (data.keep=process)",
    "one_per_problem": "one solution per covered problem of each (data.max_per_problem=1)",
}
POWER = 0.03  # an interval's half-width above this is too wide to call "no difference"


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
    seed: int = 0  # sampling, training and evaluation seed
    control: str = MAIN  # one of CONTROLS

    @property
    def row(self) -> tuple[str, str, str, str, str]:
        """What the seeds of one row share: (dataset, budget, regime, student, control)."""
        return self.dataset, self.budget, self.regime, self.student, self.control

    @property
    def finished(self) -> bool:
        """Base, WC and SE students all evaluated: the seed counts in its row's aggregate."""
        return self.base.done and self.difference is not None

    def value(self, key: str) -> float | None:
        """pass@1 (greedy) of ``base``, ``wc`` or ``se``; or ``wc_minus_se``, the paired difference."""
        if key == "wc_minus_se":
            return None if self.difference is None else self.difference[0]
        return getattr(self, key).metric("pass@1_greedy")


STATS = ("base", "wc", "se", "wc_minus_se")


@dataclass(frozen=True)
class Spread:
    """One number over seeds: mean, sample standard deviation (None below two seeds), min and max."""

    mean: float
    std: float | None
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not len(values):
            return None
        x = np.asarray(values, dtype=float)
        std = float(x.std(ddof=1)) if len(x) > 1 else None
        return cls(float(x.mean()), std, float(x.min()), float(x.max()), len(x))


@dataclass
class Aggregate:
    """One row of the study over its seeds: one Comparison per requested seed, in the requested order."""

    comparisons: list[Comparison]

    @property
    def first(self) -> Comparison:
        return self.comparisons[0]

    @property
    def seeds(self) -> list[int]:
        return [c.seed for c in self.comparisons]

    @property
    def finished(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.finished]

    @property
    def progress(self) -> str:
        """e.g. "2 of 3 seeds": how many requested seeds the aggregate rests on."""
        return f"{len(self.finished)} of {len(self.comparisons)} seeds"

    def spread(self, key: str) -> Spread | None:
        """``key`` (one of STATS) over the finished seeds; None where none finished."""
        return Spread.of([c.value(key) for c in self.finished if c.value(key) is not None])


def aggregate(comparisons: Sequence[Comparison]) -> list[Aggregate]:
    """The comparisons grouped by row (dataset, budget, regime, student), rows in first-seen order."""
    groups: dict[tuple[str, str, str, str], list[Comparison]] = {}
    for c in comparisons:
        groups.setdefault(c.row, []).append(c)
    return [Aggregate(group) for group in groups.values()]


def several_seeds(comparisons: Sequence[Comparison]) -> bool:
    """Whether the comparisons span more than one seed (the multi-seed report)."""
    return len({c.seed for c in comparisons}) > 1


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
    resamples: int = 2000,
    control: str = MAIN,
) -> Comparison:
    comp = Comparison(dataset, budget, regime, student, base, wc, se, train, seed=seed, control=control)
    if wc.per_problem is not None and se.per_problem is not None:
        common = wc.per_problem.index.intersection(se.per_problem.index)
        if len(common):
            comp.num_problems = len(common)
            comp.difference = paired_bootstrap(
                wc.per_problem[common].to_numpy(),
                se.per_problem[common].to_numpy(),
                resamples=resamples,
                seed=seed,
            )
    return comp


def verdict(comparisons: Sequence[Comparison]) -> str:
    """The paper's claim on one row, from each finished seed's paired 95% interval of WC − SE: "reproduced"
    (every interval above zero), "reversed" (every one below), "no difference" (every one holds zero and is
    at most ±POWER wide), else what keeps it from a verdict."""
    done = [c.difference for c in comparisons if c.difference is not None]
    if not done:
        return "—"
    if all(lo > 0 for _, lo, _ in done):
        return "reproduced"
    if all(hi < 0 for _, _, hi in done):
        return "reversed"
    if all(lo <= 0 <= hi for _, lo, hi in done):
        wide = max((hi - lo) / 2 for _, lo, hi in done)
        return (
            "no difference" if wide <= POWER else f"no difference found (interval ±{wide:.3f}: underpowered)"
        )
    return "seeds disagree"


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _diff(c: Comparison) -> str:
    if c.difference is None:
        return "—"
    d, lo, hi = c.difference
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _mean_sd(s: Spread | None, sign: str = "") -> str:
    if s is None:
        return "—"
    return f"{s.mean:{sign}.3f}" + ("" if s.std is None else f" ± {s.std:.3f}")


def _range(s: Spread | None) -> str:
    return "—" if s is None else f"{s.min:+.3f}..{s.max:+.3f}"


def main_rows(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The compute-matched comparisons (the headline); the rest are controls."""
    return [c for c in comparisons if c.control == MAIN]


def control_rows(comparisons: Sequence[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.control != MAIN]


def headline_table(comparisons: Sequence[Comparison], *, controls: bool = False) -> str:
    """One row per (dataset, budget, regime) and its verdict; over several seeds each cell is mean ± sample
    standard deviation over the finished seeds (:func:`seed_table` has each seed's row). ``controls``: the
    control rows instead, with a column naming the control."""
    rows = control_rows(comparisons) if controls else main_rows(comparisons)
    if several_seeds(comparisons):
        return mean_table(aggregate(rows), controls=controls)
    return seed_table(rows, with_seed=False, controls=controls, verdicts=True)


def _control_cells(controls: bool) -> tuple[str, str]:
    return ("| control ", "| --- ") if controls else ("", "")


def mean_table(aggregates: Sequence[Aggregate], *, controls: bool = False) -> str:
    head, rule = _control_cells(controls)
    rows = [
        f"{head}| dataset | budget | regime | student | base | after WC data | after SE data | WC − SE (mean ± sd) | "
        "WC − SE (min..max) | seeds | verdict |",
        f"{rule}| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in aggregates:
        c = a.first
        rows.append(
            (f"| {c.control} " if controls else "")
            + f"| {c.dataset} | {c.budget} | {c.regime} | {c.student} | {_mean_sd(a.spread('base'))} | "
            f"{_mean_sd(a.spread('wc'))} | {_mean_sd(a.spread('se'))} | {_mean_sd(a.spread('wc_minus_se'), '+')} | "
            f"{_range(a.spread('wc_minus_se'))} | {a.progress} | {verdict(a.finished)} |"
        )
    return "\n".join(rows)


def seed_table(
    comparisons: Sequence[Comparison],
    *,
    with_seed: bool = True,
    controls: bool = False,
    verdicts: bool = False,
) -> str:
    """A row per comparison (per seed), with its paired-bootstrap interval; ``with_seed`` adds the seed,
    ``controls`` the control, ``verdicts`` the verdict of each row on its own (the single-seed headline)."""
    seed_head, seed_rule = ("| seed ", "| --- ") if with_seed else ("", "")
    head, rule = _control_cells(controls)
    verdict_head, verdict_rule = (" verdict |", " --- |") if verdicts else ("", "")
    rows = [
        f"{seed_head}{head}| dataset | budget | regime | student | base | after WC data | after SE data | WC − SE (95% CI) | problems |{verdict_head}",
        f"{seed_rule}{rule}| --- | --- | --- | --- | --- | --- | --- | --- | --- |{verdict_rule}",
    ]
    for c in comparisons:
        rows.append(
            (f"| {c.seed} " if with_seed else "")
            + (f"| {c.control} " if controls else "")
            + f"| {c.dataset} | {c.budget} | {c.regime} | {c.student} | {_fmt(c.base.metric('pass@1_greedy'))} | "
            f"{_fmt(c.wc.metric('pass@1_greedy'))} | {_fmt(c.se.metric('pass@1_greedy'))} | {_diff(c)} | "
            f"{c.num_problems or '—'} |" + (f" {verdict([c])} |" if verdicts else "")
        )
    return "\n".join(rows)


def console_text(comparisons: Sequence[Comparison]) -> str:
    """What the stage prints: the headline table, and over several seeds each seed's row too; then the controls."""
    text = headline_table(comparisons)
    if several_seeds(comparisons):
        text += f"\n\nper seed:\n{seed_table(main_rows(comparisons))}"
    if control_rows(comparisons):
        text += f"\n\ncontrols:\n{headline_table(comparisons, controls=True)}"
    return text


def _level_value(comparisons: Sequence[Comparison], key: str, level: str, measure: str) -> float | None:
    """Mean over ``comparisons`` of one model's greedy pass@1 (``measure``) at ``level``; None where none has it."""
    values = [
        v
        for c in comparisons
        if (v := ((getattr(c, key).metric("greedy_per_level") or {}).get(level) or {}).get(measure))
        is not None
    ]
    return sum(values) / len(values) if values else None


def level_table(a: Aggregate) -> str | None:
    """Greedy pass@1 per level of the base student and the students after WC and SE data, by answer and (arith
    datasets) by process, mean over the finished seeds; None where no evaluation recorded levels."""
    done = a.finished or [c for c in a.comparisons if c.base.done or c.wc.done or c.se.done]
    levels: dict[str, None] = {}
    for c in done:
        for key in ("base", "wc", "se"):
            levels.update(dict.fromkeys(getattr(c, key).metric("greedy_per_level") or {}))
    if not levels:
        return None
    rows = [
        "| level | base | after WC data | after SE data |",
        "| --- | --- | --- | --- |",
    ]
    for level in levels:
        cells = []
        for key in ("base", "wc", "se"):
            answer = _level_value(done, key, level, "pass@1")
            process = _level_value(done, key, level, "pass@1_process")
            cells.append(_fmt(answer) + ("" if process is None else f" / {_fmt(process)}"))
        rows.append(f"| {level} | {' | '.join(cells)} |")
    return "\n".join(rows)


def _detail_table(comparisons: Sequence[Comparison]) -> str:
    seeds = several_seeds(comparisons)
    rows = [
        ("| seed " if seeds else "")
        + "| regime | budget | model | pass@1 (greedy) | pass@1 (greedy, by process) | mean@n | maj@n | pass@n | n | "
        "train examples | steps | final loss |",
        ("| --- " if seeds else "")
        + "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in comparisons:
        for cell, sampler in ((c.base, None), (c.wc, "wc"), (c.se, "se")):
            s = cell.summary or {}
            n = s.get("samples_per_problem")
            t = c.train.get(sampler) or {} if sampler else {}
            rows.append(
                (f"| {c.seed} " if seeds else "")
                + f"| {c.regime} | {c.budget} | {cell.label} | {_fmt(s.get('pass@1_greedy'))} "
                f"| {_fmt(s.get('pass@1_greedy_process'))} | {_fmt(s.get(f'mean@{n}'))} "
                f"| {_fmt(s.get(f'maj@{n}'))} | {_fmt(s.get(f'pass@{n}'))} | {n or '—'} | {t.get('num_examples', '—')} "
                f"| {t.get('steps', '—')} | {_fmt(t.get('final_loss'))} |"
            )
    return "\n".join(rows)


def _bars(a: Aggregate, key: str, seeds: bool) -> tuple[float, float]:
    """A bar's height and error: the one seed's value, or the mean and sample standard deviation."""
    if not seeds:
        return getattr(a.first, key).metric("pass@1_greedy") or 0.0, 0.0
    s = a.spread(key)
    return (0.0, 0.0) if s is None else (s.mean, s.std or 0.0)


def _row_label(c: Comparison, a: Aggregate | None = None, sep: str = " · ") -> str:
    progress = f"\n{a.progress}" if a is not None else ""
    control = "" if c.control == MAIN else f" · {c.control}"
    return f"{c.regime}{sep}{c.student} · {c.budget}{control}{progress}"


def draw_accuracy(path: Path, comparisons: Sequence[Comparison]) -> Path:
    """Grouped bars: base / after WC data / after SE data, one group per (regime, budget); over several
    seeds the mean with the sample standard deviation as error bar."""
    seeds, rows = several_seeds(comparisons), aggregate(main_rows(comparisons))
    fig = Figure(figsize=(max(5.0, 1.9 * len(rows) + 1.5), 3.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows))
    for i, (key, label, colour) in enumerate(
        (("base", "base", "#7f7f7f"), ("wc", "after WC data", "#1f77b4"), ("se", "after SE data", "#d62728"))
    ):
        values, errors = zip(*(_bars(a, key, seeds) for a in rows), strict=True) if rows else ((), ())
        ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label, color=colour, yerr=errors if seeds else None)
    ax.set_xticks(x, [_row_label(a.first, a if seeds else None, "\n") for a in rows], fontsize=8)
    ax.set_ylabel("test pass@1 (greedy)" + (", mean ± sd over seeds" if seeds else ""))
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def draw_differences(path: Path, comparisons: Sequence[Comparison]) -> Path:
    """WC − SE accuracy differences with their bootstrap intervals; over several seeds each seed's (light,
    one line each) and the mean ± sample standard deviation (black diamond) per row; the controls below the
    compute-matched rows, named."""
    seeds = several_seeds(comparisons)
    ordered = [*main_rows(comparisons), *control_rows(comparisons)]
    rows = [a for a in aggregate(ordered) if any(c.difference is not None for c in a.comparisons)]
    size = (8.5, 1.2 * max(1, len(rows)) + 1.4) if seeds else (6.0, 0.6 * max(1, len(rows)) + 1.4)
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    for i, a in enumerate(rows):
        done = [c for c in a.comparisons if c.difference is not None]
        for j, c in enumerate(done):
            d, lo, hi = c.difference
            y = i + 0.1 + 0.25 * j / max(1, len(done) - 1) if seeds else i  # seeds above the mean
            style = {"alpha": 0.5, "label": "one seed" if i == j == 0 else None} if seeds else {}
            ax.errorbar([d], [y], xerr=[[d - lo], [hi - d]], fmt="o", color="#1f77b4", capsize=4, **style)
            if seeds:
                ax.annotate(f"seed {c.seed}", (hi, y), xytext=(5, 0), textcoords="offset points", fontsize=7)
        mean = a.spread("wc_minus_se") if seeds else None
        if mean is not None:
            sd = mean.std or 0.0
            label = "mean ± sd over seeds" if i == 0 else None
            ax.errorbar(
                [mean.mean], [i - 0.2], xerr=[[sd], [sd]], fmt="D", color="black", capsize=6, label=label
            )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [_row_label(a.first, a if seeds else None) for a in rows], fontsize=8)
    ax.set_xlabel("accuracy after WC data − after SE data (95% paired bootstrap CI)")
    ax.grid(axis="x", alpha=0.3)
    if seeds and rows:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def draw_loss_curves(path: Path, comparisons: Sequence[Comparison]) -> Path:
    """Training loss per step, WC data vs SE data, one panel per (regime, budget), one line per seed."""
    seeds = several_seeds(comparisons)
    panels = [
        a for a in aggregate(main_rows(comparisons)) if any(any(c.train.values()) for c in a.comparisons)
    ]
    fig = Figure(figsize=(max(4.8, 4.2 * max(1, len(panels))), 3.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, a in zip(axes, panels, strict=False):
        for k, c in enumerate(a.comparisons):
            for sampler, colour in (("wc", "#1f77b4"), ("se", "#d62728")):
                curve = (c.train.get(sampler) or {}).get("loss_curve") or []
                if curve:
                    ax.plot(
                        [s for s, _ in curve],
                        [v for _, v in curve],
                        color=colour,
                        linestyle=("-", "--", ":", "-.")[k % 4],
                        label=f"{sampler.upper()} data" + (f", seed {c.seed}" if seeds else ""),
                    )
        ax.set_title(_row_label(a.first), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def seed_mismatches(comparisons: Sequence[Comparison]) -> list[str]:
    """Students of seed s trained on samples of another sampling seed (``data.sampling_seed`` set apart
    from ``seed``): the training run's folder names only its training seed, so the report says so."""
    out = []
    for c in comparisons:
        for sampler, summary in c.train.items():
            samples = (summary or {}).get("samples_run")
            if samples and Path(samples).name != f"seed{c.seed}":
                out.append(
                    f"seed {c.seed}, {c.regime}, {c.budget}: the student on {sampler.upper()} data learned from "
                    f"`{samples}`, not from sampling seed {c.seed} (retrain it with data.sampling_seed={c.seed})"
                )
    return out


def _seed_note(c: Comparison, seeds: bool) -> str:
    return f", seed {c.seed}" if seeds else ""


def _data_links(data_reports: Mapping[int, str]) -> str:
    if len(data_reports) == 1:
        return f"[data report]({next(iter(data_reports.values()))})"
    return "data reports of " + ", ".join(f"[seed {s}]({link})" for s, link in data_reports.items())


def render(
    comparisons: Sequence[Comparison],
    figures: dict[str, Path],
    *,
    title: str,
    notes: Sequence[str],
    data_reports: Mapping[int, str] | None = None,
) -> str:
    """report.md; ``data_reports``: each seed's data report as a link (one seed: the single-seed page)."""
    seeds = several_seeds(comparisons)
    missing = [(c, cell) for c in comparisons for cell in (c.base, c.wc, c.se) if not cell.done]
    intro = (
        "Test accuracy of students fine-tuned on compute-matched data from the weaker-cheaper (WC) and the "
        "stronger-expensive (SE) sampler. Accuracy: pass@1 of greedy decoding on the test split. "
        "WC − SE: difference of the two students' accuracies, 95% CI from a paired bootstrap over test problems "
        "(2,000 resamples). Verdict: *reproduced* where every seed's interval lies above zero (WC data better, "
        f"the paper's finding), *reversed* where every one lies below, *no difference* where every one holds zero "
        f"and is at most ±{POWER} wide."
    )
    if seeds:
        intro += (
            f" Seeds {', '.join(str(s) for s in dict.fromkeys(c.seed for c in comparisons))} (seed s: data "
            "sampled, student trained and evaluated with seed s). Headline: mean ± sample standard deviation "
            "over the seeds whose base, WC and SE evaluations all finished, the range of WC − SE over them, and "
            "how many of the requested seeds that is; each seed's row, with its own interval, follows."
        )
    parts = [
        f"# {title}",
        intro,
        *[f"> {n}" for n in notes],
        "## Headline",
        headline_table(comparisons),
        f"![accuracy]({figures['accuracy'].name})",
        f"![differences]({figures['differences'].name})",
    ]
    if seeds:
        parts += ["## Per seed", seed_table(main_rows(comparisons))]
    controls = control_rows(comparisons)
    if controls:
        named = dict.fromkeys(c.control for c in controls)
        parts += [
            "## Controls",
            "Students that test the mechanism behind the headline, WC − SE as there: "
            + "; ".join(f"**{name}**: {CONTROLS.get(name, name)}" for name in named)
            + ".",
            headline_table(comparisons, controls=True),
        ]
        if seeds:
            parts += [seed_table(controls, controls=True)]
    per_level = [(a, table) for a in aggregate(main_rows(comparisons)) if (table := level_table(a))]
    if per_level:
        parts += [
            "## Per level",
            "Greedy pass@1 by level: by answer / by process (the right answer by a valid chain; arith datasets)"
            + (", mean over the finished seeds." if seeds else "."),
        ]
        for a, table in per_level:
            parts += [f"**{_row_label(a.first)}**", table]
    parts += [
        "## All metrics",
        _detail_table(comparisons),
        "## Training",
        f"![loss curves]({figures['loss'].name})",
    ]
    mismatches = seed_mismatches(comparisons)
    if mismatches:
        parts += ["## Seed check", "\n".join(f"- {m}" for m in mismatches)]
    if data_reports:
        parts += [
            "## The synthetic data",
            f"Coverage, diversity and false positives of the samples: {_data_links(data_reports)}.",
        ]
    if missing:
        lines = "\n".join(
            f"- {cell.label}{_seed_note(c, seeds)}: `{cell.run.command}`" for c, cell in missing
        )
        parts += ["## Missing runs", "These cells are empty until their runs exist:", lines]
    done = [(c, cell) for c in comparisons for cell in (c.base, c.wc, c.se) if cell.done]
    parts += [
        "## Runs",
        "\n".join(
            f"- {cell.label} ({c.regime}, {c.budget}{_seed_note(c, seeds)}): `{cell.run.path}`"
            for c, cell in done
        ),
    ]
    return "\n\n".join(parts) + "\n"


def study_data(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """A row per comparison; over several seeds each row names its seed."""
    seeds = several_seeds(comparisons)
    out = []
    for c in comparisons:
        out.append(
            {
                **({"seed": c.seed} if seeds else {}),
                "dataset": c.dataset,
                "budget": c.budget,
                "regime": c.regime,
                "student": c.student,
                "control": c.control,
                "verdict": verdict([c]),
                "base": c.base.metric("pass@1_greedy"),
                "wc": c.wc.metric("pass@1_greedy"),
                "se": c.se.metric("pass@1_greedy"),
                "wc_minus_se": None if c.difference is None else list(c.difference),
                "num_problems": c.num_problems,
                "runs": {k: str(getattr(c, k).run.path) for k in ("base", "wc", "se")},
            }
        )
    return out


def aggregate_data(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """A row per (dataset, budget, regime): each of STATS as {mean, std, min, max, n} over the finished
    seeds (None where none finished), the seeds requested and finished."""
    out = []
    for a in aggregate(comparisons):
        c = a.first
        spreads = {key: a.spread(key) for key in STATS}
        out.append(
            {
                "dataset": c.dataset,
                "budget": c.budget,
                "regime": c.regime,
                "student": c.student,
                "control": c.control,
                "verdict": verdict(a.finished),
                "seeds": a.seeds,
                "seeds_finished": [f.seed for f in a.finished],
                "progress": a.progress,
                **{key: None if s is None else asdict(s) for key, s in spreads.items()},
            }
        )
    return out


def study_json(comparisons: Sequence[Comparison]) -> list[dict[str, Any]] | dict[str, Any]:
    """study.json: one seed, the rows (as ever); several, {"seeds", "per_seed": rows, "aggregates"}."""
    if not several_seeds(comparisons):
        return study_data(comparisons)
    return {
        "seeds": list(dict.fromkeys(c.seed for c in comparisons)),
        "per_seed": study_data(comparisons),
        "aggregates": aggregate_data(comparisons),
    }


def write_study_report(
    comparisons: Sequence[Comparison],
    out_dir: str | Path,
    *,
    title: str,
    notes: Sequence[str] = (),
    data_reports: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """Write report.md, study.json and the PNGs into a temporary folder, then swap it into place."""
    out_dir = Path(out_dir)
    with runs.atomic_folder(out_dir) as tmp:
        figures = {
            "accuracy": draw_accuracy(tmp / "accuracy.png", comparisons),
            "differences": draw_differences(tmp / "wc_minus_se.png", comparisons),
            "loss": draw_loss_curves(tmp / "loss_curves.png", comparisons),
        }
        runs.atomic_write_json(tmp / DATA, study_json(comparisons))
        runs.atomic_write_text(
            tmp / REPORT, render(comparisons, figures, title=title, notes=notes, data_reports=data_reports)
        )
    return {
        "report_dir": str(out_dir),
        "report": str(out_dir / REPORT),
        "figures": {k: str(out_dir / p.name) for k, p in figures.items()},
    }
