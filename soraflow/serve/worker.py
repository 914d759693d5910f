"""A generation worker: one process, one model loaded once, jobs claimed from the shared store one at a time.

Started by :class:`soraflow.serve.pool.WorkerPool` as ``python -m soraflow.serve.worker OPTIONS_JSON`` with
its stdin a pipe from the server: end of file there means the server is gone (even by ``kill -9``), and
the worker exits at once instead of running on unsupervised; its job is recovered by the next server.
SIGTERM asks it to stop: the running job goes back to the queue between two sampler steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SoraflowError
from .store import INPUTS_FOLDER, THUMBNAIL_NAME, VIDEO_NAME, Job, JobStore
from .validate import public_message

log = logging.getLogger("soraflow.serve")

HEARTBEAT_S = 5.0  # well inside store.WORKER_LEASE_S
RECOVER_EVERY_S = 2.0
PROGRESS_EVERY_S = 0.2  # progress writes at most this often; the cancel flag is read at every step
EXIT_LOAD_FAILED = 3  # exit status of a worker that could not load the model: the pool does not restart it


@dataclass
class WorkerOptions:
    """What a worker process needs; passed to it as JSON."""

    model: str  # model folder
    data_dir: str  # the store's folder
    device: str = "cpu"
    dtype: str = "auto"
    offload: str | None = None
    threads: int | None = None  # torch threads (None: torch's default)
    max_attempts: int = 2  # runs of a job whose worker died before it is marked failed
    expire_after: float = 86400.0  # seconds a finished job (and its files) is kept
    poll: float = 0.1  # seconds between looks at an empty queue

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "WorkerOptions":
        return cls(**json.loads(text))


class _Stop(Exception):
    """Raised from the step callback to leave a generation between two steps."""

    def __init__(self, reason: str):  # "cancel" | "lost" | "shutdown"
        super().__init__(reason)
        self.reason = reason


class Worker:
    def __init__(self, options: WorkerOptions, store: JobStore, pipe, worker_id: str, stopping: threading.Event):
        self.options, self.store, self.pipe, self.id = options, store, pipe, worker_id
        self.stopping = stopping  # set by SIGTERM: finish nothing new, hand the running job back

    def run(self) -> None:
        next_recover = 0.0
        while not self.stopping.is_set():
            now = time.time()
            if now >= next_recover:
                for job_id in self.store.recover(max_attempts=self.options.max_attempts,
                                                 expire_after=self.options.expire_after):
                    log.warning("job %s: its worker died; recovered", job_id)
                next_recover = now + RECOVER_EVERY_S
            job = self.store.claim(self.id) if self.store.has_queued() else None
            if job is None:
                self.stopping.wait(self.options.poll)
                continue
            self.run_job(job)

    def run_job(self, job: Job) -> None:
        """Generate one job into its folder; every outcome ends as a finished (or re-queued) job."""
        store, folder = self.store, self.store.folder(job.id)
        expire = self.options.expire_after
        started = time.perf_counter()
        req = job.request
        inputs = folder / INPUTS_FOLDER
        last_write = [0.0, -1]  # time, progress

        def on_step(info) -> None:
            if self.stopping.is_set():
                raise _Stop("shutdown")
            done = info.window * info.steps + info.step + 1
            percent = min(99, 100 * done // (info.windows * info.steps))  # 100 only once the file is written
            now = time.perf_counter()
            if percent != last_write[1] and now - last_write[0] >= PROGRESS_EVERY_S:
                state = store.progress(job.id, self.id, percent)
                last_write[:] = [now, percent]
            else:
                state = store.cancel_requested(job.id, self.id)
            if state != "run":
                raise _Stop(state)

        image = inputs / req["image"] if req["image"] else None
        videos = [inputs / v for v in req["videos"]]
        try:
            request = self.pipe.prepare(**req["args"], image=image, video=videos or None)
            generation = self.pipe.generate(request, callback=on_step, expand=req["expand"], progress=False)
            state = store.progress(job.id, self.id, 0, expanded_prompt=generation.expanded_prompt)
            if state != "run":
                raise _Stop(state)
            generation.save(folder / VIDEO_NAME)  # atomic; the .json sidecar beside it
            self._thumbnail(folder)
            meta = generation.metadata()
            summary = {"expanded_prompt": generation.expanded_prompt, "settings": meta["settings"],
                       "timings": meta["timings"]}
            store.finish(job.id, self.id, "completed", expire_after=expire, summary=summary)
            log.info("job %s completed in %.2f s", job.id, time.perf_counter() - started)
        except _Stop as stop:
            if stop.reason == "cancel":
                store.finish(job.id, self.id, "cancelled", expire_after=expire)
                log.info("job %s cancelled", job.id)
            elif stop.reason == "shutdown":
                store.release(job.id, self.id)
                log.info("job %s back in the queue (worker stopping)", job.id)
            else:
                log.warning("job %s is no longer this worker's (it was presumed dead); dropped", job.id)
        except SoraflowError as err:
            message = public_message(str(err), folder, image, videos)
            store.finish(job.id, self.id, "failed", expire_after=expire,
                         error={"code": "generation_error", "message": message})
            log.info("job %s failed: %s", job.id, err)
        except Exception as err:  # noqa: BLE001 - a job must end as `failed` with its reason, whatever broke
            log.exception("job %s failed with an internal error", job.id)
            message = public_message(f"{type(err).__name__}: {err}", folder, image, videos)
            store.finish(job.id, self.id, "failed", expire_after=expire,
                         error={"code": "internal_error", "message": message})

    @staticmethod
    def _thumbnail(folder: Path) -> None:
        from .. import video as video_io

        first = video_io.read_video(folder / VIDEO_NAME, max_frames=1)[0]
        video_io.write_image(folder / THUMBNAIL_NAME, first)


def _exit_with_server() -> None:
    """Block on stdin (a pipe from the server); its end means the server died: exit now. (os.read, not
    sys.stdin: a daemon thread holding the buffered reader's lock aborts the interpreter at exit.)"""
    while os.read(0, 4096):
        pass
    os._exit(1)


def _heartbeat(store: JobStore, worker_id: str, stopping: threading.Event) -> None:
    while not stopping.wait(HEARTBEAT_S):
        try:
            store.heartbeat(worker_id)
        except Exception:  # noqa: BLE001 - a locked or busy database must not end the heartbeat
            log.exception("heartbeat failed")


def main(argv: list[str] | None = None) -> int:
    options = WorkerOptions.from_json((argv or sys.argv[1:])[0])
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s:  worker {os.getpid()}: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the server stops us
    threading.Thread(target=_exit_with_server, daemon=True).start()
    store = JobStore(options.data_dir)
    worker_id = store.register_worker(os.getpid())
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    threading.Thread(target=_heartbeat, args=(store, worker_id, stopping), daemon=True).start()
    try:
        import torch

        from ..pipeline import SoraPipeline

        if options.threads:
            torch.set_num_threads(options.threads)
        pipe = SoraPipeline.from_pretrained(options.model, device=options.device, dtype=options.dtype,
                                            offload=options.offload)
    except Exception as err:  # noqa: BLE001 - any load failure stops the server with its one line
        store.set_worker_state(worker_id, "failed", str(err) if isinstance(err, SoraflowError)
                               else f"{type(err).__name__}: {err}")
        return EXIT_LOAD_FAILED
    store.set_worker_state(worker_id, "ready")
    worker = Worker(options, store, pipe, worker_id, stopping)
    log.info("model %s loaded; waiting for jobs", options.model)
    try:
        worker.run()
    finally:
        store.unregister_worker(worker_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
