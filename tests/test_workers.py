"""How `make test` spreads the suite over two pytest-xdist workers (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

GROUPED = """
import os
import pytest

pytestmark = pytest.mark.xdist_group("shared")


@pytest.mark.parametrize("i", range(4))
def test_grouped(i):
    with open(os.environ["WORKERS_LOG"], "a") as log:
        log.write(f"grouped {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""
LOOSE = """
import os
import pytest


@pytest.mark.parametrize("i", range(4))
def test_loose(i):
    with open(os.environ["WORKERS_LOG"], "a") as log:
        log.write(f"loose {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""


def test_an_xdist_group_runs_on_one_worker(tmp_path: Path) -> None:
    """The suite's conftest under `-n 2 --dist loadgroup`: the 4 tests of one group run on one worker (as
    the SLURM tests must: one cluster), the 4 others wherever a worker is free (which one depends on the
    machine's load: not asserted). pytest-xdist 3.8 alone, under pytest 9.2, scattered the group (it names
    groups through a node attribute pytest no longer reads)."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    (tmp_path / "test_a_grouped.py").write_text(GROUPED)
    (tmp_path / "test_b_loose.py").write_text(LOOSE)
    log = tmp_path / "workers.log"
    env = {**os.environ, "WORKERS_LOG": str(log), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
         str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [line.split() for line in log.read_text().splitlines()]
    grouped = [worker for kind, worker in rows if kind == "grouped"]
    loose = [worker for kind, worker in rows if kind == "loose"]
    assert len(grouped) == 4 and len(set(grouped)) == 1, rows
    assert len(loose) == 4 and set(loose) <= {"gw0", "gw1"}, rows
