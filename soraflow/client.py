"""A small client for ``soraflow serve`` (httpx): submit, follow, download.

    from soraflow.client import Client

    video = Client("http://127.0.0.1:8000").generate("a red ball bouncing on grass", seconds=2, output="ball.mp4")
    print(video.status, video.expanded_prompt)

Every option of the server's ``POST /v1/videos`` is a keyword (``size="160x96"``, ``steps=8``, ``mode="loop"``,
...); ``image=`` and ``video=`` take paths or bytes (``video=[a, b]`` connects two clips).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import httpx

from .atomic import atomic_path
from .errors import SoraflowError

FINISHED = ("completed", "failed", "cancelled")


class ClientError(SoraflowError):
    """The server refused a request: its status code and one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class JobFailed(SoraflowError):
    """A job ended ``failed`` or ``cancelled``; ``video`` is its last state."""

    def __init__(self, video: "Video"):
        reason = video.error["message"] if video.error else video.status
        super().__init__(f"video {video.id} {video.status}: {reason}")
        self.video = video


@dataclass
class Video:
    """A job as the server reports it (OpenAI's video object plus soraflow's settings)."""

    id: str
    status: str  # queued | in_progress | completed | failed | cancelled
    progress: int  # 0-100
    created_at: int
    completed_at: int | None
    expires_at: int | None
    seconds: str
    size: str  # WIDTHxHEIGHT
    error: dict | None  # {"code", "message"} when failed
    prompt: str
    expanded_prompt: str | None
    mode: str
    seed: int
    frames: int
    fps: int
    steps: int
    model: str
    attempts: int  # runs started (more than 1: a worker died during an earlier one)
    extra: dict = field(default_factory=dict)  # every other field of the response

    @classmethod
    def from_json(cls, d: dict) -> "Video":
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: d.get(k) for k in names}, extra={k: v for k, v in d.items() if k not in names})

    @property
    def done(self) -> bool:
        return self.status in FINISHED


def _upload(value) -> tuple[str, bytes | object]:
    if isinstance(value, (bytes, bytearray)):
        return "upload", bytes(value)
    return "upload", open(value, "rb")  # noqa: SIM115 - closed after the request


class Client:
    """``Client(url, api_key=None)``; 429 answers (queue full, rate limit) are retried ``max_retries`` times
    after the server's Retry-After."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 3, transport: httpx.BaseTransport | None = None):
        api_key = api_key or os.environ.get("SORAFLOW_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self.max_retries = max_retries

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            response = self.http.request(method, path, **kwargs)
            if response.status_code != 429 or attempt == self.max_retries:
                break
            time.sleep(min(60.0, float(response.headers.get("Retry-After", "1"))))
        if response.is_error:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200] or response.reason_phrase
            raise ClientError(response.status_code, message)
        return response

    # ------------------------------------------------------------------ the API

    def create(self, prompt: str, *, image=None, video=None, **options) -> Video:
        """Submit a job (``POST /v1/videos``); returns it queued."""
        body = {"prompt": prompt, **{k: v for k, v in options.items() if v is not None}}
        videos = [] if video is None else list(video) if isinstance(video, (list, tuple)) else [video]
        if image is None and not videos:
            return Video.from_json(self._request("POST", "/v1/videos", json=body).json())
        files = ([("image", _upload(image))] if image is not None else []) + [("video", _upload(v)) for v in videos]
        data = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in body.items()}
        try:
            return Video.from_json(self._request("POST", "/v1/videos", data=data, files=files).json())
        finally:
            for _, (_, f) in files:
                if hasattr(f, "close"):
                    f.close()

    def retrieve(self, video_id: str) -> Video:
        return Video.from_json(self._request("GET", f"/v1/videos/{video_id}").json())

    def list(self, *, limit: int = 20, after: str | None = None) -> list[Video]:
        params = {"limit": limit, **({"after": after} if after else {})}
        return [Video.from_json(d) for d in self._request("GET", "/v1/videos", params=params).json()["data"]]

    def cancel(self, video_id: str) -> Video:
        return Video.from_json(self._request("POST", f"/v1/videos/{video_id}/cancel").json())

    def delete(self, video_id: str) -> None:
        self._request("DELETE", f"/v1/videos/{video_id}")

    def download(self, video_id: str, path: str | os.PathLike, *, variant: str = "video") -> Path:
        """Stream the MP4 (or ``variant="thumbnail"``: a PNG) into ``path``, atomically."""
        with atomic_path(path) as tmp, self.http.stream(
                "GET", f"/v1/videos/{video_id}/content", params={"variant": variant}) as response:
            if response.is_error:
                response.read()
                raise ClientError(response.status_code, response.json().get("error", {}).get("message", ""))
            with open(tmp, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return Path(path)

    def wait(self, video_id: str, *, poll: float = 0.5, timeout: float | None = None,
             on_progress: Callable[[Video], object] | None = None) -> Video:
        """Poll until the job is completed, failed or cancelled; returns its last state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            video = self.retrieve(video_id)
            if on_progress is not None:
                on_progress(video)
            if video.done:
                return video
            if deadline is not None and time.monotonic() > deadline:
                raise SoraflowError(f"video {video_id} is still {video.status} ({video.progress}%) after {timeout:g} s")
            time.sleep(poll)

    def generate(self, prompt: str, *, output: str | os.PathLike | None = None, poll: float = 0.5,
                 timeout: float | None = None, on_progress: Callable[[Video], object] | None = None,
                 **options) -> Video:
        """Submit, wait, and (with ``output``) download. Raises :class:`JobFailed` unless it completed."""
        video = self.wait(self.create(prompt, **options).id, poll=poll, timeout=timeout, on_progress=on_progress)
        if video.status != "completed":
            raise JobFailed(video)
        if output is not None:
            self.download(video.id, output)
        return video


__all__ = ["Client", "Video", "ClientError", "JobFailed"]
