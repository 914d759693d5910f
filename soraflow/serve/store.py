"""The job store: one SQLite file (stdlib sqlite3, WAL) that the HTTP process and every worker process share.

Every state change is one ``BEGIN IMMEDIATE`` transaction, so two processes never claim the same job and
a ``kill -9`` at any instant leaves either the old state or the new one. Files live beside the database,
one folder per job (``jobs/<id>/``: the uploaded inputs, ``video.mp4`` and its ``.json`` sidecar, the
thumbnail), written atomically by the worker; the client never names a file or a path.

A job is ``queued -> in_progress -> completed | failed | cancelled``. A job whose worker process died
(its pid is gone, or its heartbeat is stale) goes back to ``queued`` until it has been attempted
``max_attempts`` times, then it is ``failed`` with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import SoraflowError

DB_NAME = "jobs.sqlite3"
JOBS_FOLDER = "jobs"
VIDEO_NAME, THUMBNAIL_NAME, INPUTS_FOLDER = "video.mp4", "thumbnail.png", "inputs"
STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled")
ACTIVE, FINISHED = ("queued", "in_progress"), ("completed", "failed", "cancelled")
JOB_ID = re.compile(r"video_[0-9a-f]{24}")
WORKER_LEASE_S = 30.0  # a worker whose heartbeat is older than this is dead even if its pid was reused
ORPHAN_FOLDER_AGE_S = 3600.0  # a job folder without a row (a crash between upload and insert) is removed after this

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at REAL,
    completed_at INTEGER,
    expires_at INTEGER,
    request TEXT NOT NULL,           -- JSON: pipeline arguments (seed resolved) and input file names
    summary TEXT NOT NULL,           -- JSON: what the API shows (prompt, mode, size, seconds, ...)
    expanded_prompt TEXT,
    error TEXT,                      -- JSON {code, message}
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,  -- DELETE of a running job: removed when its worker lets go
    worker TEXT,
    client TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    state TEXT NOT NULL,             -- loading | ready | failed
    heartbeat REAL NOT NULL,
    job TEXT,
    error TEXT
);
"""


class QueueFull(SoraflowError):
    """The queue holds ``limit`` unfinished jobs already."""

    def __init__(self, active: int, limit: int):
        super().__init__(f"the queue is full ({active} unfinished jobs, limit {limit}); retry later")
        self.active, self.limit = active, limit


@dataclass
class Job:
    """One row of the store, decoded."""

    id: str
    status: str
    progress: int
    created_at: int
    started_at: float | None
    completed_at: int | None
    expires_at: int | None
    request: dict
    summary: dict
    expanded_prompt: str | None
    error: dict | None
    attempts: int
    cancel_requested: bool
    deleted: bool
    worker: str | None
    client: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        d = dict(row)
        for key in ("request", "summary", "error"):
            d[key] = json.loads(d[key]) if d[key] is not None else None
        d["cancel_requested"], d["deleted"] = bool(d["cancel_requested"]), bool(d["deleted"])
        return cls(**d)


@dataclass
class WorkerRow:
    id: str
    pid: int
    state: str
    heartbeat: float
    job: str | None
    error: str | None


@dataclass
class Page:
    """A page of :meth:`JobStore.list`, newest first."""

    jobs: list[Job] = field(default_factory=list)
    has_more: bool = False


def new_job_id() -> str:
    return f"video_{secrets.token_hex(12)}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process has that pid now: not ours, but it exists
        return True
    try:  # a zombie (dead, not yet reaped: a container's pid 1 may never reap it) is dead
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _run_state(db: sqlite3.Connection, job_id: str, worker_id: str) -> str:
    row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ? AND worker = ? AND status = 'in_progress'",
                     (job_id, worker_id)).fetchone()
    return "lost" if row is None else "cancel" if row[0] else "run"


