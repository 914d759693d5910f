"""How fast can one SoraWorld-sized clip (16 frames of 128x128) be written losslessly?

The dataset writer stores ~20,000 such clips in under 15 minutes on 2 cores, rendering included,
so the writer gets a few milliseconds per clip. This compares, side by side in one run (interleaved
repetitions, so load from other processes hits all rows alike), the lossless options PyAV offers,
and checks each decodes back bit-exactly through soraflow.video.read_video.

    python benchmarks/bench_video_write.py [--repeats 40] [--size 128] [--frames 16]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from soraflow import video


def rendered_clip(frames: int, size: int) -> np.ndarray:
    """Flat shapes with anti-aliased edges over a gradient sky: what the SoraWorld renderer makes."""
    out = []
    for k in range(frames):
        big = Image.new("RGB", (4 * size, 4 * size), (90, 160, 70))
        draw = ImageDraw.Draw(big)
        for row in range(0, 2 * size, 4):  # sky gradient
            draw.rectangle([0, row, 4 * size, row + 4], fill=(110 + row // 16, 160 + row // 20, 230))
        x, y = 20 + 24 * k, 120 + abs(8 - k) * 20
        draw.ellipse([x, y, x + 96, y + 96], fill=(220, 30, 30))
        draw.rectangle([320, 280, 440, 400], fill=(30, 30, 200))
        out.append(np.asarray(big.resize((size, size), Image.Resampling.BOX)))  # 4x4 supersampling
    return np.stack(out)


def write_pyav(path: Path, clip: np.ndarray, codec: str, pix_fmt: str, options: dict, fmt: str) -> None:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt, stream.options = clip.shape[2], clip.shape[1], pix_fmt, options
        stream.codec_context.thread_count = 1
        for i, rgb in enumerate(clip):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed writes per option (interleaved)")
    parser.add_argument("--size", type=int, default=128, help="frame height and width")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    args = parser.parse_args()
    clip = rendered_clip(args.frames, args.size)
    tmp = Path(tempfile.mkdtemp(prefix="bench_video_"))

    def png_sequence(path: Path) -> None:
        for i, rgb in enumerate(clip):
            Image.fromarray(rgb).save(path.with_name(f"{path.stem}_{i:04d}.png"), compress_level=1)

    options = {
        "write_video(.mp4, lossless=True) [libx264rgb qp0 ultrafast]": (
            ".mp4", lambda p: video.write_video(p, clip, 8, lossless=True)),
        "  same, raw PyAV (no validation, +faststart, atomic rename)": (
            ".mp4", lambda p: write_pyav(p, clip, "libx264rgb", "rgb24", {"qp": "0", "preset": "ultrafast"}, "mp4")),
        "libx264rgb qp0 superfast": (
            ".mp4", lambda p: write_pyav(p, clip, "libx264rgb", "rgb24", {"qp": "0", "preset": "superfast"}, "mp4")),
        "libx264rgb qp0 veryfast": (
            ".mp4", lambda p: write_pyav(p, clip, "libx264rgb", "rgb24", {"qp": "0", "preset": "veryfast"}, "mp4")),
        "libx264 yuv444p qp0 ultrafast": (
            ".mp4", lambda p: write_pyav(p, clip, "libx264", "yuv444p", {"qp": "0", "preset": "ultrafast"}, "mp4")),
        "ffv1 bgr0 (.mkv)": (".mkv", lambda p: write_pyav(p, clip, "ffv1", "bgr0", {}, "matroska")),
        "write_video(.webm, lossless=True) [VP9 gbrp]": (
            ".webm", lambda p: video.write_video(p, clip, 8, lossless=True)),
        "PNG per frame (compress_level 1)": (".png", png_sequence),
        "write_video(.mp4) default lossy [CRF 18 medium]": (".mp4", lambda p: video.write_video(p, clip, 8)),
    }
    times: dict[str, list[float]] = {name: [] for name in options}
    for repeat in range(args.repeats):
        for i, (name, (suffix, write)) in enumerate(options.items()):
            # A new file each time, as the dataset writer makes: replacing an existing file makes
            # ext4 flush it (auto_da_alloc), a cost the writer never pays.
            path = tmp / f"r{repeat}" / f"clip{i}{suffix}"
            path.parent.mkdir(exist_ok=True)
            start = time.perf_counter()
            write(path)
            times[name].append(time.perf_counter() - start)

    baseline = statistics.median(times[next(iter(options))])
    print(f"clip: {args.frames} frames of {args.size}x{args.size}, {args.repeats} interleaved repeats, each to a new file")
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}, PyAV {av.__version__}, "
          f"FFmpeg libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}")
    print()
    print("| writer | median ms | min ms | vs ours | KiB | exact | read ms |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for i, (name, (suffix, _)) in enumerate(options.items()):
        path = tmp / "r0" / f"clip{i}{suffix}"
        files = sorted(path.parent.glob(f"clip{i}_*.png")) if suffix == ".png" else [path]
        size = sum(f.stat().st_size for f in files)
        reads = []
        for _ in range(5):
            start = time.perf_counter()
            back = np.stack([video.read_image(f) for f in files]) if suffix == ".png" else video.read_video(path)
            reads.append(time.perf_counter() - start)
        read_ms = statistics.median(reads) * 1e3
        exact = "yes" if back.shape == clip.shape and np.array_equal(back, clip) else \
            f"no (max err {np.abs(back.astype(int) - clip).max()})"
        median = statistics.median(times[name])
        print(f"| {name} | {median * 1e3:.1f} | {min(times[name]) * 1e3:.1f} | {median / baseline:.2f}x | "
              f"{size / 1024:.0f} | {exact} | {read_ms:.1f} |")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
