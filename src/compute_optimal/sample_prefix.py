"""Runs whose samples a finished run already holds: taken from it, not generated again.

Sample ``i`` of a problem is seeded ``problem_seed(seed, problem) + i`` on every engine, whatever the number
of samples per problem, so a run of ``n`` samples draws the first ``n`` samples of a run of ``N >= n`` with the
same model, problems, prompt, decoding settings, engine and seed; a greedy run (temperature 0) draws nothing,
so its seed does not matter either. Where such a run is finished beside it (``SampleRun.siblings``: another
budget or seed of the same model; an evaluation's other seeds), a run takes its first ``n`` samples per
problem, grades included, and says so in its summary (``derived_from``). A budget sweep then generates only
its largest budget per model; a study's low budget and number-matched runs come out of its high budget's
samples, and a base model's greedy evaluation is generated once for all seeds.

What differs from generating them again: nothing in distribution, and nothing bit for bit on a seeded
engine, except where another batching moves a logit in its last bits (as any two batchings can). On a hosted
API, which does not promise seeded samples, the first n of N independent draws are n independent draws.
``sampling.reuse_prefix=false`` generates every run itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .runs import SIGNATURE, SampleRun

# Signature fields in which a donor may differ: its budget and sample count (more samples per problem), its
# chunking (which never changes a sample) and, for greedy runs, its seed.
_FREE = ("budget", "samples_per_problem")


def _comparable(signature: Mapping[str, Any]) -> dict[str, Any]:
    # As a run folder records it (runs.claim_run_dir): a plan's signature compares equal to a stored one.
    rest = json.loads(json.dumps({k: v for k, v in signature.items() if k not in _FREE}, default=str))
    sampling = rest.get("sampling", {})
    sampling.pop("chunk_size", None)
    if sampling.get("temperature", 1) == 0:  # greedy: the seed draws nothing
        rest.pop("seed", None)
    return rest


def find_donor(run: SampleRun, signature: Mapping[str, Any]) -> tuple[SampleRun, int] | None:
    """The finished run among ``run``'s siblings (``SampleRun.siblings``) that holds at least as many
    samples per problem of the same definition, and its sample count; the smallest such run, None if none."""
    want, mine = int(signature["samples_per_problem"]), _comparable(signature)
    candidates = []
    for other in run.siblings():
        if not other.is_finished() or not (other.path / SIGNATURE).is_file():
            continue
        theirs = other.signature()
        have = int(theirs.get("samples_per_problem", 0))
        if have >= want and _comparable(theirs) == mine:
            candidates.append((have, str(other.path), other))
    if not candidates:
        return None
    have, _, donor = min(candidates, key=lambda c: c[:2])
    return donor, have


def take_prefix(donor: SampleRun, problem_ids: list[str], n: int) -> pd.DataFrame:
    """The donor's first ``n`` samples of each of ``problem_ids``, in its row order."""
    frame = pd.read_parquet(donor.samples_path)
    taken = frame[(frame["sample_index"] < n) & frame["problem_id"].isin(set(problem_ids))]
    return taken.reset_index(drop=True)
