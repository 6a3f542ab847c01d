"""False-positive rate of correct-answer solutions: an LLM judge, and human label sheets.

A false positive is a solution whose final answer matches the gold answer but whose reasoning is
wrong. ``FPR = incorrect / (correct + incorrect)`` over the rated solutions; verdicts the judge gave
in a form that cannot be parsed (and blank human labels) are counted as unknown and reported next
to the rate, never as correct.

* LLM judge: any :class:`~compute_optimal.engines.Engine` (an embedded model here, a large model on a
  cluster) reads :func:`render_judge_prompt` (numbered steps, a verdict per step, a last line
  ``VERDICT: CORRECT`` or ``VERDICT: INCORRECT``); :func:`parse_verdict` reads that line strictly.
* Human labels: :func:`export_sheet` writes the sampled solutions to a CSV (or JSONL) sheet with an
  empty ``label`` column; :func:`import_sheet` reads the labelled sheet back.
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import metrics, runs
from .analysis import AnalysisError
from .engines import Engine, Request, SamplingSettings

CORRECT, INCORRECT, UNKNOWN = "correct", "incorrect", "unknown"

JUDGE_INSTRUCTIONS = (
    "Check a solution to a math problem. Its final answer matches the reference answer; decide "
    "whether its reasoning is correct too. Go through the numbered steps in order and write one line "
    'per step: "Step i: CORRECT" or "Step i: INCORRECT (reason)". Then write a last line "VERDICT: '
    'CORRECT" if every step is correct, or "VERDICT: INCORRECT" if any step is wrong (a wrong '
    "calculation, an unjustified claim, or a right answer reached by luck)."
)
# Two worked examples, so that pretrained (non-chat) judges see the format as well as read it.
JUDGE_EXAMPLES: tuple[tuple[str, str, str, str], ...] = (
    (
        "Ben has 4 marbles. He finds 3 more marbles. How many marbles does Ben have now?",
        "7",
        "Ben has 4 marbles and finds 3 more, so he has 4 + 3 = 7 marbles. The answer is 7.",
        "Step 1: CORRECT\nStep 2: CORRECT\nVERDICT: CORRECT",
    ),
    (
        "A shelf holds 18 books. Lily takes 6 books away. Then she puts 2 books back. "
        "How many books are on the shelf now?",
        "14",
        "18 - 6 = 10 books are left. She puts 2 back and 4 more fall, so 10 + 4 = 14. The answer is 14.",
        "Step 1: INCORRECT (18 - 6 = 12, not 10)\nStep 2: INCORRECT (no books fall; she puts 2 back)\n"
        "Step 3: CORRECT\nVERDICT: INCORRECT",
    ),
)
JUDGE_STOP = ("\n### Problem", "\n\n\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$\\(])")
_VERDICT_LINE = re.compile(r"(?:final\s+)?verdict\b", re.IGNORECASE)
_VERDICT = re.compile(r"(?:final\s+)?verdict\s*:\s*(correct|incorrect)\s*\.?", re.IGNORECASE)


def split_steps(completion: str) -> list[str]:
    """The solution's steps: its non-empty lines, or its sentences when it is one line."""
    lines = [line.strip() for line in completion.strip().splitlines() if line.strip()]
    if len(lines) == 1:
        lines = [s.strip() for s in _SENTENCE_END.split(lines[0]) if s.strip()]
    return lines or [completion.strip()]


def _block(question: str, gold: str, completion: str) -> str:
    steps = "\n".join(f"[{i}] {s}" for i, s in enumerate(split_steps(completion), 1))
    return (
        f"### Problem\n{question.strip() or '(not available)'}\n### Reference answer\n{gold}\n"
        f"### Solution\n{steps}\n### Evaluation\n"
    )


def render_judge_prompt(question: str, gold_answer: str, completion: str) -> str:
    """Instructions, the worked examples, then this solution with numbered steps, ending where the judge writes."""
    shots = [_block(q, a, s) + e for q, a, s, e in JUDGE_EXAMPLES]
    return "\n\n".join([JUDGE_INSTRUCTIONS, *shots, _block(question, gold_answer, completion)])


# Identifies the prompt in cached verdicts: a new prompt re-judges instead of reusing old verdicts.
JUDGE_PROMPT_VERSION = hashlib.sha256(render_judge_prompt("q", "a", "s").encode()).hexdigest()[:12]


def parse_verdict(text: str) -> str:
    """ "correct" / "incorrect" from the judge's ``VERDICT: ...`` line(s); "unknown" otherwise.

    Strict: a verdict line is a line that starts with "VERDICT" (or "Final verdict"), markdown
    emphasis aside, and must read exactly ``VERDICT: CORRECT`` or ``VERDICT: INCORRECT`` (any case,
    an optional full stop). No verdict line, a verdict line with anything else on it ("PARTIALLY
    CORRECT", "CORRECT or INCORRECT"), or verdict lines that disagree -> "unknown".
    """
    found = set()
    for raw in unicodedata.normalize("NFKC", text or "").splitlines():
        line = raw.strip().strip("*_`#>- ").replace("*", "").replace("_", "").strip()
        if not _VERDICT_LINE.match(line):
            continue
        match = _VERDICT.fullmatch(line)
        found.add(match.group(1).lower() if match else UNKNOWN)
    return found.pop() if len(found) == 1 else UNKNOWN


