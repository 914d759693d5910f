"""Video and image files in and out: every pixel that enters or leaves soraflow passes here.

Arrays are numpy ``uint8`` of shape ``(T, H, W, 3)`` (RGB) for clips and ``(H, W, 3)`` for one
frame. Decoding and encoding use PyAV (FFmpeg); still images use Pillow; resizing uses Pillow's
antialiased bilinear filter, so a downscale averages every source pixel instead of skipping some.

Policies (the details people trip over, decided once here):

- **Timestamps, not indices.** ``fps=`` resampling gives each output time ``start + k / fps`` the
  source frame whose timestamp is nearest, among those within half an output interval of it;
  where there is none (upsampling, a frame held longer in a variable-rate file) it repeats the
  frame on screen at that time, as FFmpeg's fps filter does. The clip spans ``[start, end)``
  where ``end`` is the last frame's time plus its duration, so a 4.004 s clip at 8 fps gives
  ``ceil(4.004 * 8) = 33`` frames. Without ``fps=``, every frame from the one nearest to
  ``start`` on is returned.
- **Damaged files raise.** A missing, empty or unreadable file, a decoder error, or a stream that
  stops more than two frames before the duration its header declares raises :class:`VideoError`
  naming the file. A truncated clip is never silently returned as if it were whole;
  :func:`iter_frames` raises where the damage is found (frames it already yielded were decoded
  correctly). A file cut inside its last two frames may pass unnoticed when the decoder does not
  complain: nothing in the file says what is missing.
- **Rotation metadata** (phone videos) is applied, so frames come out the way players show them.
- **Colour.** Writers convert RGB to YUV with the BT.709 matrix in limited range and tag the file
  so; readers use the file's tags, or BT.601 when untagged (what FFmpeg does).
- **Writes are atomic** (:func:`soraflow.atomic.atomic_path`): a failed or interrupted write leaves
  nothing behind, and an unwritable destination raises :class:`InputError` before any work.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_path, check_writable
from .errors import InputError, VideoError

# Suffixes Pillow reads as (possibly animated) images; everything else goes to PyAV. GIF is a
# video here: PyAV gives it real timestamps and composes its delta frames.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg", ".mpeg",
                            ".ts", ".flv", ".wmv", ".ogv", ".3gp"})
WRITE_SUFFIXES = (".mp4", ".webm", ".gif", ".png")
CROPS = ("center", "fit", "stretch", "none")

DEFAULT_CRF = {".mp4": 18, ".webm": 32}  # visually near-transparent H.264; VP9's scale is higher
MAX_CRF = {".mp4": 51, ".webm": 63}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
# Frames up to this many pixels encode and decode fastest on one thread: thread start-up costs
# more than the work (128x128 x 16 frames on the loaded 2-core machine, median: lossless write ~5
# vs ~8 ms, read ~7 vs ~16 ms), and data loaders and dataset writers run a process per core anyway.
SMALL_FRAME_PIXELS = 320 * 240


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` finds out about a file without decoding it all."""

    path: Path
    frames: int      # number of frames (counted from the packets, not taken from the header)
    fps: float       # average frame rate; 0.0 for a still image
    height: int      # displayed size, after rotation metadata
    width: int
    duration: float  # seconds; 0.0 for a still image
    codec: str       # decoder name: "h264", "vp9", "gif", "png", ...


# ---------------------------------------------------------------------------------------------
# opening files


def _check_source(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path} is a directory, expected a video or image file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes)")
    return path


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _open_av(path: Path):
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as err:
        raise VideoError(f"{path} is not a video that can be read (truncated or corrupt?): {_reason(err)}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream")
    return container


def _reason(err: Exception) -> str:
    # PyAV errors repeat the file name and errno; the message alone is the useful part.
    return getattr(err, "strerror", None) or str(err)


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise VideoError(f"{path} is not an image that can be read (truncated or corrupt?): {err}") from None
    return image


# ---------------------------------------------------------------------------------------------
# probe


