"""A submission checked before it is queued: the fields of ``POST /v1/videos`` (JSON or multipart) and its
uploads, through the same checks as ``soraflow generate`` (:func:`soraflow.modes.check_prompt`,
:func:`soraflow.validate.check_text`, :func:`soraflow.pipeline.prepare_request`), so the API and the CLI refuse the same requests with the same
one-line messages.

Uploads are stored under names the server picks (``image.png``, ``video_0.mp4``, ...) from their first
bytes, never from the client's file name or content type.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, ValidationError

from ..commands import parse_size
from .. import modes
from ..errors import InputError, SoraflowError
from ..validate import check_text
from .errors import ApiError
from .store import INPUTS_FOLDER, JobStore, new_job_id

IMAGE_FIELDS = ("image", "input_reference")  # ours, and OpenAI's name for the same thing
VIDEO_FIELD = "video"  # once to extend or edit, twice (A then B) to connect
# (name, magic bytes, their offset, RIFF container, suffix stored)
IMAGE_KINDS = (("PNG", b"\x89PNG\r\n\x1a\n", 0, False, ".png"), ("JPEG", b"\xff\xd8\xff", 0, False, ".jpg"),
               ("WebP", b"WEBP", 8, True, ".webp"))
VIDEO_KINDS = (("MP4/MOV", b"ftyp", 4, False, ".mp4"), ("WebM/MKV", b"\x1a\x45\xdf\xa3", 0, False, ".webm"),
               ("GIF", b"GIF8", 0, False, ".gif"), ("AVI", b"AVI ", 8, True, ".avi"))


class VideoRequest(BaseModel):
    """The fields of a submission. ``prompt``, ``model``, ``seconds`` and ``size`` are OpenAI's; the rest are
    ``soraflow generate``'s options under their pipeline names. Unset: the model's default."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str | None = None  # must name the served model when given
    mode: str | None = None  # t2v, t2i, i2v, extend, loop, connect, edit (None: from the inputs)
    size: str | None = None  # WIDTHxHEIGHT
    seconds: float | None = None
    frames: int | None = None
    fps: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    shift: float | None = None
    sampler: str | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    direction: str | None = None  # extend: forward (default) or backward
    strength: float | None = None  # edit: how much of the clip is re-noised
    expand: bool = True  # rewrite the prompt in the model's caption style


@dataclass
class Upload:
    field: str  # the multipart field it came in
    file: BinaryIO
    size: int


@dataclass
class Submission:
    """A checked request, ready for :meth:`JobStore.submit`."""

    job_id: str
    request: dict  # what the worker runs: pipeline arguments (seed resolved), stored input names
    summary: dict  # what the API shows


@dataclass
class Limits:
    max_upload_bytes: int


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    if first["type"] == "extra_forbidden":
        return f"unknown field {where!r}; the fields are {', '.join(VideoRequest.model_fields)}"
    if first["type"] == "missing":
        return f"field {where!r} is required"
    return f"field {where!r}: {first['msg']} (got {first.get('input')!r})"


def parse_fields(fields: dict) -> VideoRequest:
    try:
        return VideoRequest.model_validate(fields)
    except ValidationError as err:
        raise ApiError(400, _one_line(err), param=str(err.errors()[0]["loc"][0]) if err.errors()[0]["loc"] else None)


def _sniff(head: bytes, kinds) -> str | None:
    for _, magic, offset, riff, suffix in kinds:
        if head[offset:offset + len(magic)] == magic and (not riff or head[:4] == b"RIFF"):
            return suffix
    return None


def _store_upload(upload: Upload, kinds, folder: Path, name: str, label: str, limits: Limits) -> Path:
    if upload.size > limits.max_upload_bytes:
        raise ApiError(413, f"{label} is {upload.size / 2**20:.1f} MiB, over the limit of "
                            f"{limits.max_upload_bytes / 2**20:g} MiB", param=upload.field)
    upload.file.seek(0)
    head = upload.file.read(16)
    if not head:
        raise ApiError(400, f"{label} is empty", param=upload.field)
    suffix = _sniff(head, kinds)
    if suffix is None:
        names = ", ".join(k[0] for k in kinds)
        raise ApiError(415, f"{label} is not a file of a supported type ({names})", param=upload.field)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{suffix}"
    upload.file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out)
    return path


