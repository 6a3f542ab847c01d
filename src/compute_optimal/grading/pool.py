"""A small process pool that can kill one stuck comparison without losing the batch.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot cancel a running task, and a worker
stuck in C code (sympy computing ``9^{9^{9^9}}``) would hold the batch forever. Here every worker
has its own pipe and runs one task at a time; the parent gives each task a deadline, kills the
worker that overruns it (SIGKILL, immediate), records ``timeout`` and starts a replacement.

Inside a worker a soft deadline (``setitimer``) fires first and turns most timeouts into a clean
``timeout`` verdict without a kill; the hard kill follows ``_GRACE_S`` later for code that signals
cannot interrupt. Workers are forked from a forkserver that has already imported sympy and
Math-Verify, so starting or replacing one costs milliseconds, and the parent process (which may hold
threads, CUDA contexts, ...) is never forked itself.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait

_GRACE_S = 0.3  # hard kill this long after the soft deadline
_START_TIMEOUT_S = 120.0  # a worker that is not ready by then is broken (not a slow comparison)
_MAX_START_FAILURES = 5
_MEMORY_LIMIT_BYTES = 8 * 1024**3  # address-space cap per worker: a huge power fails, not the machine

Task = tuple[str, str]  # (pred answer, gold answer)
Result = tuple[bool, str]  # (correct, status: "ok" | "timeout" | "error")


class PoolError(RuntimeError):
    """The workers could not be started."""


# ---------------------------------------------------------------------------------------------------
# Worker side


class _Deadline(BaseException):
    """Raised by the soft-deadline signal; a BaseException so that ``except Exception`` in sympy or
    Math-Verify does not swallow it."""


_armed = False


def _on_alarm(signum: int, frame: object) -> None:
    if _armed:  # an alarm arriving after the task finished is ignored
        raise _Deadline


def _worker_main(conn: Connection) -> None:
    global _armed
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    signal.signal(signal.SIGALRM, _on_alarm)
    with contextlib.suppress(ValueError, OSError, ImportError):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT_BYTES, _MEMORY_LIMIT_BYTES))
    from compute_optimal.grading.equivalence import math_equal, warm_up

    warm_up()
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        pred, gold, budget_s = msg
        try:
            # Repeat every 50 ms in case sympy catches the first one with a bare except.
            _armed = True
            signal.setitimer(signal.ITIMER_REAL, max(budget_s, 0.01), 0.05)
            try:
                result: Result = (bool(math_equal(pred, gold)), "ok")
            finally:
                _armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Deadline:
            result = (False, "timeout")
        except MemoryError:
            result = (False, "error")
        except Exception:
            result = (False, "error")
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


# ---------------------------------------------------------------------------------------------------
# Parent side


def _context() -> mp.context.BaseContext:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # Preloading makes every forked worker start with sympy/Math-Verify imported. It only takes
        # effect if the forkserver is not running yet; otherwise workers import on their own.
        ctx.set_forkserver_preload(["compute_optimal.grading.equivalence"])
        return ctx
    return mp.get_context("spawn")


class _Worker:
    def __init__(self, ctx: mp.context.BaseContext) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="grading-worker")
        self.proc.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.join(timeout=1.0)
        with contextlib.suppress(Exception):
            self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(None)
        self.proc.join(timeout=0.5)
        if self.proc.is_alive():
            self.kill()
        with contextlib.suppress(Exception):
            self.conn.close()


class GradingPool:
    """``run(tasks, timeout_s)`` -> one Result per task, in order; never raises for a bad task."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.size = workers
        self.pid = os.getpid()
        self._ctx = _context()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._start_failures = 0

    def _fill(self) -> None:
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self._ctx))

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
            for w in self._workers:
                if w.ready and w.task is None and pending:
                    idx = pending.popleft()
                    budget = timeout_s
                    if overall_deadline is not None:
                        budget = min(budget, overall_deadline - now)
                    try:
                        w.conn.send((tasks[idx][0], tasks[idx][1], budget))
                    except (BrokenPipeError, OSError):
                        pending.appendleft(idx)
                        self._replace(w)
                        break
                    w.task = idx
                    w.deadline = now + budget + _GRACE_S
            waits = [w.deadline for w in self._workers if w.task is not None]
            waits += [w.started + _START_TIMEOUT_S for w in self._workers if not w.ready]
            if overall_deadline is not None:
                waits.append(overall_deadline)
            wait_s = max(0.0, min(waits) - time.monotonic()) if waits else 0.05
            ready_conns = wait([w.conn for w in self._workers], timeout=wait_s)
            for w in list(self._workers):
                if w.conn in ready_conns:
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
                self.shutdown()
                raise PoolError("grading workers fail to start (see their stderr above)")
        return [r if r is not None else (False, "error") for r in results]

    def _replace(self, w: _Worker, respawn: bool = True) -> None:
        w.kill()
        self._workers.remove(w)
        if respawn:
            self._workers.append(_Worker(self._ctx))

    def shutdown(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers.clear()


_POOL: GradingPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool(workers: int | None = None) -> GradingPool:
    """The module-level pool, created on first use and re-created when the size or process changes."""
    global _POOL
    size = workers or os.cpu_count() or 1
    with _POOL_LOCK:
        if _POOL is not None and (_POOL.pid != os.getpid() or _POOL.size != size):
            if _POOL.pid == os.getpid():
                _POOL.shutdown()
            _POOL = None
        if _POOL is None:
            _POOL = GradingPool(size)
        return _POOL


def shutdown_pool() -> None:
    """Stop the module-level pool's workers (also registered atexit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.pid == os.getpid():
            _POOL.shutdown()
        _POOL = None


atexit.register(shutdown_pool)