def probe(path, *, exact: bool = True) -> VideoInfo:
    """Frame count, frame rate, displayed size, duration and codec of a video (or image) file.

    With ``exact=True`` (default) the frames are counted by reading every packet (no decoding:
    milliseconds for a short clip), because container headers lie (WebM and MKV carry no count
    at all). This also catches a file cut short: :class:`VideoError` when the packets stop well
    before the duration the header declares. ``exact=False`` trusts the header.
    """
    path = _check_source(path)
    if _is_image(path):
        return _probe_image(path)
    import av

    with _open_av(path) as container:
        stream = container.streams.video[0]
        rate = _rate(stream)
        declared = _declared_duration(container, stream)
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as err:
            raise VideoError(f"{path}: cannot decode the first frame (corrupt?): {_reason(err)}") from None
        if first is None:
            raise VideoError(f"{path} has a video stream with no frames")
        height, width = (first.width, first.height) if abs(first.rotation) == 90 else (first.height, first.width)
        if exact:
            container.seek(0)
            frames, end = _count_packets(path, container, stream)
            frame_duration = 1.0 / float(rate) if rate else (declared or 0.0) / max(frames, 1)
            if declared and frames and end > 0 and _stops_early(end, declared, frame_duration):
                raise VideoError(f"{path} is truncated or corrupt: its packets end at {end:.2f} s "
                                 f"of the {declared:.2f} s its header declares")
        else:
            frames = stream.frames or (round(declared * float(rate)) if declared and rate else 0)
        duration = declared or (frames / float(rate) if rate else 0.0)
        fps = float(rate) if rate else 0.0
        if frames and duration and abs(frames / duration - fps) > 0.01 * fps:
            fps = frames / duration  # variable delays (GIF, VFR): FFmpeg's rate is a guess; this is the average
        return VideoInfo(path, frames, fps, height, width, duration, stream.codec_context.name)


def _probe_image(path: Path) -> VideoInfo:
    image = _open_image(path)
    frames = getattr(image, "n_frames", 1)
    durations = _image_durations(image) if frames > 1 else [0.0]
    duration = sum(durations)
    fps = frames / duration if duration else 0.0
    width, height = ImageOps.exif_transpose(image).size if frames == 1 else image.size
    return VideoInfo(path, frames, fps, height, width, duration, (image.format or "image").lower())


