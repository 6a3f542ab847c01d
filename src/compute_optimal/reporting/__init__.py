"""Reports over finished runs: the WC-vs-SE data comparison (numbers, figures, Markdown)."""

from .comparison import (
    BudgetComparison,
    DataComparison,
    RunData,
    RunRef,
    check_pair,
    load_comparison,
    load_run,
)
from .data_report import write_report

__all__ = [
    "BudgetComparison",
    "DataComparison",
    "RunData",
    "RunRef",
    "check_pair",
    "load_comparison",
    "load_run",
    "write_report",
]