@dataclass(frozen=True)
class JudgeItem:
    """One correct-answer solution to rate."""

    item_id: str
    dataset: str
    model: str
    budget: str  # the run's budget folder, e.g. "low-compute"
    problem_id: str
    sample_index: int
    question: str
    gold_answer: str
    completion: str


def make_item_id(model: str, budget: str, problem_id: str, sample_index: int) -> str:
    return f"{model}/{budget}/{problem_id}/{int(sample_index)}"


def select_items(
    frame: pd.DataFrame,
    *,
    dataset: str,
    model: str,
    budget: str,
    num_problems: int,
    per_problem: int = 1,
    seed: int = 0,
    questions: Mapping[str, str] | None = None,
) -> list[JudgeItem]:
    """A seeded random sample of ``num_problems`` problems that have a correct solution, and up to
    ``per_problem`` of each one's correct solutions (the paper: 50 problems per model for humans)."""
    if num_problems < 1 or per_problem < 1:
        raise AnalysisError(f"num_problems and per_problem must be >= 1, got {num_problems}, {per_problem}")
    correct = frame[frame["correct"].astype(bool)]
    by_problem = {pid: g for pid, g in correct.groupby("problem_id", sort=True)}
    rng = random.Random(f"{seed}:{model}:{budget}")
    chosen = rng.sample(sorted(by_problem), min(num_problems, len(by_problem)))
    items = []
    for pid in chosen:
        group = by_problem[pid].sort_values("sample_index")
        picks = sorted(rng.sample(range(len(group)), min(per_problem, len(group))))
        for row in group.iloc[picks].itertuples(index=False):
            items.append(
                JudgeItem(
                    item_id=make_item_id(model, budget, pid, row.sample_index),
                    dataset=dataset,
                    model=model,
                    budget=budget,
                    problem_id=str(pid),
                    sample_index=int(row.sample_index),
                    question=(questions or {}).get(str(pid), ""),
                    gold_answer=str(row.gold_answer),
                    completion=str(row.completion),
                )
            )
    return items


@dataclass(frozen=True)
class JudgeSettings:
    temperature: float = 0.0  # greedy: a judge's verdict should not be a coin flip
    max_new_tokens: int = 512
    batch_size: int = 16
    seed: int = 0


@dataclass(frozen=True)
class JudgeVerdict:
    item_id: str
    verdict: str  # correct | incorrect | unknown
    output: str  # the judge's raw text


def _request_seed(seed: int, item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def judge_solutions(
    engine: Engine, items: Sequence[JudgeItem], settings: JudgeSettings | None = None
) -> list[JudgeVerdict]:
    """One judge completion per item (``n=1``), parsed; in item order."""
    settings = settings or JudgeSettings()
    sampling = SamplingSettings(
        temperature=settings.temperature,
        top_p=1.0,
        max_new_tokens=settings.max_new_tokens,
        stop=JUDGE_STOP,
    )
    out: list[JudgeVerdict] = []
    for start in range(0, len(items), max(1, settings.batch_size)):
        batch = items[start : start + max(1, settings.batch_size)]
        requests = [
            Request(
                render_judge_prompt(i.question, i.gold_answer, i.completion),
                1,
                _request_seed(settings.seed, i.item_id),
            )
            for i in batch
        ]
        for item, generation in zip(batch, engine.generate(requests, sampling), strict=True):
            text = generation.completions[0].text
            out.append(JudgeVerdict(item.item_id, parse_verdict(text), text))
    return out


@dataclass(frozen=True)
class FPR:
    """A false-positive rate with its provenance: which method, how many solutions it rests on."""

    method: str  # e.g. "LLM judge (gemma2_27b)" or "human labels (sheet.csv)"
    incorrect: int
    correct: int
    unknown: int  # unparseable judge verdicts / unlabelled rows: excluded from the rate, reported
    confidence: float = 0.95

    @property
    def rated(self) -> int:
        return self.incorrect + self.correct

    @property
    def value(self) -> float | None:
        return self.incorrect / self.rated if self.rated else None

    @property
    def interval(self) -> tuple[float, float]:
        """Wilson interval; (0, 1) when nothing was rated."""
        return metrics.wilson_interval(self.incorrect, self.rated, self.confidence)

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {**asdict(self), "rated": self.rated, "fpr": self.value, "ci_low": low, "ci_high": high}


def fpr_from_verdicts(verdicts: Iterable[str], method: str) -> FPR:
    """Count correct / incorrect / unknown verdicts (or labels) into an FPR."""
    counts = {CORRECT: 0, INCORRECT: 0, UNKNOWN: 0}
    for verdict in verdicts:
        counts[verdict if verdict in (CORRECT, INCORRECT) else UNKNOWN] += 1
    return FPR(method, incorrect=counts[INCORRECT], correct=counts[CORRECT], unknown=counts[UNKNOWN])


# --- a judge against reference verdicts -----------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A judge's verdicts against reference verdicts (e.g. the exact process check) on the same solutions.

    The positive class is "incorrect" (a false positive found): ``tp`` judge and reference say
    incorrect, ``fp`` the judge says incorrect and the reference correct, ``fn`` the judge says correct
    and the reference incorrect, ``tn`` both say correct. A judge verdict that could not be parsed is
    counted in ``unknown`` and a solution without a reference verdict in ``unreferenced``; neither
    enters a rate.
    """

    tp: int
    fp: int
    fn: int
    tn: int
    unknown: int = 0
    unreferenced: int = 0

    @property
    def rated(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def agreement(self) -> float | None:
        return (self.tp + self.tn) / self.rated if self.rated else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa, (p_o - p_e) / (1 - p_e); None where undefined (nothing rated, or p_e = 1:
        both sides gave one and the same verdict throughout)."""
        n = self.rated
        if not n:
            return None
        judge_pos, ref_pos = (self.tp + self.fp) / n, (self.tp + self.fn) / n
        expected = judge_pos * ref_pos + (1 - judge_pos) * (1 - ref_pos)
        if expected == 1:
            return None
        return ((self.tp + self.tn) / n - expected) / (1 - expected)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "rated": self.rated,
            "agreement": self.agreement,
            "precision": self.precision,
            "recall": self.recall,
            "kappa": self.kappa,
        }