def _rate(stream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return rate if rate and rate > 0 else None


def _declared_duration(container, stream) -> float | None:
    """The video duration the file claims, in seconds, or None when it does not say."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    # The container's duration covers every stream (audio often runs longer), so only trust it
    # when video is all there is.
    if container.duration and len(container.streams) == 1:
        return container.duration / 1_000_000
    return None


def _stops_early(end: float, declared: float, frame_duration: float) -> bool:
    return declared - end > 2 * frame_duration + 1e-3


def _count_packets(path: Path, container, stream) -> tuple[int, float]:
    """(number of video packets, end time in seconds) by demuxing only."""
    import av

    t0 = stream.start_time or 0
    count, end = 0, 0.0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            count += 1
            if packet.pts is not None and packet.time_base:
                end = max(end, float((packet.pts - t0 + (packet.duration or 0)) * packet.time_base))
    except av.FFmpegError as err:
        raise VideoError(f"{path} is truncated or corrupt: reading packet {count} failed: {_reason(err)}") from None
    return count, end


# ---------------------------------------------------------------------------------------------
# reading


def read_video(path, *, fps: float | None = None, size: tuple[int, int] | None = None, crop: str = "center",
               start: float = 0.0, max_frames: int | None = None) -> np.ndarray:
    """Decode a video (or an image, as one frame) into a uint8 array (T, H, W, 3).

    fps: resample to this frame rate by timestamp (None keeps every frame); see the module notes.
    size: (height, width) of the output; None keeps the file's size.
    crop: how ``size`` meets a different aspect ratio: "center" scales to cover and crops the
        middle, "fit" scales to fit inside and pads with black, "stretch" (or "none") ignores aspect.
    start: seconds to skip from the beginning. max_frames: stop after this many frames.
    """
    frames = list(iter_frames(path, fps=fps, size=size, crop=crop, start=start, max_frames=max_frames))
    return np.stack(frames)


def iter_frames(path, *, fps: float | None = None, size: tuple[int, int] | None = None, crop: str = "center",
                start: float = 0.0, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Like :func:`read_video`, one (H, W, 3) frame at a time: memory stays bounded for any length.

    Checks the arguments and opens the file when called (so a bad path fails at once), then
    decodes lazily.
    """
    path = _check_source(path)
    size = _check_size(size)
    _check_crop(crop)
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be a positive number, got {fps}")
    if not (math.isfinite(start) and start >= 0):
        raise InputError(f"start must be >= 0 seconds, got {start}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}")
    timed = _image_frames(path) if _is_image(path) else _video_frames(path, _open_av(path), start)
    return _resample_resize(path, timed, fps=fps, size=size, crop=crop, start=start, max_frames=max_frames)


def _resample_resize(path, timed, *, fps, size, crop, start, max_frames) -> Iterator[np.ndarray]:
    count = 0
    for frame in (_retime(timed, fps, start) if fps else _from_start(timed, start)):
        yield _resize(frame() if callable(frame) else frame, size, crop)
        count += 1
        if max_frames is not None and count >= max_frames:
            timed.close()  # closes the container now, not when the generator is collected
            return
    if count == 0:
        raise InputError(f"start={start} s is at or past the end of {path}")


def _from_start(timed, start: float):
    """Every frame from the one nearest to ``start`` on."""
    for t, duration, frame in timed:
        if start <= 0 or t + duration / 2 > start:
            yield frame


def _retime(timed, fps: float, start: float):
    """Resample onto the grid g_k = start + k / fps, streaming.

    Slot k takes the frame nearest to g_k among those within half an output interval of it (so
    downsampling keeps the nearest frames); a slot with none (upsampling, or a frame held longer in
    a variable-rate file) repeats the frame on screen at g_k. This is FFmpeg's fps filter.
    """
    k = 0
    best = None  # (distance to g_k, frame) of the best frame in slot k so far
    last = None  # the latest frame seen: the one on screen when a slot has no frame of its own
    end = None
    for t, duration, frame in timed:
        slot = math.floor((t - start) * fps + 0.5 + 1e-9)
        while k < slot:  # frames arrive in time order, so slot k is complete
            yield best[1] if best is not None else (last if last is not None else frame)
            k, best = k + 1, None
        if slot == k:
            distance = abs(t - (start + k / fps))
            if best is None or distance <= best[0] + 1e-9:  # ties go to the later frame
                best = (distance, frame)
        last, end = frame, t + duration
    # The last frame stays on screen until its end: grid points before that still show it.
    while last is not None and start + k / fps < end - 1e-6:
        yield best[1] if best is not None else last
        k, best = k + 1, None


def _video_frames(path: Path, container, start: float):
    """Yield (time s, duration s, lazy RGB frame) in presentation order; raise on damage.

    The RGB conversion is deferred (a callable) so frames that fps resampling drops cost only
    their decode.
    """
    import av

    with container:
        stream = container.streams.video[0]
        context = stream.codec_context
        if context.width * context.height <= SMALL_FRAME_PIXELS:
            context.thread_count = 1  # a thread pool costs more than it saves on small frames
        else:
            stream.thread_type = "AUTO"  # frame + slice threads
        time_base, t0 = stream.time_base, stream.start_time or 0
        rate = _rate(stream)
        nominal = 1.0 / float(rate) if rate else 1.0 / 25
        declared = _declared_duration(container, stream)
        index, end = 0, None
        try:
            frames = container.decode(stream)
            first = None
            if _seek(container, stream, start - 2 * nominal):
                frames = container.decode(stream)
                first = next(frames, None)
                if first is None or first.pts is None or float((first.pts - t0) * time_base) > start + nominal:
                    # Past the target (a broken or missing index) or no timestamps to place frames
                    # by: decode from the beginning instead.
                    container.seek(0)
                    frames, first = container.decode(stream), None
            for frame in (_chain(first, frames) if first is not None else frames):
                # A frame without a timestamp follows the previous one.
                t = float((frame.pts - t0) * time_base) if frame.pts is not None else (end or 0.0)
                duration = float(frame.duration * time_base) if frame.duration else nominal
                index += 1
                end = t + duration
                yield t, duration, _lazy_rgb(frame)
        except av.FFmpegError as err:
            raise VideoError(f"{path} is truncated or corrupt: decoding failed after {index} frames "
                             f"({end or 0.0:.2f} s): {_reason(err)}") from None
        if index == 0 and start <= 0:
            raise VideoError(f"{path} has a video stream with no frames")
        if declared and end is not None and _stops_early(end, declared, nominal):
            raise VideoError(f"{path} is truncated or corrupt: the video stops at {end:.2f} s "
                             f"of the {declared:.2f} s its header declares")


def _seek(container, stream, target: float) -> bool:
    """Seek to the keyframe at or before ``target`` seconds; False when the file cannot seek."""
    import av

    if target <= 0:
        return False
    try:
        container.seek(int(target / stream.time_base) + (stream.start_time or 0), stream=stream, backward=True)
    except av.FFmpegError:
        container.seek(0)
        return False
    return True


def _lazy_rgb(frame):
    def convert() -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range or None)
        if frame.rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=round(frame.rotation / 90)))
        return rgb

    return convert


