"""Build family members one after another (each is cached; a built one is only looked up).

    python -m compute_optimal.family [arith_student arith_wc arith_se]

Prints each member's training card: parameters, steps, tokens, final loss, seconds, checkpoint folder.
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
        "models", nargs="*", default=list(DEFAULT), help="model config names (origin: trained)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        models = [Model.from_config(model_config(name)) for name in args.models]
        for model in models:
            if model.origin != "trained":
                raise UserError(f"model {model.name!r} has origin {model.origin!r}, not trained")
        for model in models:
            folder = Path(checkpoint(model))
            card = json.loads((folder / "family.json").read_text())
            keys = ("params_non_embedding", "params_total", "steps", "tokens", "final_loss", "seconds")
            print(f"{model.name}: " + ", ".join(f"{k}={card[k]}" for k in keys) + f"  ({folder})", flush=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
