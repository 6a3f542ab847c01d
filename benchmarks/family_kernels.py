"""What pinning the family's CPU kernels to AVX2 costs: one member trained natively and pinned, in turns.

    .venv/bin/python benchmarks/family_kernels.py [--model arith_wc] [--tokens 2e5] [--repeats 2]

Trains ``--model`` with its family recipe cut to ``--tokens`` tokens, ``train.kernels: native`` and ``avx2``
alternately (A B A B ...), each in its own child process and cache (``compute_optimal.family.build``), and
prints each training's seconds (from its ``family.json``, the training loop alone), the median ratio pinned /
native, and whether the two kinds of weights differ (on a CPU without AVX-512 they are the same kernels).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile

from compute_optimal import family
from compute_optimal.resolvers import model_config
from compute_optimal.specs import Model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="arith_wc")
    parser.add_argument("--tokens", type=float, default=2e5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    base = Model.from_config(model_config(args.model))
    seconds: dict[str, list[float]] = {"native": [], "avx2": []}
    digests: dict[str, set[str]] = {"native": set(), "avx2": set()}
    for _ in range(args.repeats):
        for kind in ("native", "avx2"):
            train = {**base.pretrain["train"], "tokens": args.tokens, "kernels": kind}
            model = dataclasses.replace(base, pretrain={**base.pretrain, "train": train})
            os.environ["COMPUTE_OPTIMAL_CACHE"] = tempfile.mkdtemp(prefix=f"kernels-{kind}-")
            card = json.loads((family.checkpoint(model) / "family.json").read_text())
            seconds[kind].append(card["seconds"])
            digests[kind].add(card["weights_sha256"])
            print(
                f"{kind}: {card['seconds']} s ({card['kernels']['aten']}, {card['steps']} steps)", flush=True
            )
    ratio = statistics.median(a / n for a, n in zip(seconds["avx2"], seconds["native"], strict=True))
    print(
        f"RESULT model={args.model} tokens={args.tokens:g} native_s={seconds['native']} avx2_s={seconds['avx2']} "
        f"ratio_avx2_over_native={ratio:.3f} weights_differ={digests['native'] != digests['avx2']} "
        f"reproducible={len(digests['native']) == len(digests['avx2']) == 1}"
    )


if __name__ == "__main__":
    main()