def _image_durations(image: Image.Image) -> list[float]:
    durations = []
    for i in range(image.n_frames):
        image.seek(i)
        durations.append(max(image.info.get("duration", 100) or 100, 10) / 1000)
    image.seek(0)
    return durations


def _image_frames(path: Path):
    """An image as (time, duration, frame) triples: one for a still, each frame when animated."""
    image = _open_image(path)
    with image:
        if getattr(image, "n_frames", 1) == 1:
            yield 0.0, 0.0, np.array(ImageOps.exif_transpose(image).convert("RGB"))
            return
        t = 0.0
        for i, duration in enumerate(_image_durations(image)):
            try:
                image.seek(i)
                frame = np.array(image.convert("RGB"))
            except (OSError, ValueError) as err:
                raise VideoError(f"{path} is truncated or corrupt: frame {i} failed: {err}") from None
            yield t, duration, frame
            t += duration


def read_image(path, *, size: tuple[int, int] | None = None, crop: str = "center") -> np.ndarray:
    """Read an image (PNG, JPEG, WebP, ...) as uint8 (H, W, 3), honouring EXIF orientation.

    Alpha is dropped. A video file gives its first frame. ``size``/``crop`` as in :func:`read_video`.
    """
    path = _check_source(path)
    size = _check_size(size)
    _check_crop(crop)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        with warnings.catch_warnings():
            # PIL warns past MAX_IMAGE_PIXELS and raises past twice that: both are refused, since a
            # small file that decodes to gigapixels (a decompression bomb) would exhaust memory.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(path)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise VideoError(f"{path} decodes to more than {Image.MAX_IMAGE_PIXELS:,} pixels; "
                                 f"refused (a decompression bomb?)") from None
            except (UnidentifiedImageError, OSError):
                image = None  # not an image: maybe a video
            if image is not None:
                with image:
                    try:
                        rgb = np.array(ImageOps.exif_transpose(image).convert("RGB"))
                    except (OSError, ValueError, SyntaxError) as err:
                        raise VideoError(f"{path} is not an image that can be read (truncated or corrupt?): "
                                         f"{err}") from None
                return _resize(rgb, size, crop)
    try:
        return read_video(path, size=size, crop=crop, max_frames=1)[0]
    except VideoError:
        raise VideoError(f"{path} is neither an image nor a video that can be read") from None


# ---------------------------------------------------------------------------------------------
# resizing


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (height, width), got {size!r}") from None
    if height < 1 or width < 1 or (height, width) != tuple(size):
        raise InputError(f"size must be two positive integers (height, width), got {size!r}")
    return height, width


def _check_crop(crop: str) -> None:
    if crop not in CROPS:
        raise InputError(f"crop must be one of {', '.join(CROPS)}; got {crop!r}")


