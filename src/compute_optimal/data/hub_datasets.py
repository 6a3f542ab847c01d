"""Rows of a Hugging Face Hub dataset, as the same Records the JSONL reader yields.

`datasets` is imported only here and only when a Hub load is asked for: the local
JSONL path (tests, offline runs) must not need it.
"""

from __future__ import annotations

from collections.abc import Iterator

from compute_optimal.data.jsonl import Record
from compute_optimal.data.problem import DatasetError


def read_hub(hub_id: str, config: str | None, split: str) -> Iterator[Record]:
    """Yield one Record per row of ``load_dataset(hub_id, config, split=split)``."""
    try:
        import datasets
    except ImportError as e:
        raise DatasetError(
            f"loading {hub_id!r} from the Hugging Face Hub needs the `datasets` package: "
            "`pip install datasets` (or point `files` at local JSONL copies)"
        ) from e
    source = f"Hub dataset {hub_id}" + (f" ({config})" if config else "") + f" split {split!r}"
    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # network, unknown name/config/split: all reported the same way
        raise DatasetError(f"could not load {source}: {type(e).__name__}: {e}") from e
    for i, row in enumerate(ds):
        yield Record(source, "row", i + 1, i, dict(row))
