"""Datasets as lists of :class:`Problem`: GSM8K / MATH / MATH-500 loaders and subset selection.

The generated arithmetic dataset lives in :mod:`compute_optimal.data.arith` (``generate_split``).
"""

from compute_optimal.data.loaders import load_problems, select_subset
from compute_optimal.data.problem import DatasetError, Problem

__all__ = ["DatasetError", "Problem", "load_problems", "select_subset"]