def calibrate(pairs: Iterable[tuple[str, str]]) -> Calibration:
    """Count (judge verdict, reference verdict) pairs into a Calibration."""
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0, "unknown": 0, "unreferenced": 0}
    for said, truth in pairs:
        if truth not in (CORRECT, INCORRECT):
            counts["unreferenced"] += 1
        elif said not in (CORRECT, INCORRECT):
            counts["unknown"] += 1
        else:
            cell = ("t" if said == truth else "f") + ("p" if said == INCORRECT else "n")
            counts[cell] += 1
    return Calibration(**counts)


# --- human labels -------------------------------------------------------------------------------

SHEET_COLUMNS = [
    "item_id",
    "dataset",
    "model",
    "budget",
    "problem_id",
    "sample_index",
    "question",
    "gold_answer",
    "completion",
    "label",
]
LABELS = (CORRECT, INCORRECT)


def export_sheet(path: str | Path, items: Sequence[JudgeItem], *, seed: int = 0) -> Path:
    """Write a label sheet (``.csv`` or ``.jsonl``), rows shuffled, ``label`` empty.

    Refuses to overwrite an existing sheet: it may already hold someone's labels.
    """
    path = Path(path)
    if path.suffix not in (".csv", ".jsonl"):
        raise AnalysisError(f"label sheet {path}: use a .csv or .jsonl file name")
    if path.exists():
        raise AnalysisError(
            f"label sheet {path} already exists (it may hold labels): label it and import it, "
            "or delete it to export a new one"
        )
    if not items:
        raise AnalysisError("no correct-answer solutions to label: the runs have no correct samples")
    rows = [{**asdict(i), "label": ""} for i in items]
    random.Random(seed).shuffle(rows)  # mixed models and budgets: labellers see no grouping
    frame = pd.DataFrame(rows, columns=SHEET_COLUMNS)
    if path.suffix == ".csv":
        runs.atomic_write_text(path, frame.to_csv(index=False))
    else:
        runs.atomic_write_text(path, frame.to_json(orient="records", lines=True, force_ascii=False))
    return path


def import_sheet(path: str | Path) -> pd.DataFrame:
    """Read a labelled sheet; ``label`` becomes "correct", "incorrect" or "" (unlabelled).

    A label other than correct / incorrect / blank (any case) stops with the row and item named.
    """
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"label sheet {path} does not exist")
    try:
        if path.suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False).fillna("").astype(str)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except ValueError as exc:
        raise AnalysisError(f"label sheet {path} cannot be read: {exc}") from None
    missing = {"item_id", "model", "budget", "label"} - set(frame.columns)
    if missing:
        raise AnalysisError(f"label sheet {path} lacks the column(s) {sorted(missing)}")
    labels = frame["label"].str.strip().str.lower()
    for row, (label, item) in enumerate(zip(labels, frame["item_id"], strict=True), 1):
        if label not in (*LABELS, ""):
            raise AnalysisError(
                f"label sheet {path}, row {row} (item_id {item}): label {frame['label'].iloc[row - 1]!r} "
                "is not one of: correct, incorrect, or blank (unlabelled)"
            )
    duplicated = frame["item_id"][frame["item_id"].duplicated()]
    if not duplicated.empty:
        raise AnalysisError(f"label sheet {path}: item_id {duplicated.iloc[0]} appears more than once")
    return frame.assign(label=labels)


def human_fpr(sheet: pd.DataFrame, method: str) -> dict[tuple[str, str], FPR]:
    """FPR per (model, budget folder) from an imported sheet; blank labels count as unknown."""
    return {
        (str(model), str(budget)): fpr_from_verdicts(group["label"].replace("", UNKNOWN), method)
        for (model, budget), group in sheet.groupby(["model", "budget"], sort=True)
    }