def check_submission(req: VideoRequest, uploads: list[Upload], *, config, model_name: str, store: JobStore,
                     limits: Limits) -> Submission:
    """Check ``req`` and its uploads as ``soraflow generate`` checks its flags and files; store the uploads in
    the new job's folder. Raises :class:`ApiError` (4xx); leaves no files behind when it does."""
    from ..pipeline import prepare_request

    if req.model is not None and req.model != model_name:
        raise ApiError(400, f"model {req.model!r} is not served here; this server runs {model_name!r}", param="model")
    images = [u for u in uploads if u.field in IMAGE_FIELDS]
    videos = [u for u in uploads if u.field == VIDEO_FIELD]
    unknown = sorted({u.field for u in uploads} - {*IMAGE_FIELDS, VIDEO_FIELD})
    if unknown:
        raise ApiError(400, f"unknown upload field {unknown[0]!r}; send files as 'image' or 'video'", param=unknown[0])
    if len(images) > 1 or len(videos) > 2:
        raise ApiError(400, "send at most one image and two videos (connect: video A, then video B)")
    try:
        prompt = modes.check_prompt(req.prompt)  # before any upload is written; prepare_request checks the rest
        if req.negative_prompt is not None:
            check_text("negative prompt", req.negative_prompt, empty_ok=True)
        size = None if req.size is None else _size(req.size)
    except SoraflowError as err:
        raise ApiError(400, str(err)) from None

    job_id = new_job_id()
    job_folder = store.folder(job_id)
    inputs = job_folder / INPUTS_FOLDER
    try:
        job_folder.mkdir()
        image = None
        if images:
            image = _store_upload(images[0], IMAGE_KINDS, inputs, "image", upload_label("image", 0), limits)
        paths = [_store_upload(upload, VIDEO_KINDS, inputs, f"video_{i}", upload_label("video", len(videos), i), limits)
                 for i, upload in enumerate(videos)]
        try:
            request = prepare_request(
                config, prompt, req.negative_prompt, size=size, seconds=req.seconds, num_frames=req.frames,
                fps=req.fps, steps=req.steps, guidance_scale=req.guidance_scale, shift=req.shift, sampler=req.sampler,
                seed=req.seed, image=image, video=paths or None, mode=req.mode, direction=req.direction or "forward",
                strength=req.strength)
        except SoraflowError as err:
            raise ApiError(400, public_message(str(err), job_folder, image, paths)) from None
    except BaseException:
        shutil.rmtree(job_folder, ignore_errors=True)
        raise

    h, w = request.size
    args = {
        "prompt": prompt, "negative_prompt": req.negative_prompt, "size": [h, w], "seconds": req.seconds,
        "num_frames": req.frames, "fps": request.fps, "steps": request.steps, "guidance_scale": request.guidance_scale,
        "shift": request.shift, "sampler": request.sampler, "seed": request.seed, "mode": request.mode,
        "direction": request.direction, "strength": req.strength,
    }
    summary = {
        "model": model_name, "prompt": prompt, "negative_prompt": request.negative_prompt, "mode": request.mode,
        "direction": request.direction if request.mode == "extend" else None, "size": f"{w}x{h}",
        "seconds": f"{request.num_frames / request.fps:g}", "frames": request.num_frames, "fps": request.fps,
        "steps": request.steps, "guidance_scale": request.guidance_scale, "seed": request.seed,
        "strength": request.strength, "expand": req.expand,
    }
    request_json = {"args": args, "expand": req.expand, "image": image.name if image else None,
                    "videos": [p.name for p in paths]}
    return Submission(job_id, request_json, summary)


def upload_label(kind: str, videos: int, index: int = 0) -> str:
    if kind == "image":
        return "the image upload"
    return "the video upload" if videos == 1 else f"video upload {'AB'[index]}"


def public_message(message: str, folder: Path, image: Path | None, videos: list[Path]) -> str:
    """``message`` with the server's paths replaced by what the client knows them as."""
    if image is not None:
        message = message.replace(str(image), upload_label("image", 0))
    for i, path in enumerate(videos):
        message = message.replace(str(path), upload_label("video", len(videos), i))
    return message.replace(str(folder), "the job's folder")


def _size(text: str) -> tuple[int, int]:
    import argparse

    try:
        return parse_size(text)
    except argparse.ArgumentTypeError as err:
        raise InputError(str(err)) from None


__all__ = ["VideoRequest", "Upload", "Submission", "Limits", "parse_fields", "check_submission", "public_message"]
