"""The HTTP API (OpenAI's videos API shape), the page, and the server's housekeeping.

    POST   /v1/videos                  submit (JSON, or multipart with an image / one or two videos) -> job
    GET    /v1/videos                  jobs, newest first (?limit=20&after=ID)
    GET    /v1/videos/{id}             one job: status, progress (0-100), error, settings
    GET    /v1/videos/{id}/content     the MP4 (?variant=thumbnail: a PNG of its first frame)
    POST   /v1/videos/{id}/cancel      stop it (a running job stops between two sampler steps)
    DELETE /v1/videos/{id}             forget it and its files
    GET    /v1/models                  the served model, its defaults and limits
    GET    /healthz                    workers and queue; 503 until a worker has loaded the model
    GET    /                           the page; /docs: the OpenAPI docs (served locally, no CDN)

The HTTP process never runs the model: it checks submissions (the CLI's checks, :mod:`.validate`)
and reads and writes the store; :mod:`.worker` processes generate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi_offline import FastAPIOffline
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import SoraflowError
from .config import ServeConfig
from .errors import ApiError, error_response
from .security import (
    COOKIE, LOGIN_PAGE, ApiKeyMiddleware, BodyLimitMiddleware, RateLimiter, SameOriginMiddleware, is_loopback,
    session_token,
)
from .store import ACTIVE, THUMBNAIL_NAME, VIDEO_NAME, Job, JobStore, QueueFull, pid_alive
from .validate import Limits, Upload, VideoRequest, check_submission, parse_fields

log = logging.getLogger("soraflow.serve")

HOUSEKEEPING_S = 0.5  # how often the worker processes are checked
EXPIRE_EVERY_S = 60.0
CANCEL_WAIT_S = 5.0  # POST .../cancel waits this long for a running job to stop, then answers anyway
SMALL_BODY = 64 * 1024  # every route but submission


@dataclass
class Context:
    config: ServeConfig
    store: JobStore
    pipeline_config: object  # soraflow.pipeline.PipelineConfig of the served model
    model_name: str
    pool: object | None  # WorkerPool (None: workers run elsewhere, e.g. another server on the same store)
    submissions: RateLimiter
    logins: RateLimiter
    on_fatal: object = None  # called with a message when the workers cannot run: the server stops
    fatal: str | None = None


def job_json(job: Job) -> dict:
    """A job as the API shows it: OpenAI's video object plus soraflow's settings."""
    s = job.summary
    return {
        "id": job.id, "object": "video", "model": s["model"], "status": job.status, "progress": job.progress,
        "created_at": job.created_at, "completed_at": job.completed_at, "expires_at": job.expires_at,
        "seconds": s["seconds"], "size": s["size"], "error": job.error,
        "prompt": s["prompt"], "expanded_prompt": job.expanded_prompt or s.get("expanded_prompt"),
        "mode": s["mode"], "direction": s["direction"], "frames": s["frames"], "fps": s["fps"], "steps": s["steps"],
        "guidance_scale": s["guidance_scale"], "seed": s["seed"], "strength": s["strength"],
        "negative_prompt": s["negative_prompt"], "expand": s["expand"], "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
    }


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _openapi_body() -> dict:
    """POST /v1/videos reads its body by hand (JSON or multipart), so its schema is declared here."""
    fields = VideoRequest.model_json_schema()
    multipart = json.loads(json.dumps(fields))
    multipart["properties"]["image"] = {"type": "string", "format": "binary",
                                        "description": "image-to-video (or loop) first frame"}
    multipart["properties"]["video"] = {"type": "array", "items": {"type": "string", "format": "binary"},
                                        "description": "extend / edit: one clip; connect: clip A then clip B"}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": fields}, "multipart/form-data": {"schema": multipart}}}}


def create_app(config: ServeConfig, store: JobStore, pipeline_config, model_name: str, pool=None,
               on_fatal=None) -> FastAPI:
    ctx = Context(config, store, pipeline_config, model_name, pool, RateLimiter(config.rate_limit),
                  RateLimiter(config.login_rate_limit), on_fatal)
    page = (resources.files("soraflow.serve") / "static" / "index.html").read_text()
    limits = Limits(max_upload_bytes=config.max_upload_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if pool is not None:
            await run_in_threadpool(pool.start)
        task = asyncio.create_task(_housekeeping(ctx))
        try:
            yield
        finally:
            task.cancel()
            if pool is not None:
                await run_in_threadpool(pool.stop)

    app = FastAPIOffline(title="soraflow", version=__version__, lifespan=lifespan,
                         description="Text (and image or video) to video: OpenAI's videos API shape over SoraPipeline.")
    app.state.ctx = ctx
    upload_limit = (2 * config.max_upload_bytes + 2**20,  # two clips (connect) and the form fields
                    f"uploads of up to {config.max_upload_mb:g} MiB a file")
    app.add_middleware(BodyLimitMiddleware, limit_for=lambda method, path: (
        upload_limit if (method, path) == ("POST", "/v1/videos") else (SMALL_BODY, "this route takes no upload")))
    app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)
    app.add_middleware(SameOriginMiddleware, loopback_only=is_loopback(config.host))  # outermost

    # ------------------------------------------------------------------ errors: always JSON, one line

    @app.exception_handler(ApiError)
    async def _api_error(request, err: ApiError):
        return err.response()

    @app.exception_handler(SoraflowError)
    async def _soraflow_error(request, err: SoraflowError):
        return error_response(400, str(err))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, err: RequestValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "request"
        return error_response(400, f"{where}: {first['msg']}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, err: StarletteHTTPException):
        return error_response(err.status_code, str(err.detail), "not_found" if err.status_code == 404 else
                              "invalid_request_error", headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request, err: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(err).__name__}: {err}", "server_error")

    def _job(job_id: str) -> Job:
        job = store.get(job_id)
        if job is None:
            raise ApiError(404, f"no video job {job_id!r}", "not_found", param="video_id")
        return job

    # ------------------------------------------------------------------ the page

    @app.get("/", include_in_schema=False)
    def index():
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.post("/login", include_in_schema=False)
    async def login(request: Request):
        if config.api_key is None:
            return RedirectResponse("/", 303)
        ctx.logins.take(_client(request), "sign-in attempts")
        form = await request.form()
        given = str(form.get("api_key", ""))
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            return HTMLResponse(LOGIN_PAGE % " That key is not it.", 401)
        response = RedirectResponse("/", 303)
        response.set_cookie(COOKIE, session_token(config.api_key), httponly=True, samesite="strict",
                            max_age=30 * 86400)
        return response

    # ------------------------------------------------------------------ status

    @app.get("/healthz", summary="Workers and queue")
    def healthz():
        workers = [w for w in store.workers() if pid_alive(w.pid)]
        ready = any(w.state == "ready" for w in workers)
        status = "error" if ctx.fatal else ("ok" if ready else "starting")
        body = {"status": status, "error": ctx.fatal, "model": model_name,
                "workers": [{"pid": w.pid, "state": w.state, "job": w.job} for w in workers],
                "jobs": store.counts()}
        return JSONResponse(body, status_code=200 if ready and not ctx.fatal else 503)

    @app.get("/v1/models", summary="The served model, its defaults and limits")
    def models():
        c = pipeline_config
        return {"object": "list", "data": [{
            "id": model_name, "object": "model", "owned_by": "soraflow",
            "defaults": {"size": f"{c.width}x{c.height}", "seconds": c.seconds, "fps": c.fps, "steps": c.steps,
                         "guidance_scale": c.guidance_scale, "strength": c.edit_strength},
            "limits": {"max_seconds": c.max_seconds, "max_side": c.max_side, "size_multiple": c.size_multiple,
                       "max_upload_mb": config.max_upload_mb, "max_queue": config.max_queue,
                       "submissions_per_minute": config.rate_limit},
        }]}

    # ------------------------------------------------------------------ jobs

    @app.post("/v1/videos", summary="Submit a video job", openapi_extra=_openapi_body())
    async def create_video(request: Request):
        ctx.submissions.take(_client(request), "submissions")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        form = None
        try:
            if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
                form = await request.form(max_files=4, max_fields=40)
                fields, uploads = {}, []
                for key, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        uploads.append(Upload(key, value.file, value.size or 0))
                    elif value != "":  # an empty form field means "the default"
                        if key in fields:
                            raise ApiError(400, f"field {key!r} is given twice", param=key)
                        fields[key] = value
            elif kind == "application/json":
                try:
                    fields = json.loads(await request.body())
                except ValueError as err:
                    raise ApiError(400, f"the body is not valid JSON: {err}") from None
                if not isinstance(fields, dict):
                    raise ApiError(400, "the JSON body must be an object with at least a 'prompt'")
                uploads = []
            else:
                raise ApiError(415, "send the request as application/json, or multipart/form-data with files")
            req = parse_fields(fields)
            _check_queue(ctx)  # before reading any upload: a full queue answers at once
            submission = await run_in_threadpool(check_submission, req, uploads, config=pipeline_config,
                                                 model_name=model_name, store=store, limits=limits)
        finally:
            if form is not None:
                await form.close()
        try:
            job = await run_in_threadpool(store.submit, submission.job_id, submission.request, submission.summary,
                                          max_active=config.max_queue, client=_client(request))
        except QueueFull as full:
            shutil.rmtree(store.folder(submission.job_id), ignore_errors=True)
            raise _queue_full(ctx, full) from None
        log.info("job %s queued (%s, %s, %s s)", job.id, job.summary["mode"], job.summary["size"],
                 job.summary["seconds"])
        return job_json(job)

    @app.get("/v1/videos", summary="List jobs, newest first")
    def list_videos(limit: int = Query(20, ge=1, le=100), after: str | None = None):
        page_ = store.list(limit=limit, after=after)
        data = [job_json(j) for j in page_.jobs]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": page_.has_more}

    @app.get("/v1/videos/{video_id}", summary="One job")
    def get_video(video_id: str):
        return job_json(_job(video_id))

    @app.get("/v1/videos/{video_id}/content", summary="The video (MP4) or its thumbnail (PNG)")
    def get_content(video_id: str, variant: str = Query("video", pattern="^(video|thumbnail)$")):
        job = _job(video_id)
        if job.status != "completed":
            raise ApiError(409, f"video {video_id} is {job.status}; its content exists once it is completed",
                           param="video_id")
        path = store.folder(job.id) / (THUMBNAIL_NAME if variant == "thumbnail" else VIDEO_NAME)
        if not path.is_file():
            raise ApiError(410, f"the {variant} of {video_id} is gone from the server's disk", param="video_id")
        if variant == "thumbnail":
            return FileResponse(path, media_type="image/png")
        return FileResponse(path, media_type="video/mp4", filename=f"{job.id}.mp4", content_disposition_type="inline")

    @app.post("/v1/videos/{video_id}/cancel", summary="Cancel a queued or running job")
    async def cancel_video(video_id: str):
        job = await run_in_threadpool(_job, video_id)
        if job.status in ("completed", "failed"):
            raise ApiError(409, f"video {video_id} is already {job.status}", param="video_id")
        job = await run_in_threadpool(store.cancel, video_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while job is not None and job.status == "in_progress" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            job = await run_in_threadpool(store.get, video_id)
        return job_json(job or _job(video_id))

    @app.delete("/v1/videos/{video_id}", summary="Delete a job and its files")
    def delete_video(video_id: str):
        if not store.delete(video_id):
            raise ApiError(404, f"no video job {video_id!r}", "not_found", param="video_id")
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    return app


def _check_queue(ctx: Context) -> None:
    counts = ctx.store.counts()
    active = sum(counts[s] for s in ACTIVE)
    if active >= ctx.config.max_queue:
        raise _queue_full(ctx, QueueFull(active, ctx.config.max_queue))


def _queue_full(ctx: Context, full: QueueFull) -> ApiError:
    """429 with a Retry-After from the recent run times: when the first slot should free up."""
    mean = ctx.store.mean_run_seconds()
    workers = max(1, ctx.config.workers)
    wait = 10 if mean is None else min(3600, max(1, math.ceil(mean * (full.active - full.limit + 1) / workers)))
    return ApiError(429, str(full), "rate_limit_error", headers={"Retry-After": str(wait)})


async def _housekeeping(ctx: Context) -> None:
    """Restart crashed workers (stop the server when they cannot run) and expire old jobs."""
    next_expiry = 0.0
    while True:
        try:
            if ctx.pool is not None and ctx.fatal is None:
                fatal = ctx.pool.check()
                if fatal is not None:
                    ctx.fatal = fatal
                    log.error("%s", fatal)
                    if ctx.on_fatal is not None:
                        ctx.on_fatal(fatal)
            if time.monotonic() >= next_expiry:
                gone = await run_in_threadpool(ctx.store.expire)
                if gone:
                    log.info("expired %d finished jobs and their files", len(gone))
                next_expiry = time.monotonic() + EXPIRE_EVERY_S
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - housekeeping must keep running; the next round may succeed
            log.exception("housekeeping failed")
        await asyncio.sleep(HOUSEKEEPING_S)


__all__ = ["create_app", "job_json", "Context"]
