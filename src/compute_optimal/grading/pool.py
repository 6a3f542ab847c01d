"""A small process pool that can kill one stuck comparison without losing the batch.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot cancel a running task, and a worker
stuck in C code would hold the batch forever. Here every worker has its own pair of pipes and runs
one task at a time; the parent gives each task a deadline, kills the worker that overruns it
(SIGKILL, immediate), records ``timeout`` and starts a replacement.

Inside a worker a soft deadline (``setitimer``; workers are single-threaded, so the signal works)
fires first and turns most timeouts into a clean ``timeout`` verdict without a kill; the hard kill
follows ``_GRACE_S`` later for code that signals cannot interrupt.

Workers are plain ``python -c`` subprocesses, not ``multiprocessing`` children: nothing of the
caller is forked (it may hold threads or a CUDA context) and the caller's ``__main__`` script is
never re-imported (no ``if __name__ == "__main__"`` guard needed, no second copy of a vLLM import).
Starting one costs about a second (importing sympy and warming the LaTeX parser), paid once per
process: the module-level pool is reused by every call and stopped atexit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait

_GRACE_S = 0.3  # hard kill this long after the soft deadline
_START_TIMEOUT_S = 120.0  # a worker that is not ready by then is broken (not a slow comparison)
_MAX_START_FAILURES = 5
_MEMORY_LIMIT_BYTES = 4 * 1024**3  # address-space cap per worker: a huge power fails, not the machine

Task = tuple[str, str]  # (pred answer, gold answer)
Result = tuple[bool, str]  # (correct, status: "ok" | "timeout" | "error")


class PoolError(RuntimeError):
    """The workers could not be started."""


# ---------------------------------------------------------------------------------------------------
# Worker side (runs in the subprocess)


class _Deadline(BaseException):
    """Raised by the soft-deadline signal; a BaseException so that ``except Exception`` in sympy or
    Math-Verify does not swallow it."""


_armed = False


def _on_alarm(signum: int, frame: object) -> None:
    if _armed:  # an alarm arriving after the task finished is ignored
        raise _Deadline


def _worker_main(read_fd: int, write_fd: int) -> None:
    """Entry point of a worker process: answer (pred, gold, budget_s) messages until EOF."""
    global _armed
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    with contextlib.suppress(Exception):
        # Linux: die with the parent, even while stuck in C code (PR_SET_PDEATHSIG = 1).
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    if os.getppid() == 1:
        return  # the parent is already gone
    signal.signal(signal.SIGALRM, _on_alarm)
    with contextlib.suppress(ValueError, OSError, ImportError):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT_BYTES, _MEMORY_LIMIT_BYTES))
    tasks, results = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    from compute_optimal.grading.equivalence import math_equal, warm_up

    warm_up()
    results.send("ready")
    while True:
        try:
            msg = tasks.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        pred, gold, budget_s = msg
        try:
            # Repeats every 50 ms in case sympy swallows the first one in a bare ``except:``.
            _armed = True
            signal.setitimer(signal.ITIMER_REAL, max(budget_s, 0.01), 0.05)
            try:
                result: Result = (bool(math_equal(pred, gold)), "ok")
            finally:
                _armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Deadline:
            result = (False, "timeout")
        except (Exception, RecursionError, MemoryError):  # a bad answer must not end the worker
            result = (False, "error")
        try:
            results.send(result)
        except (BrokenPipeError, OSError):
            return


# ---------------------------------------------------------------------------------------------------
# Parent side

_WORKER_CMD = "from compute_optimal.grading.pool import _worker_main; import sys; _worker_main(int(sys.argv[1]), int(sys.argv[2]))"


class _Worker:
    def __init__(self) -> None:
        task_r, task_w = os.pipe()
        res_r, res_w = os.pipe()
        env = dict(os.environ)
        # The worker must import this very package, wherever the caller found it.
        paths = [p for p in sys.path if p] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CMD, str(task_r), str(res_w)],
                pass_fds=(task_r, res_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # keep the caller's stdout clean (CLI output); stderr stays
                env=env,
            )
        finally:
            os.close(task_r)
            os.close(res_w)
        self.tasks = Connection(task_w, readable=False)
        self.conn = Connection(res_r, writable=False)
        self.started = time.monotonic()
        self.ready = False
        self.task: int | None = None
        self.deadline = 0.0

    def close_pipes(self) -> None:
        for c in (self.tasks, self.conn):
            with contextlib.suppress(Exception):
                c.close()

    def kill(self) -> None:
        """SIGKILL without waiting: a process freeing gigabytes can take a moment to exit, and the
        caller's deadline does not wait for that. ``_reap`` collects it later."""
        with contextlib.suppress(Exception):
            self.proc.kill()
        self.close_pipes()
        _DYING.append(self.proc)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.tasks.send(None)
        self.close_pipes()
        try:
            self.proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _DYING.append(self.proc)


_DYING: list[subprocess.Popen] = []


def _reap() -> None:
    for proc in list(_DYING):
        if proc.poll() is not None:
            _DYING.remove(proc)


