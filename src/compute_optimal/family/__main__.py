"""Build family members one after another (each is cached; a built one is only looked up).

    python -m compute_optimal.family [arith_student arith_wc arith_se]
    python -m compute_optimal.family experiment=embedded [override ...]   # the pair's trained members

With Hydra overrides (what a recipe's ``module`` stage passes), the members are those of the pair the
sampling config composes with them (``pair.wc``, ``pair.se``, ``pair.distill_student``) that are trained
here; a pair of pretrained models builds nothing.

Prints each member's training card: parameters, steps, tokens, final loss, seconds, whether its weights match
the hash recorded in the repository, checkpoint folder. ``--record`` writes the members' hashes into
``family/weights.json`` (for a recipe with ``train.kernels: avx2``, whose weights any AVX2 machine reproduces).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import UserError
from ..resolvers import model_config
from ..specs import Model
from . import checkpoint

DEFAULT = ("arith_student", "arith_wc", "arith_se")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compute_optimal.family", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "models",
        nargs="*",
        help=f"model config names (origin: trained; default {' '.join(DEFAULT)}) or "
        "Hydra overrides of the sampling config (key=value), whose pair's trained members are built",
    )
    parser.add_argument(
        "--record", action="store_true", help="record the members' weight hashes in family/weights.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [a for a in args.models if "=" not in a]
    overrides = [a for a in args.models if "=" in a]
    try:
        if overrides and names:
            raise UserError("give model names or Hydra overrides, not both")
        if overrides:
            models = pair_members(overrides)
            if not models:
                print("nothing to build: the pair has no model trained here")
        else:
            models = [Model.from_config(model_config(name)) for name in names or DEFAULT]
        for model in models:
            if model.origin != "trained":
                raise UserError(f"model {model.name!r} has origin {model.origin!r}, not trained")
        cards = {}
        for model in models:
            folder = Path(checkpoint(model))
            card = cards[folder.name] = json.loads((folder / "family.json").read_text())
            keys = (
                "params_non_embedding",
                "params_total",
                "steps",
                "tokens",
                "final_loss",
                "seconds",
                "matches_recorded",
            )
            print(
                f"{model.name}: " + ", ".join(f"{k}={card.get(k)}" for k in keys) + f"  ({folder})",
                flush=True,
            )
        if args.record:
            record(cards)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def record(cards: dict[str, dict], path: Path | None = None) -> None:
    """Add the members' weight hashes to family/weights.json (folder name -> sha256)."""
    from .build import recorded_weights

    path = path or Path(__file__).with_name("weights.json")
    hashes = recorded_weights(path) | {
        name: card["weights_sha256"] for name, card in cards.items() if card.get("weights_sha256")
    }
    path.write_text(json.dumps(dict(sorted(hashes.items())), indent=2) + "\n")
    print(f"recorded {len(cards)} member(s) in {path}")


def pair_members(overrides: list[str]) -> list[Model]:
    """The trained members of the pair the sampling config composes with ``overrides``, student first."""
    from omegaconf.errors import OmegaConfBaseException

    from ..recipes import compose_job

    try:
        pair = compose_job("run_sample.py", overrides).pair
        names = [pair.get(k) for k in ("distill_student", "wc", "se")]
    except OmegaConfBaseException as exc:
        raise UserError(f"the overrides {overrides} do not compose: {exc}") from exc
    models = [Model.from_config(model_config(name)) for name in dict.fromkeys(n for n in names if n)]
    return [m for m in models if m.origin == "trained"]


if __name__ == "__main__":
    sys.exit(main())
