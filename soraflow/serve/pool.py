"""The server's generation workers: N processes (:mod:`soraflow.serve.worker`), restarted when they crash.

Separate processes rather than threads of the HTTP server: generation holds the CPU (and, in Python,
the GIL between torch calls) for seconds, which must not delay a status poll or a submission; and
every worker loads the model once, for as many jobs as it runs.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from .store import JobStore
from .worker import EXIT_LOAD_FAILED, WorkerOptions

log = logging.getLogger("soraflow.serve")

RESTART_WINDOW_S = 60.0
MAX_RESTARTS = 5  # crashes within RESTART_WINDOW_S before the server gives up


@dataclass
class _Slot:
    process: subprocess.Popen | None = None
    crashes: list[float] = field(default_factory=list)


class WorkerPool:
    def __init__(self, options: WorkerOptions, count: int, store: JobStore):
        self.options, self.store = options, store
        self.slots = [_Slot() for _ in range(count)]
        self.stopping = False

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        # stdin stays a pipe that only this process holds: when it dies, the worker reads end of file.
        slot.process = subprocess.Popen([sys.executable, "-m", "soraflow.serve.worker", self.options.to_json()],
                                        stdin=subprocess.PIPE, close_fds=True)

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None and s.process.poll() is None]

    def check(self) -> str | None:
        """Restart crashed workers. Returns a fatal error (the model does not load; workers keep crashing)
        for the server to stop on, else None."""
        if self.stopping:
            return None
        now = time.monotonic()
        for i, slot in enumerate(self.slots):
            code = slot.process.poll() if slot.process is not None else None
            if code is None:
                continue
            if code == EXIT_LOAD_FAILED:
                error = self.store.take_failed_worker(slot.process.pid) or "unknown error"
                return f"worker {i} could not load the model: {error}"
            slot.crashes = [t for t in slot.crashes if now - t < RESTART_WINDOW_S] + [now]
            if len(slot.crashes) > MAX_RESTARTS:
                return f"worker {i} exited with status {code} {len(slot.crashes)} times in {RESTART_WINDOW_S:g} s"
            log.warning("worker %d (pid %d) exited with status %s; starting a new one", i, slot.process.pid, code)
            self._spawn(slot)
        return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (each hands its running job back to the queue between two steps), then SIGKILL."""
        self.stopping = True
        running = [s.process for s in self.slots if s.process is not None and s.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in %g s; killing it", process.pid, timeout)
                process.kill()
                process.wait()
        for slot in self.slots:
            if slot.process is not None and slot.process.stdin is not None:
                slot.process.stdin.close()


def default_threads(workers: int) -> int:
    """Torch threads per worker: the cores shared out, so N workers do not oversubscribe the CPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


__all__ = ["WorkerPool", "default_threads"]