class GradingPool:
    """``run(tasks, timeout_s)`` -> one Result per task, in order; never raises for a bad task."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.size = workers
        self.pid = os.getpid()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._start_failures = 0

    def resize(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        with self._lock:
            self.size = workers
            while len(self._workers) > workers:
                self._workers.pop().stop()

    def start(self, wait_ready: bool = True) -> None:
        """Start the workers now (otherwise the first task that needs them does), and by default
        wait until they are ready, so that later calls do not pay the start-up."""
        with self._lock:
            self._fill()
            deadline = time.monotonic() + _START_TIMEOUT_S
            while wait_ready and not all(w.ready for w in self._workers) and time.monotonic() < deadline:
                starting = [w for w in self._workers if not w.ready]
                for w in starting:
                    if w.conn in wait([w.conn for w in starting], timeout=1.0):
                        try:
                            w.ready = w.conn.recv() == "ready"
                        except (EOFError, OSError):
                            self._start_failures += 1
                            self._replace(w)
                if self._start_failures >= _MAX_START_FAILURES:
                    self._shutdown()
                    raise PoolError(f"grading workers fail to start ({sys.executable} -c {_WORKER_CMD!r})")

    def _fill(self) -> None:
        _reap()
        while len(self._workers) < self.size:
            self._workers.append(_Worker())

    def run(
        self,
        tasks: Sequence[Task],
        timeout_s: float,
        *,
        overall_deadline: float | None = None,
        on_result: Callable[[int, Result], None] | None = None,
    ) -> list[Result]:
        """Grade ``tasks``; each gets ``timeout_s`` from the moment a worker starts it.

        ``overall_deadline`` (a ``time.monotonic()`` value) additionally caps every task, including
        the wait for workers to start: whatever is unfinished by then is a timeout.
        """
        with self._lock:
            return self._run(tasks, timeout_s, overall_deadline, on_result)

    def _run(
        self,
        tasks: Sequence[Task],
        timeout_s: float,
        overall_deadline: float | None,
        on_result: Callable[[int, Result], None] | None,
    ) -> list[Result]:
        results: list[Result | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        remaining = len(tasks)

        def finish(idx: int, res: Result) -> None:
            nonlocal remaining
            results[idx] = res
            remaining -= 1
            if on_result is not None:
                on_result(idx, res)

        while remaining:
            if pending:
                self._fill()
            now = time.monotonic()
            if overall_deadline is not None and now >= overall_deadline:
                # Out of time: running tasks are killed, queued ones never start.
                for w in [w for w in self._workers if w.task is not None]:
                    finish(w.task, (False, "timeout"))
                    self._replace(w, respawn=False)
                while pending:
                    finish(pending.popleft(), (False, "timeout"))
                break
            for w in list(self._workers):
                if w.ready and w.task is None and pending:
                    idx = pending.popleft()
                    budget = timeout_s
                    if overall_deadline is not None:
                        budget = min(budget, overall_deadline - now)
                    try:
                        w.tasks.send((tasks[idx][0], tasks[idx][1], budget))
                    except (BrokenPipeError, OSError):
                        pending.appendleft(idx)
                        self._replace(w)
                        continue
                    w.task = idx
                    w.deadline = now + budget + _GRACE_S
            waits = [w.deadline for w in self._workers if w.task is not None]
            waits += [w.started + _START_TIMEOUT_S for w in self._workers if not w.ready]
            if overall_deadline is not None:
                waits.append(overall_deadline)
            wait_s = max(0.0, min(waits) - time.monotonic()) if waits else 0.05
            ready_conns = wait([w.conn for w in self._workers], timeout=wait_s)
            for w in list(self._workers):
                if w.conn not in ready_conns:
                    continue
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):
                    # The worker died (memory limit, crash): its task is an error, not a hang.
                    if w.task is not None:
                        finish(w.task, (False, "error"))
                    elif not w.ready:
                        self._start_failures += 1
                    self._replace(w)
                    continue
                if msg == "ready":
                    w.ready = True
                    self._start_failures = 0
                elif w.task is not None:
                    finish(w.task, msg)
                    w.task = None
            now = time.monotonic()
            for w in list(self._workers):
                if w.task is not None and now >= w.deadline:
                    finish(w.task, (False, "timeout"))
                    self._replace(w, respawn=bool(pending))
                elif not w.ready and now >= w.started + _START_TIMEOUT_S:
                    self._start_failures += 1
                    self._replace(w)
            if self._start_failures >= _MAX_START_FAILURES:
                self._shutdown()
                raise PoolError(
                    f"grading workers fail to start ({sys.executable} -c {_WORKER_CMD!r}); see their stderr"
                )
        return [r if r is not None else (False, "error") for r in results]

    def _replace(self, w: _Worker, respawn: bool = True) -> None:
        w.kill()
        self._workers.remove(w)
        if respawn:
            self._workers.append(_Worker())

    def _shutdown(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers.clear()
        for proc in _DYING:
            with contextlib.suppress(Exception):
                proc.wait(timeout=1.0)
        _reap()

    def shutdown(self) -> None:
        with self._lock:
            self._shutdown()


_POOL: GradingPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool(workers: int | None = None) -> GradingPool:
    """The module-level pool, created on first use (``workers`` or all cores).

    A later call with another ``workers`` resizes it; ``None`` keeps whatever size it has. A pool
    inherited through ``fork`` belongs to the parent and is replaced.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.pid != os.getpid():
            _POOL = None
        if _POOL is None:
            _POOL = GradingPool(workers or os.cpu_count() or 1)
        elif workers is not None and workers != _POOL.size:
            _POOL.resize(workers)
        return _POOL


def shutdown_pool() -> None:
    """Stop the module-level pool's workers (also registered atexit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.pid == os.getpid():
            _POOL.shutdown()
        _POOL = None


atexit.register(shutdown_pool)
