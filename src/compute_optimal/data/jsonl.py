"""Line-numbered JSONL reading and field checks shared by every loader.

Every row a loader sees is a :class:`Record` that knows where it came from, so any
error can name the file and the 1-based line (or the Hub dataset and row) at fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compute_optimal.data.problem import DatasetError

_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "a list"}


@dataclass(frozen=True)
class Record:
    """One JSON object and its position: ``source`` (file or Hub name), ``unit`` ("line"/"row")."""

    source: str
    unit: str
    lineno: int  # 1-based line (file) or row (Hub) number
    index: int  # 0-based index among non-blank rows; used for generated ids
    data: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.source}, {self.unit} {self.lineno}"

    def error(self, what: str) -> DatasetError:
        """A DatasetError naming this row; raise it."""
        return DatasetError(f"{self.where}: {what}")

    def get(self, field: str, typ: type | tuple[type, ...], *, required: bool = True) -> Any:
        """The field's value, checked against ``typ`` (bool never passes for int).

        Missing optional fields (and explicit nulls) give None.
        """
        if field not in self.data or self.data[field] is None:
            if required:
                raise self.error(f"missing required field {field!r}")
            return None
        value = self.data[field]
        types = typ if isinstance(typ, tuple) else (typ,)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            name = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            raise self.error(f"field {field!r} must be {name}, got {type(value).__name__} {value!r:.60}")
        return value


def read_jsonl(path: str | Path) -> Iterator[Record]:
    """Yield one Record per non-blank line; DatasetError on bad UTF-8, bad JSON or a non-object line."""
    path = Path(path)
    index = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DatasetError(f"{where}: not valid UTF-8 ({e.reason})") from None
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield Record(str(path), "line", lineno, index, obj)
            index += 1