def _resize(rgb: np.ndarray, size: tuple[int, int] | None, crop: str) -> np.ndarray:
    """(h, w, 3) -> (H, W, 3) by Pillow's bilinear filter, antialiased when shrinking."""
    if size is None or rgb.shape[:2] == size:
        return rgb
    (h, w), (height, width) = rgb.shape[:2], size
    image = Image.fromarray(rgb)
    if crop == "center":
        # Resample straight from the centred source box of the target's aspect ratio: one
        # filtering pass, no rounding of an intermediate size.
        scale = max(height / h, width / w)
        box_w, box_h = width / scale, height / scale
        left, top = (w - box_w) / 2, (h - box_h) / 2
        out = image.resize((width, height), Image.Resampling.BILINEAR, box=(left, top, left + box_w, top + box_h))
    elif crop == "fit":
        scale = min(height / h, width / w)
        inner_w, inner_h = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
        out = Image.new("RGB", (width, height))
        out.paste(image.resize((inner_w, inner_h), Image.Resampling.BILINEAR),
                  ((width - inner_w) // 2, (height - inner_h) // 2))
    else:  # "stretch" / "none"
        out = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.array(out)  # writable, like the decoder's arrays


# ---------------------------------------------------------------------------------------------
# writing


def _frames_error(what: str, array) -> InputError:
    shape = tuple(getattr(array, "shape", ()))
    dtype = getattr(array, "dtype", type(array).__name__)
    return InputError(f"{what} must be uint8 (T, H, W, 3), got {dtype} {shape}")


def _check_frames(frames) -> Iterator[np.ndarray]:
    """Validate a (T, H, W, 3) uint8 array or an iterable of (H, W, 3) uint8 frames, lazily."""
    if hasattr(frames, "shape") and hasattr(frames, "dtype"):  # numpy, or a CPU torch tensor
        array = np.asarray(frames)
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8 or 0 in array.shape:
            raise _frames_error("frames", array)
        yield from array
        return
    if isinstance(frames, (str, bytes)) or not isinstance(frames, Iterable):
        raise InputError(f"frames must be uint8 (T, H, W, 3) or an iterable of (H, W, 3) frames, "
                         f"got {type(frames).__name__}")
    first_shape = None
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8 or 0 in frame.shape:
            raise InputError(f"frames must be uint8 (T, H, W, 3): frame {i} is {frame.dtype} {frame.shape}, "
                             f"expected uint8 (H, W, 3)")
        if first_shape is None:
            first_shape = frame.shape
        elif frame.shape != first_shape:
            raise InputError(f"frames must all have one size: frame {i} is {frame.shape}, frame 0 is {first_shape}")
        yield frame


def _check_fps(fps) -> Fraction:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"fps must be a positive number, got {fps!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1000):
        raise InputError(f"fps must be in (0, 1000], got {fps}")
    if isinstance(fps, (int, Fraction)):
        return Fraction(fps)
    return Fraction(value).limit_denominator(1001)  # 29.97002997 -> 30000/1001, 12.5 -> 25/2


def write_video(path, frames, fps: float, *, lossless: bool = False, quality: int | None = None,
                preset: str | None = None) -> Path:
    """Write frames (uint8 (T, H, W, 3) or an iterable of (H, W, 3)) to ``path``; returns the path.

    The suffix picks the format:
      .mp4   H.264. Default: yuv420p, CRF ``quality`` (18), preset "medium", +faststart: plays in
             browsers and phones; odd sizes are padded to even by repeating the last row/column.
             ``lossless=True``: RGB H.264 (libx264rgb, qp 0, preset "ultrafast") that
             :func:`read_video` decodes back bit-exactly; plays in FFmpeg/VLC/mpv, not in browsers.
      .webm  VP9, CRF ``quality`` (32); ``lossless=True`` is exact RGB (gbrp).
      .gif   one 256-colour palette for the whole clip, loops forever; frame delays are rounded
             to GIF's 1/100 s steps without drift (8 fps -> 13, 12, 13, 12 ...). Identical
             consecutive frames become one longer frame. Held in memory (GIFs are short).
      .png   one frame -> that file. Several frames -> NAME_0000.png, NAME_0001.png, ... beside it;
             the first file's path is returned.
    ``quality``: CRF for .mp4 (0-51) and .webm (0-63), lower is better; ignored for .gif/.png.
    ``preset``: x264 preset for .mp4 ("ultrafast" ... "veryslow"): slower is smaller, same quality.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"cannot write {path}: unknown video format {suffix or '(no suffix)'!r}; "
                         f"use one of {' '.join(WRITE_SUFFIXES)}")
    rate = _check_fps(fps)
    if quality is not None and suffix in MAX_CRF and not 0 <= quality <= MAX_CRF[suffix]:
        raise InputError(f"quality (CRF) for {suffix} must be in [0, {MAX_CRF[suffix]}], got {quality}")
    if preset is not None and preset not in X264_PRESETS:
        raise InputError(f"preset must be one of {', '.join(X264_PRESETS)}; got {preset!r}")
    if lossless and suffix == ".gif":
        raise InputError(f"cannot write {path} losslessly: GIF has 256 colours; use .mp4, .webm or .png")
    check_writable(path)
    checked = _check_frames(frames)
    if suffix == ".gif":
        return _write_gif(path, checked, rate)
    if suffix == ".png":
        return _write_png(path, checked)
    first = next(checked, None)
    if first is None:
        raise InputError(f"no frames to write to {path}")
    return _write_av(path, first, checked, rate, suffix, lossless=lossless, quality=quality, preset=preset)


def _write_av(path: Path, first: np.ndarray, rest: Iterator[np.ndarray], rate: Fraction, suffix: str, *,
              lossless: bool, quality: int | None, preset: str | None) -> Path:
    import av

    height, width = first.shape[:2]
    pad = (0, 0)
    options: dict[str, str] = {}
    if suffix == ".mp4":
        container_options = {"movflags": "+faststart"}  # index first: playback starts before download ends
        if lossless:
            codec, pix_fmt = "libx264rgb", "rgb24"
            options = {"qp": "0", "preset": preset or "ultrafast"}
        else:
            codec, pix_fmt = "libx264", "yuv420p"
            options = {"crf": str(DEFAULT_CRF[suffix] if quality is None else quality), "preset": preset or "medium"}
            pad = (height % 2, width % 2)  # 4:2:0 chroma needs even sizes
            if any(pad):
                warnings.warn(f"{path}: {width}x{height} is odd; H.264 4:2:0 needs even sizes, so the last "
                              f"row/column is repeated to {width + pad[1]}x{height + pad[0]}", stacklevel=3)
    else:  # .webm
        container_options = {}
        codec = "libvpx-vp9"
        if lossless:  # RGB planes: exact; the fastest speed setting is also the smallest here
            pix_fmt, options = "gbrp", {"lossless": "1", "cpu-used": "8"}
        else:
            pix_fmt = "yuv420p"
            options = {"crf": str(DEFAULT_CRF[suffix] if quality is None else quality), "b:v": "0", "cpu-used": "4"}
        options.update({"deadline": "good", "row-mt": "1"})
    yuv = pix_fmt.startswith("yuv")

    with atomic_path(path) as tmp:
        try:
            with av.open(str(tmp), "w", format=suffix[1:], options=container_options) as container:
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height = width + pad[1], height + pad[0]
                stream.pix_fmt = pix_fmt
                stream.options = options
                stream.codec_context.thread_count = 1 if width * height <= SMALL_FRAME_PIXELS else 0
                if yuv:  # tag what we convert with, so players do not guess
                    context = stream.codec_context
                    context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
                    context.color_range = 1  # limited ("tv")
                for i, rgb in enumerate(_chain(first, rest)):
                    if any(pad):
                        rgb = np.pad(rgb, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                    if yuv:
                        frame = frame.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
                    frame.pts, frame.time_base = i, 1 / rate
                    container.mux(stream.encode(frame))
                container.mux(stream.encode(None))
        except av.FFmpegError as err:
            raise VideoError(f"writing {path} failed: {_reason(err)}") from None
    return path


def _chain(first, rest):
    yield first
    yield from rest


def _gif_delays_cs(count: int, rate: Fraction) -> list[int]:
    """Per-frame delays in 1/100 s whose running sum tracks k / fps exactly (no drift)."""
    ends = [math.floor(Fraction(100 * k) / rate + Fraction(1, 2)) for k in range(count + 1)]
    return [max(1, b - a) for a, b in zip(ends, ends[1:])]


def _write_gif(path: Path, frames: Iterator[np.ndarray], rate: Fraction) -> Path:
    arrays = list(frames)
    if not arrays:
        raise InputError(f"no frames to write to {path}")
    if rate > 50:
        warnings.warn(f"{path}: GIF delays under 2/100 s ({float(rate):g} fps) are shown slower by most "
                      f"viewers", stacklevel=3)
    # One palette for the clip, from a montage of up to 16 evenly spaced frames: per-frame palettes
    # make flat areas flicker between neighbouring colours. No dithering, for the same reason.
    picks = np.concatenate(arrays[:: max(1, len(arrays) // 16)][:16], axis=0)
    stride = max(1, math.isqrt(picks.shape[0] * picks.shape[1] // 1_000_000))  # ~1 Mpx is plenty
    # Octree: ~100x faster than median cut here, and as close (PSNR within 0.2 dB on test clips).
    palette = Image.fromarray(picks[::stride, ::stride]).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    images = [Image.fromarray(a).quantize(palette=palette, dither=Image.Dither.NONE) for a in arrays]
    delays_ms = [10 * cs for cs in _gif_delays_cs(len(images), rate)]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=delays_ms,
                       loop=0, optimize=False, disposal=1)
    return path


def written_files(path: str | os.PathLike, first: Path) -> list[Path]:
    """Every file :func:`write_video` made for ``path`` (which returned ``first``): one, or for a
    .png of several frames the whole NAME_0000.png, NAME_0001.png, ... sequence."""
    path, first = Path(path), Path(first)
    if first == path:
        return [path]
    files, i = [], 0
    while (frame := path.with_name(f"{path.stem}_{i:04d}{path.suffix}")).is_file():
        files.append(frame)
        i += 1
    return files


def _write_png(path: Path, frames: Iterator[np.ndarray]) -> Path:
    first = next(frames, None)
    if first is None:
        raise InputError(f"no frames to write to {path}")
    second = next(frames, None)
    if second is None:
        return write_image(path, first)
    written: list[Path] = []
    try:
        for i, frame in enumerate(_chain(first, _chain(second, frames))):
            written.append(write_image(path.with_name(f"{path.stem}_{i:04d}{path.suffix}"), frame))
    except BaseException:
        for done in written:  # a failed sequence leaves nothing, like a failed single file
            done.unlink(missing_ok=True)
        raise
    return written[0]


def write_image(path, frame, *, quality: int = 95) -> Path:
    """Write one uint8 (H, W, 3) frame (or (1, H, W, 3)) as PNG, JPEG, WebP, ... atomically.

    ``quality`` applies to JPEG and WebP.
    """
    path = Path(path)
    format_ = Image.registered_extensions().get(path.suffix.lower())
    if format_ is None or not Image.SAVE.get(format_):
        raise InputError(f"cannot write {path}: unknown image format {path.suffix or '(no suffix)'!r}")
    array = np.asarray(frame)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8 or 0 in array.shape:
        raise InputError(f"frame must be uint8 (H, W, 3), got {array.dtype} {array.shape}")
    check_writable(path)
    options = {"quality": quality} if format_ in ("JPEG", "WEBP") else {}
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=format_, **options)
    return path


# ---------------------------------------------------------------------------------------------
# tensors


def to_tensor(frames: np.ndarray):
    """uint8 (T, H, W, 3) -> float32 torch tensor (3, T, H, W) in [-1, 1] (the models' convention)."""
    import torch
    from einops import rearrange

    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise _frames_error("frames", array)
    x = torch.from_numpy(np.ascontiguousarray(array)).float().div_(127.5).sub_(1.0)
    return rearrange(x, "t h w c -> c t h w")


def from_tensor(video) -> np.ndarray:
    """A (3, T, H, W) or (1, 3, T, H, W) tensor in [-1, 1] -> uint8 (T, H, W, 3), rounded and clipped."""
    import torch
    from einops import rearrange

    if video.ndim == 5:
        if video.shape[0] != 1:
            raise InputError(f"from_tensor takes one video; got a batch of {video.shape[0]}: pass video[i]")
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise InputError(f"video must be (3, T, H, W) in [-1, 1], got {tuple(video.shape)}")
    x = ((video.detach().float().cpu() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return rearrange(x, "c t h w -> t h w c").numpy()


__all__ = ["VideoInfo", "probe", "read_video", "iter_frames", "read_image", "write_video", "write_image",
           "to_tensor", "from_tensor", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "WRITE_SUFFIXES"]