class JobStore:
    """Jobs and workers in ``<root>/jobs.sqlite3``, job files in ``<root>/jobs/<id>/``.

    Safe to use from several threads (one connection each) and several processes.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.jobs_dir = self.root / JOBS_FOLDER
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SoraflowError(f"cannot create the job folder {self.jobs_dir}: {err.strerror}") from None
        self.path = self.root / DB_NAME
        self._local = threading.local()
        self._write_lock = threading.Lock()
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the one writer
        db.executescript(SCHEMA)

    # ------------------------------------------------------------------ connections

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: no implicit transactions; every change below opens its own.
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")  # an accepted job survives a power cut, not only kill -9
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _tx(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction. ``durable=False`` (progress, heartbeats) skips the fsync: such a commit
        survives a killed process but maybe not a power cut, and the next durable commit covers it."""
        # Threads of one process queue on this lock, woken the moment it frees, instead of in SQLite's
        # busy handler, which sleeps in growing steps (50 concurrent submissions: a 1.6 s p99).
        with self._write_lock:
            db = self._db()
            if not durable:
                db.execute("PRAGMA synchronous=NORMAL")
            try:
                db.execute("BEGIN IMMEDIATE")  # take the write lock now, so read-then-write cannot race
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                if not durable:
                    db.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ------------------------------------------------------------------ files

    def folder(self, job_id: str) -> Path:
        """The job's folder; ``job_id`` must be one this store made (never a client's path)."""
        if not JOB_ID.fullmatch(job_id):
            raise SoraflowError(f"internal: {job_id!r} is not a job id")
        return self.jobs_dir / job_id

    def _remove_files(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    # ------------------------------------------------------------------ submitting and reading

    def submit(self, job_id: str, request: dict, summary: dict, *, max_active: int, client: str | None = None,
               now: float | None = None) -> Job:
        """Insert a queued job, unless ``max_active`` jobs are queued or running (:class:`QueueFull`)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            active = db.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'in_progress')").fetchone()[0]
            if active >= max_active:
                raise QueueFull(active, max_active)
            db.execute(
                "INSERT INTO jobs (id, status, created_at, request, summary, client) VALUES (?, 'queued', ?, ?, ?, ?)",
                (job_id, int(now), json.dumps(request), json.dumps(summary), client))
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        row = self._db().execute("SELECT * FROM jobs WHERE id = ? AND deleted = 0", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def list(self, *, limit: int = 20, after: str | None = None) -> Page:
        """Newest first; ``after``: the id of the last job of the previous page."""
        db = self._db()
        cursor = None
        if after is not None:
            row = db.execute("SELECT rowid FROM jobs WHERE id = ?", (after,)).fetchone()
            cursor = row[0] if row else None
            if cursor is None:
                return Page()
        rows = db.execute(
            "SELECT * FROM jobs WHERE deleted = 0 AND rowid < ? ORDER BY rowid DESC LIMIT ?",
            (cursor if cursor is not None else 2**62, limit + 1)).fetchall()
        return Page([Job.from_row(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT status, COUNT(*) FROM jobs WHERE deleted = 0 GROUP BY status").fetchall()
        return {status: 0 for status in STATUSES} | {r[0]: r[1] for r in rows}

    def has_queued(self) -> bool:
        """A plain read, so an idle worker polling the queue never takes the write lock."""
        return self._db().execute("SELECT 1 FROM jobs WHERE status = 'queued' LIMIT 1").fetchone() is not None

    def mean_run_seconds(self, last: int = 20) -> float | None:
        """Mean wall time of the last completed jobs (for Retry-After); None before the first."""
        row = self._db().execute(
            "SELECT AVG(completed_at - started_at) FROM (SELECT completed_at, started_at FROM jobs "
            "WHERE status = 'completed' AND started_at IS NOT NULL ORDER BY completed_at DESC LIMIT ?)",
            (last,)).fetchone()
        return None if row[0] is None else max(0.0, float(row[0]))

    # ------------------------------------------------------------------ cancel and delete (the HTTP side)

    def cancel(self, job_id: str, now: float | None = None) -> Job | None:
        """Queued: cancelled at once. Running: flagged; its worker stops between two steps."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = 'cancelled', completed_at = ?, "
                       "error = NULL WHERE id = ? AND status = 'queued' AND deleted = 0", (int(now), job_id))
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'in_progress'", (job_id,))
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Remove a job and its files; a running one is cancelled and removed when its worker stops.
        False when there is no such job."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ? AND deleted = 0", (job_id,)).fetchone()
            if row is None:
                return False
            if row["status"] == "in_progress":
                db.execute("UPDATE jobs SET deleted = 1, cancel_requested = 1 WHERE id = ?", (job_id,))
                return True
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self._remove_files(job_id)
        return True

    def expire(self, now: float | None = None) -> list[str]:
        """Remove finished jobs past their ``expires_at`` with their files, and job folders no row owns."""
        now = time.time() if now is None else now
        with self._tx() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND expires_at <= ?",
                (now,)).fetchall()]
            db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
            # load errors of workers whose server never read them (it was killed first)
            db.execute("DELETE FROM workers WHERE state = 'failed' AND heartbeat < ?", (now - ORPHAN_FOLDER_AGE_S,))
        for job_id in ids:
            self._remove_files(job_id)
        known = {r[0] for r in self._db().execute("SELECT id FROM jobs").fetchall()}
        for folder in self.jobs_dir.iterdir():
            if folder.name in known or not JOB_ID.fullmatch(folder.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - folder.stat().st_mtime > ORPHAN_FOLDER_AGE_S:
                    shutil.rmtree(folder, ignore_errors=True)
        return ids

    # ------------------------------------------------------------------ workers

    def register_worker(self, pid: int) -> str:
        worker_id = f"{pid}-{secrets.token_hex(4)}"
        with self._tx() as db:
            db.execute("INSERT INTO workers (id, pid, state, heartbeat) VALUES (?, ?, 'loading', ?)",
                       (worker_id, pid, time.time()))
        return worker_id

    def set_worker_state(self, worker_id: str, state: str, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE workers SET state = ?, error = ?, heartbeat = ? WHERE id = ?",
                       (state, error, time.time(), worker_id))

    def heartbeat(self, worker_id: str) -> None:
        with self._tx(durable=False) as db:
            db.execute("UPDATE workers SET heartbeat = ? WHERE id = ?", (time.time(), worker_id))

    def take_failed_worker(self, pid: int) -> str | None:
        """The load error a worker process left before exiting (its row goes with it)."""
        with self._tx() as db:
            row = db.execute("SELECT id, error FROM workers WHERE pid = ? AND state = 'failed'", (pid,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM workers WHERE id = ?", (row["id"],))
        return None if row is None else row["error"]

    def unregister_worker(self, worker_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def workers(self) -> list[WorkerRow]:
        return [WorkerRow(**dict(r)) for r in self._db().execute("SELECT * FROM workers ORDER BY pid").fetchall()]

    def _worker_alive(self, row: sqlite3.Row | None, now: float) -> bool:
        return row is not None and now - row["heartbeat"] < WORKER_LEASE_S and pid_alive(row["pid"])

    def _orphans(self, now: float) -> bool:
        db = self._db()
        workers = {r["id"]: r for r in db.execute("SELECT * FROM workers WHERE state != 'failed'").fetchall()}
        running = db.execute("SELECT worker FROM jobs WHERE status = 'in_progress'").fetchall()
        return (any(not self._worker_alive(workers.get(r[0]), now) for r in running)
                or any(not self._worker_alive(w, now) for w in workers.values()))

    def recover(self, *, max_attempts: int, expire_after: float, now: float | None = None) -> list[str]:
        """Jobs whose worker died: re-queued, or failed once attempted ``max_attempts`` times. Also drops
        the rows of dead workers. Returns the ids it touched."""
        now = time.time() if now is None else now
        if not self._orphans(now):  # the usual answer, from a read: no write lock taken
            return []
        touched, gone = [], []
        with self._tx() as db:
            # A worker that failed to load holds no job; its row waits for the pool to read its error.
            workers = {r["id"]: r for r in db.execute("SELECT * FROM workers WHERE state != 'failed'").fetchall()}
            dead = {w for w, row in workers.items() if not self._worker_alive(row, now)}
            running = db.execute(
                "SELECT id, worker, attempts, deleted, cancel_requested FROM jobs WHERE status = 'in_progress'")
            for row in running.fetchall():
                if row["worker"] in workers and row["worker"] not in dead:
                    continue
                touched.append(row["id"])
                if row["deleted"]:
                    db.execute("DELETE FROM jobs WHERE id = ?", (row["id"],))
                    gone.append(row["id"])
                elif row["cancel_requested"]:
                    db.execute("UPDATE jobs SET status = 'cancelled', worker = NULL, completed_at = ?, expires_at = ? "
                               "WHERE id = ?", (int(now), int(now + expire_after), row["id"]))
                elif row["attempts"] < max_attempts:
                    db.execute("UPDATE jobs SET status = 'queued', worker = NULL, progress = 0, "
                               "cancel_requested = 0 WHERE id = ?", (row["id"],))
                else:
                    error = {"code": "interrupted", "message": (
                        f"the worker process running this job stopped (killed or crashed) during each of its "
                        f"{row['attempts']} attempts; it is not retried again")}
                    db.execute("UPDATE jobs SET status = 'failed', worker = NULL, completed_at = ?, expires_at = ?, "
                               "error = ? WHERE id = ?",
                               (int(now), int(now + expire_after), json.dumps(error), row["id"]))
            db.executemany("DELETE FROM workers WHERE id = ?", [(w,) for w in dead])
        for job_id in gone:
            self._remove_files(job_id)
        return touched

    # ------------------------------------------------------------------ a worker's side of a job

    def claim(self, worker_id: str, now: float | None = None) -> Job | None:
        """The oldest queued job, now ``in_progress`` and owned by ``worker_id``; None when none waits."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY rowid LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'in_progress', worker = ?, started_at = ?, progress = 0, "
                       "attempts = attempts + 1, expanded_prompt = NULL WHERE id = ?", (worker_id, now, row["id"]))
            db.execute("UPDATE workers SET job = ?, heartbeat = ? WHERE id = ?", (row["id"], now, worker_id))
        return self.get(row["id"])

    def progress(self, job_id: str, worker_id: str, progress: int | None = None,
                 expanded_prompt: str | None = None) -> str:
        """Record progress; the answer tells the worker what to do next: ``"run"``, ``"cancel"`` (a cancel
        or delete was asked for) or ``"lost"`` (the job is no longer this worker's)."""
        with self._tx(durable=False) as db:
            if progress is not None:
                db.execute("UPDATE jobs SET progress = ? WHERE id = ? AND worker = ?", (progress, job_id, worker_id))
            if expanded_prompt is not None:
                db.execute("UPDATE jobs SET expanded_prompt = ? WHERE id = ? AND worker = ?",
                           (expanded_prompt, job_id, worker_id))
            return _run_state(db, job_id, worker_id)

    def cancel_requested(self, job_id: str, worker_id: str) -> str:
        """:meth:`progress` without writing anything: a read, cheap enough for every sampler step."""
        return _run_state(self._db(), job_id, worker_id)

    def finish(self, job_id: str, worker_id: str, status: str, *, expire_after: float, error: dict | None = None,
               summary: dict | None = None, now: float | None = None) -> None:
        """``completed``, ``failed`` or ``cancelled``; ``summary`` is merged into the job's."""
        if status not in FINISHED:
            raise SoraflowError(f"internal: {status!r} is not a finished status")
        now = time.time() if now is None else now
        with self._letting_go(job_id, worker_id) as (db, row):
            if row is not None:
                merged = json.loads(row["summary"]) | (summary or {})
                db.execute(
                    "UPDATE jobs SET status = ?, progress = CASE WHEN ? = 'completed' THEN 100 ELSE progress END, "
                    "completed_at = ?, expires_at = ?, error = ?, summary = ?, worker = NULL WHERE id = ?",
                    (status, status, int(now), int(now + expire_after), json.dumps(error) if error else None,
                     json.dumps(merged), job_id))

    def release(self, job_id: str, worker_id: str) -> None:
        """Give a job back to the queue (the worker is shutting down); the attempt does not count."""
        with self._letting_go(job_id, worker_id) as (db, row):
            if row is not None:
                db.execute("UPDATE jobs SET status = 'queued', worker = NULL, progress = 0, attempts = attempts - 1 "
                           "WHERE id = ?", (job_id,))

    @contextlib.contextmanager
    def _letting_go(self, job_id: str, worker_id: str) -> Iterator[tuple[sqlite3.Connection, sqlite3.Row | None]]:
        """The transaction in which a worker lets a job go: yields the job's row while it is still this
        worker's (None otherwise); a job deleted while it ran is removed instead, its files too."""
        with self._tx() as db:
            row = db.execute("SELECT deleted, summary FROM jobs WHERE id = ? AND worker = ? AND status = 'in_progress'",
                             (job_id, worker_id)).fetchone()
            db.execute("UPDATE workers SET job = NULL WHERE id = ?", (worker_id,))
            deleted = row is not None and bool(row["deleted"])
            if deleted:
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            yield db, None if deleted else row
        if deleted:
            self._remove_files(job_id)


__all__ = ["JobStore", "Job", "WorkerRow", "Page", "QueueFull", "new_job_id", "pid_alive", "STATUSES",
           "VIDEO_NAME", "THUMBNAIL_NAME", "INPUTS_FOLDER", "JOB_ID"]
