"""The one record every dataset loader produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset could not be loaded: names the file/dataset, the row and what is wrong."""


@dataclass(frozen=True)
class Problem:
    """One math problem with its gold answer.

    id:       stable, unique within (dataset, split); used as the key of every sample row
    question: the problem statement as shown to the model
    answer:   the gold final answer (GSM8K: the number after ``####`` without commas;
              MATH: the content of the last ``\\boxed{}``; arith: an integer)
    solution: the reference solution (calculator notes stripped for GSM8K)
    level:    difficulty 1-5 (MATH level, arith steps); None where the dataset has none
    subject:  MATH subject / type; None where the dataset has none
    """

    id: str
    question: str
    answer: str
    solution: str
    level: int | None = None
    subject: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)
