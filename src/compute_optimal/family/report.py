"""How a family's members compare: each member's accuracy per level, by answer and by process.

    python -m compute_optimal.family.report [arith_student arith_wc arith_se] [--limit 500] [--samples 4]

Each member (built first if missing) answers the first ``--limit`` problems of its study dataset's test
split (``conf/dataset/<data.dataset>.yaml``: problems no member trained on), zero-shot in the frame the
family learnt: once greedily and ``--samples`` times at the sampling stage's temperature (what WC and SE
data are made of). A completion is right *by answer* when the grader says so and *by process* when it
also passes the exact process check (:func:`compute_optimal.process_check.check_process`). Prints one
table per measure with the SE / WC ratio per level (the pair of ``conf/pair/<family>.yaml``), and writes
every number as JSON with ``--out``. This is the calibration a study's pair is chosen by: how close
WC's per-sample accuracy is to SE's, and how much room the hardest level leaves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..resolvers import model_config
from ..specs import Model
from . import checkpoint
from .__main__ import DEFAULT

GREEDY, SAMPLED = "greedy", "sampled"


def _problems(model: Model, limit: int) -> list[Any]:
    from .build import dataset_loader, generator

    loader = dataset_loader(str(model.pretrain["data"]["dataset"]))
    test = generator(loader).generate_split(
        "test", num_test=int(loader["num_test"]), levels=loader["levels"], seed=int(loader["seed"])
    )
    return test[:limit]


def _temperature() -> float:
    from omegaconf import OmegaConf

    from ..resolvers import conf_dir

    return float(OmegaConf.load(conf_dir() / "sample.yaml").sampling.temperature)


def evaluate_member(
    model: Model, problems: Sequence[Any], samples: int, temperature: float
) -> dict[str, Any]:
    """Greedy and sampled completions of ``model`` on ``problems``, scored by answer and by process."""
    from ..engines.base import Request, SamplingSettings
    from ..engines.hf_engine import HFEngine
    from ..process_check import check_process
    from ..prompts import get_template

    template = get_template(str(model.pretrain["template"]), 0)
    rows = []
    started = time.monotonic()
    with HFEngine(str(checkpoint(model)), threads=2, batch_size=64) as engine:
        for kind, n, temp in ((GREEDY, 1, 0.0), (SAMPLED, samples, temperature)):
            if n == 0:
                continue
            settings = SamplingSettings(temperature=temp, max_new_tokens=256, stop=template.stop)
            requests = [Request(template.render(p.question), n, 1000 * i) for i, p in enumerate(problems)]
            for problem, generation in zip(problems, engine.generate(requests, settings), strict=True):
                for c in generation.completions:
                    verdict = check_process(c.text, problem.solution, problem.answer)
                    rows.append((kind, problem.level, verdict.answer_correct, verdict.correct))
    return {"rows": rows, "seconds": round(time.monotonic() - started, 1)}


def summarize(rows: Sequence[tuple[str, int, bool, bool]]) -> dict[str, dict[str, dict[str, float]]]:
    """{kind: {level or "all": {"answer": share, "process": share, "n": count}}}."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == kind]
        groups = {str(level): [r for r in mine if r[1] == level] for level in sorted({r[1] for r in mine})}
        groups["all"] = mine
        out[kind] = {
            g: {
                "answer": sum(r[2] for r in items) / len(items),
                "process": sum(r[3] for r in items) / len(items),
                "n": len(items),
            }
            for g, items in groups.items()
        }
    return out


def _ratio(a: float, b: float) -> str:
    return "–" if b == 0 else f"{a / b:.2f}"


def render(results: dict[str, dict[str, Any]], wc: str | None, se: str | None) -> str:
    lines = []
    for kind in (GREEDY, SAMPLED):
        for measure in ("answer", "process"):
            tables = {m: r["accuracy"].get(kind) for m, r in results.items() if r["accuracy"].get(kind)}
            if not tables:
                continue
            groups = list(next(iter(tables.values())))
            title = f"{kind} accuracy by {measure}"
            if kind == SAMPLED:
                title += f" (per sample, temperature {next(iter(results.values()))['temperature']})"
            lines += ["", title, "model".ljust(16) + "".join(g.rjust(8) for g in groups)]
            for m, table in tables.items():
                lines.append(m.ljust(16) + "".join(f"{table[g][measure]:8.3f}" for g in groups))
            if wc in tables and se in tables:
                ratios = [_ratio(tables[se][g][measure], tables[wc][g][measure]) for g in groups]
                lines.append("SE / WC".ljust(16) + "".join(r.rjust(8) for r in ratios))
    return "\n".join(lines)


def _pair(models: Sequence[Model]) -> tuple[str | None, str | None]:
    from omegaconf import OmegaConf

    from ..resolvers import conf_dir

    family = models[0].pretrain.get("name") if models and models[0].pretrain else None
    path = conf_dir() / "pair" / f"{family}.yaml"
    if not path.is_file():
        return None, None
    pair = OmegaConf.load(path)
    return str(pair.wc), str(pair.se)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compute_optimal.family.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("models", nargs="*", help=f"family members (default {' '.join(DEFAULT)})")
    parser.add_argument("--limit", type=int, default=500, help="test problems (default 500)")
    parser.add_argument("--samples", type=int, default=4, help="sampled completions per problem (default 4)")
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    args = parser.parse_args(argv)
    try:
        if args.limit < 1 or args.samples < 0:
            raise UserError("--limit must be at least 1 and --samples at least 0")
        models = [Model.from_config(model_config(name)) for name in args.models or DEFAULT]
        for model in models:
            if model.origin != "trained":
                raise UserError(f"model {model.name!r} has origin {model.origin!r}, not trained")
        temperature = _temperature()
        results = {}
        for model in models:
            problems = _problems(model, args.limit)
            measured = evaluate_member(model, problems, args.samples, temperature)
            card = json.loads((Path(checkpoint(model)) / "family.json").read_text())
            results[model.name] = {
                "accuracy": summarize(measured["rows"]),
                "temperature": temperature,
                "problems": len(problems),
                "samples": args.samples,
                "seconds": measured["seconds"],
                "card": {k: card.get(k) for k in ("params_non_embedding", "steps", "tokens", "final_loss")},
            }
            print(f"{model.name}: {results[model.name]['card']} ({measured['seconds']} s)", flush=True)
        print(render(results, *_pair(models)))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
