"""soraflow.video: decoding real footage, resampling, resizing, writing every format, damaged files."""

from __future__ import annotations

import math
import shutil
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from soraflow import video
from soraflow.errors import InputError, VideoError

# The README table of ../shared/data/real_videos: (frames, fps, width, height).
REAL = {
    "bigbuckbunny.mp4": (132, 25.0, 1280, 720),
    "bikes.mp4": (250, 25.0, 640, 272),
    "carphone_pristine.mp4": (120, 30000 / 1001, 176, 144),
    "scene_cuts.mp4": (250, 25.0, 1280, 272),
}


def smooth_clip(t=16, h=128, w=128) -> np.ndarray:
    """Slowly varying colour gradients: what a lossy codec should reproduce almost exactly."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = [np.stack([128 + 80 * np.sin(xx / 40 + k / 6), 128 + 80 * np.cos(yy / 35 - k / 8),
                        128 + 60 * np.sin((xx + yy) / 60 + k / 10)], axis=-1) for k in range(t)]
    return np.stack(frames).round().astype(np.uint8)


def busy_clip(t=16, h=128, w=128, seed=0) -> np.ndarray:
    """Noise over a moving square: every pixel differs, so only a lossless codec returns it exactly."""
    frames = np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    for k in range(t):
        frames[k, 20:60, 4 * k:4 * k + 40] = (250, 10, 10)
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255 ** 2 / mse)


def thirds(h=60, w=180) -> np.ndarray:
    """Red | green | blue vertical thirds: crops and pads show up as which colours survive."""
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, : w // 3] = (255, 0, 0)
    frame[:, w // 3: 2 * w // 3] = (0, 255, 0)
    frame[:, 2 * w // 3:] = (0, 0, 255)
    return frame


# ---------------------------------------------------------------------------------------------
# real footage


@pytest.mark.parametrize("name", sorted(REAL))
def test_probe_and_decode_match_the_readme_table(real_videos, name):
    frames, fps, width, height = REAL[name]
    info = video.probe(real_videos / name)
    assert (info.frames, info.width, info.height, info.codec) == (frames, width, height, "h264")
    assert info.fps == pytest.approx(fps, rel=1e-6)
    assert info.duration == pytest.approx(frames / fps, abs=1e-3)
    # Decoding (streamed, so 720p does not need 360 MB) yields exactly the probed frames.
    shapes = [f.shape for f in video.iter_frames(real_videos / name)]
    assert len(shapes) == frames and set(shapes) == {(height, width, 3)}


def test_fps_resampling_picks_the_nearest_frame_by_timestamp(real_videos):
    path = real_videos / "carphone_pristine.mp4"
    full = video.read_video(path)
    assert full.shape == (120, 144, 176, 3) and full.dtype == np.uint8
    source_times = np.arange(120) * 1001 / 30000

    def expected_index(g: float, fps: float) -> int:
        # Nearest frame within half an output interval, else the frame on screen at g.
        distance = np.abs(source_times - g)
        if distance.min() <= 0.5 / fps:
            return int(np.argmin(distance))
        return int(np.flatnonzero(source_times <= g)[-1])

    for fps in (8, 12.5, 60):
        out = video.read_video(path, fps=fps)
        # The clip lasts 120 * 1001/30000 = 4.004 s: output times k / fps in [0, 4.004).
        assert len(out) == math.ceil(4.004 * fps)
        for k in range(0, len(out), 7):
            assert np.array_equal(out[k], full[expected_index(k / fps, fps)]), (fps, k)
    # Upsampling repeats frames (held, never shown early), downsampling drops them.
    up = video.read_video(path, fps=60)
    assert np.array_equal(up[0], full[0]) and np.array_equal(up[1], full[0]) and np.array_equal(up[2], full[1])
    down = video.read_video(path, fps=10)
    assert np.array_equal(down[1], full[3]) and np.array_equal(down[2], full[6])


def test_start_and_max_frames(real_videos):
    path = real_videos / "carphone_pristine.mp4"
    full = video.read_video(path)
    # Frame 30 is at 1.001 s: the nearest to start=1.0.
    tail = video.read_video(path, start=1.0)
    assert len(tail) == 90 and np.array_equal(tail, full[30:])
    head = video.read_video(path, max_frames=5)
    assert np.array_equal(head, full[:5])
    some = video.read_video(path, start=2.0, fps=10, max_frames=4)
    expected = [int(round((2.0 + k / 10) * 30000 / 1001)) for k in range(4)]
    assert np.array_equal(some, full[expected])
    with pytest.raises(InputError, match="past the end"):
        video.read_video(path, start=10.0)


def test_resize_modes_on_real_footage(real_videos):
    path = real_videos / "bikes.mp4"  # 640x272, wide
    for crop in ("center", "fit", "stretch"):
        clip = video.read_video(path, size=(64, 96), crop=crop, max_frames=3)
        assert clip.shape == (3, 64, 96, 3)
    fit = video.read_video(path, size=(96, 96), crop="fit", max_frames=1)[0]
    # 640x272 fit into 96x96 is 96x41 in the middle: black bars above and below, picture between.
    assert fit[:25].max() == 0 and fit[-25:].max() == 0 and fit[30:66].mean() > 20
    center = video.read_video(path, size=(96, 96), crop="center", max_frames=1)[0]
    assert center[:2].mean() > 20 and center[-2:].mean() > 20  # no bars: picture to the edges
    # A downscale averages: the resized frame matches a box-filtered original closely.
    full = video.read_video(path, max_frames=1)[0]
    small = video.read_video(path, size=(68, 160), crop="stretch", max_frames=1)[0]
    boxed = full.reshape(68, 4, 160, 4, 3).mean(axis=(1, 3))
    assert psnr(small, boxed) > 42  # point sampling (full[1::4, 1::4]) scores 38 here


def test_downscaling_is_antialiased(tmp_path):
    stripes = np.zeros((64, 256, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: point sampling returns all black or all white
    path = video.write_image(tmp_path / "stripes.png", stripes)
    for crop in ("stretch", "center"):
        small = video.read_image(path, size=(16, 64), crop=crop)
        error = np.abs(small.astype(int) - 128)
        assert error[:, 1:-1].max() <= 2 and error.max() <= 12, crop  # edge columns weigh one stripe more


def test_iter_frames_closes_early_and_streams(real_videos):
    frames = video.iter_frames(real_videos / "bikes.mp4", size=(32, 32))
    first = next(frames)
    assert first.shape == (32, 32, 3)
    frames.close()  # releasing a half-read stream must not raise


# ---------------------------------------------------------------------------------------------
# resizing and images


def test_center_fit_stretch_on_a_known_frame(tmp_path):
    path = video.write_image(tmp_path / "thirds.png", thirds())
    assert np.array_equal(video.read_image(path), thirds())
    center = video.read_image(path, size=(30, 30), crop="center")
    # Scale 60x180 to cover 30x30 -> 30x90, keep the middle 30 columns: only the green third.
    assert np.array_equal(center[:, 1:-1], np.broadcast_to([0, 255, 0], (30, 28, 3)))
    fit = video.read_image(path, size=(30, 30), crop="fit")
    # Whole frame scaled to 30x10 in the middle, black above and below.
    assert fit[:9].max() == 0 and fit[21:].max() == 0
    assert fit[15, 2].tolist() == [255, 0, 0] and fit[15, 15].tolist() == [0, 255, 0]
    assert fit[15, 27].tolist() == [0, 0, 255]
    assert center.flags.writeable and video.read_image(path).flags.writeable  # callers may draw on them
    stretch = video.read_image(path, size=(30, 30), crop="none")
    assert stretch[:, 2].tolist() == [[255, 0, 0]] * 30 and stretch[:, 27].tolist() == [[0, 0, 255]] * 30
    with pytest.raises(InputError, match="crop must be one of"):
        video.read_image(path, size=(30, 30), crop="zoom")
    with pytest.raises(InputError, match="size"):
        video.read_image(path, size=(30, 0))


def test_read_image_formats_orientation_and_video_first_frame(tmp_path):
    smooth = smooth_clip(t=1, h=60, w=90)[0]
    for suffix in (".jpg", ".webp"):
        back = video.read_image(video.write_image(tmp_path / f"x{suffix}", smooth))
        assert back.shape == smooth.shape and 35 < psnr(back, smooth) < 99
    frame = thirds()
    assert np.array_equal(video.read_image(video.write_image(tmp_path / "x.bmp", frame)), frame)
    # EXIF orientation 6 (rotate 90 clockwise to view): the pixels are stored landscape.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(frame).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = video.read_image(tmp_path / "phone.jpg")
    assert upright.shape == (180, 60, 3) and upright[2, 30, 0] > 200  # red third now on top
    info = video.probe(tmp_path / "phone.jpg")
    assert (info.frames, info.height, info.width, info.fps) == (1, 180, 60, 0.0)
    # A video given to read_image gives its first frame; an image given to read_video is one frame.
    clip = busy_clip(t=3, h=32, w=32)
    mp4 = video.write_video(tmp_path / "c.mp4", clip, 8, lossless=True)
    assert np.array_equal(video.read_image(mp4), clip[0])
    assert np.array_equal(video.read_video(tmp_path / "x.bmp"), frame[None])


def test_rotation_metadata_is_applied(tmp_path):
    import av

    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:, :8] = 255  # white strip on the left
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "rgb24"
        stream.options = {"qp": "0"}
        stream.set_display_rotation(90)  # show rotated 90 degrees counterclockwise
        for i in range(2):
            out = av.VideoFrame.from_ndarray(frame, format="rgb24")
            out.pts = i
            container.mux(stream.encode(out))
        container.mux(stream.encode(None))
    clip = video.read_video(path)
    assert clip.shape == (2, 64, 32, 3)
    assert clip[0, -8:].min() == 255 and clip[0, :-8].max() == 0  # the left strip is now the bottom
    info = video.probe(path)
    assert (info.height, info.width) == (64, 32)


# ---------------------------------------------------------------------------------------------
# writing


def test_lossless_mp4_round_trip_is_exact(tmp_path):
    clip = busy_clip()  # the SoraWorld clip shape: 16 frames of 128x128
    path = video.write_video(tmp_path / "clip.mp4", clip, 8, lossless=True)
    assert path == tmp_path / "clip.mp4"
    assert np.array_equal(video.read_video(path), clip)
    info = video.probe(path)
    assert (info.frames, info.fps, info.height, info.width, info.duration) == (16, 8.0, 128, 128, 2.0)
    # Odd sizes are fine in RGB.
    odd = busy_clip(t=3, h=31, w=47)
    assert np.array_equal(video.read_video(video.write_video(tmp_path / "odd.mp4", odd, 8, lossless=True)), odd)


def test_lossy_writes_are_close_and_tagged(tmp_path):
    import av

    clip = smooth_clip()
    for suffix in (".mp4", ".webm"):
        path = video.write_video(tmp_path / f"clip{suffix}", clip, 24)
        back = video.read_video(path)
        assert back.shape == clip.shape
        assert 35 < psnr(back, clip) < 99, suffix  # close, and not secretly lossless
        assert video.probe(path).frames == 16 and video.probe(path).fps == pytest.approx(24)
    with av.open(str(tmp_path / "clip.webm")) as container:
        assert container.streams.video[0].frames == 0  # WebM headers carry no count: probe counts packets
    with av.open(str(tmp_path / "clip.mp4")) as container:
        context = container.streams.video[0].codec_context
        assert (context.pix_fmt, context.colorspace) == ("yuv420p", 1)  # broadly playable, BT.709 tagged
    # Lower CRF, better picture.
    rough = video.read_video(video.write_video(tmp_path / "rough.mp4", clip, 24, quality=40))
    assert psnr(rough, clip) < psnr(video.read_video(tmp_path / "clip.mp4"), clip)
    # NTSC rates survive as exact fractions.
    ntsc = video.probe(video.write_video(tmp_path / "ntsc.mp4", clip[:4], 30000 / 1001))
    assert Fraction(ntsc.fps).limit_denominator(1001) == Fraction(30000, 1001)


def test_odd_size_h264_is_padded_to_even(tmp_path):
    clip = smooth_clip(t=2, h=63, w=95)
    with pytest.warns(UserWarning, match="odd"):
        path = video.write_video(tmp_path / "odd.mp4", clip, 8)
    back = video.read_video(path)
    assert back.shape == (2, 64, 96, 3) and psnr(back[:, :63, :95], clip) > 35


def test_lossless_webm_round_trip_is_exact(tmp_path):
    clip = busy_clip(t=4, h=48, w=64)
    assert np.array_equal(video.read_video(video.write_video(tmp_path / "c.webm", clip, 8, lossless=True)), clip)


def test_gif_palette_timing_and_loop(tmp_path):
    clip = np.zeros((6, 40, 50, 3), np.uint8)
    clip[:] = (40, 120, 60)
    for k in range(6):
        clip[k, 10:20, 5 * k:5 * k + 10] = (230, 20, 20)
    path = video.write_video(tmp_path / "c.gif", clip, 8)
    assert np.array_equal(video.read_video(path), clip)  # few colours: the palette holds them all
    with Image.open(path) as gif:
        assert gif.info["loop"] == 0  # loop forever
        delays = []
        for k in range(gif.n_frames):
            gif.seek(k)
            delays.append(gif.info["duration"])
    assert delays == [130, 120, 130, 120, 130, 120]  # 8 fps in 1/100 s steps, no drift
    info = video.probe(path)
    assert (info.frames, info.duration, info.fps) == (6, 0.75, 8.0)
    # Many colours: quantised, still recognisable.
    smooth = smooth_clip(t=4, h=64, w=64)
    assert psnr(video.read_video(video.write_video(tmp_path / "s.gif", smooth, 10)), smooth) > 25
    with pytest.raises(InputError, match="256 colours"):
        video.write_video(tmp_path / "l.gif", clip, 8, lossless=True)
    # A held frame is stored once with a longer delay; resampling at the written rate restores it.
    held = np.concatenate([clip[:2], clip[1:2], clip[1:2], clip[2:]])
    path = video.write_video(tmp_path / "held.gif", held, 8)
    assert video.probe(path).frames == 6 and video.probe(path).duration == 1.0
    assert np.array_equal(video.read_video(path, fps=8), held)


def test_animated_images_are_clips(tmp_path):
    frames = [np.full((20, 30, 3), 40 * k, np.uint8) for k in range(5)]
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "a.webp", save_all=True, append_images=images[1:], duration=100, lossless=True)
    assert np.array_equal(video.read_video(tmp_path / "a.webp"), np.stack(frames))
    info = video.probe(tmp_path / "a.webp")
    assert (info.frames, info.fps, info.duration) == (5, 10.0, 0.5)
    assert len(video.read_video(tmp_path / "a.webp", fps=20)) == 10


def test_png_one_frame_and_numbered_sequence(tmp_path):
    clip = busy_clip(t=3, h=16, w=24)
    one = video.write_video(tmp_path / "one.png", clip[:1], 8)
    assert one == tmp_path / "one.png" and np.array_equal(video.read_image(one), clip[0])
    first = video.write_video(tmp_path / "seq.png", clip, 8)
    assert first == tmp_path / "seq_0000.png"
    assert sorted(p.name for p in tmp_path.glob("seq*")) == ["seq_0000.png", "seq_0001.png", "seq_0002.png"]
    for k in range(3):
        assert np.array_equal(video.read_image(tmp_path / f"seq_{k:04d}.png"), clip[k])


def test_frames_may_be_an_iterable(tmp_path):
    clip = busy_clip(t=5, h=32, w=32)
    path = video.write_video(tmp_path / "gen.mp4", (frame for frame in clip), 8, lossless=True)
    assert np.array_equal(video.read_video(path), clip)


def test_tensor_helpers_round_trip():
    clip = busy_clip(t=2, h=8, w=8)
    x = video.to_tensor(clip)
    assert tuple(x.shape) == (3, 2, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(video.from_tensor(x[None]), clip)


# ---------------------------------------------------------------------------------------------
# bad input


def test_frames_are_validated_with_clear_errors(tmp_path):
    with pytest.raises(InputError, match=r"frames must be uint8 \(T, H, W, 3\), got float32 \(2, 8, 8, 3\)"):
        video.write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.float32), 8)
    with pytest.raises(InputError, match=r"got uint8 \(8, 8, 3\)"):
        video.write_video(tmp_path / "a.mp4", np.zeros((8, 8, 3), np.uint8), 8)
    with pytest.raises(InputError, match="no frames"):
        video.write_video(tmp_path / "a.mp4", [], 8)
    with pytest.raises(InputError, match="fps"):
        video.write_video(tmp_path / "a.mp4", busy_clip(t=1, h=8, w=8), 0)
    with pytest.raises(InputError, match=r"CRF\) for .mp4 must be in \[0, 51\]"):
        video.write_video(tmp_path / "a.mp4", busy_clip(t=1, h=8, w=8), 8, quality=60)
    with pytest.raises(InputError, match="preset must be one of"):
        video.write_video(tmp_path / "a.mp4", busy_clip(t=1, h=8, w=8), 8, preset="quick")
    with pytest.raises(InputError, match="unknown video format '.avi'"):
        video.write_video(tmp_path / "a.avi", busy_clip(t=1, h=8, w=8), 8)
    assert list(tmp_path.iterdir()) == []


def test_failed_or_unwritable_writes_leave_nothing(tmp_path):
    clip = busy_clip(t=4, h=16, w=16)
    with pytest.raises(InputError, match="does not exist"):
        video.write_video(tmp_path / "missing" / "a.mp4", clip, 8)
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(InputError, match="directory"):
        video.write_video(tmp_path / "folder.mp4", clip, 8)
    (tmp_path / "folder.mp4").rmdir()

    def frames_then_a_bad_one():
        yield from clip
        yield np.zeros((8, 8, 3), np.uint8)  # wrong size, after real work was done

    for suffix in (".mp4", ".webm", ".gif", ".png"):
        with pytest.raises(InputError, match="one size: frame 4"):
            video.write_video(tmp_path / f"a{suffix}", frames_then_a_bad_one(), 8)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary files, no half a PNG sequence


def test_truncated_real_clip_raises_naming_the_file(real_videos, tmp_path):
    data = (real_videos / "carphone_pristine.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])  # its index (moov) is at the end: gone
    for read in (video.probe, video.read_video, lambda p: list(video.iter_frames(p))):
        with pytest.raises(VideoError, match="cut.mp4"):
            read(cut)


def test_truncated_streaming_files_raise(tmp_path):
    """Files whose index comes first (our +faststart MP4s) or that have none (WebM) still decode
    up to the cut: the decoder error, or the stream ending before its declared duration, raises."""
    clip = smooth_clip(t=48, h=64, w=64)
    for suffix in (".mp4", ".webm"):
        whole = video.write_video(tmp_path / f"whole{suffix}", clip, 24)
        data = whole.read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: int(len(data) * 0.5)])
        with pytest.raises(VideoError, match=f"cut{suffix} is truncated or corrupt"):
            video.read_video(cut)
        with pytest.raises(VideoError, match=f"cut{suffix}"):
            video.probe(cut)
        # The limit counts too: the first frames are fine and max_frames stops before the damage.
        assert len(video.read_video(cut, max_frames=2)) == 2


def test_missing_empty_and_garbage_files(tmp_path):
    with pytest.raises(VideoError, match="nope.mp4: no such file"):
        video.read_video(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty.mp4 is empty"):
        video.probe(tmp_path / "empty.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "text.webm").write_text("not a video")
    for name in ("noise.mp4", "text.png", "text.webm"):
        for read in (video.probe, video.read_video, video.read_image):
            with pytest.raises(VideoError, match=name):
                read(tmp_path / name)
    with pytest.raises(VideoError, match="directory"):
        video.read_video(tmp_path)
    # A PNG cut in half.
    png = video.write_image(tmp_path / "half.png", busy_clip(t=1, h=64, w=64)[0])
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    with pytest.raises(VideoError, match="half.png"):
        video.read_image(png)


def test_copy_of_real_clip_reads_identically(real_videos, tmp_path):
    """The damage checks do not fire on a whole file: a byte-identical copy decodes in full."""
    copy = tmp_path / "copy.mp4"
    shutil.copy(real_videos / "carphone_pristine.mp4", copy)
    assert video.read_video(copy, fps=8).shape == (33, 144, 176, 3)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_audio_longer_than_video_is_not_truncation(tmp_path, suffix):
    """The container's duration covers the audio too; only the video's own duration is checked."""
    import av

    path = tmp_path / f"talk{suffix}"
    with av.open(str(path), "w") as container:
        picture = container.add_stream("libx264", rate=8)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        sound = container.add_stream("aac", rate=44100)
        for i in range(8):  # 1 s of video
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 30 * i, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(picture.encode(frame))
        container.mux(picture.encode(None))
        for k in range(3 * 44100 // 1024):  # 3 s of silence
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 44100, 1024 * k
            container.mux(sound.encode(samples))
        container.mux(sound.encode(None))
    assert video.read_video(path).shape == (8, 32, 32, 3)
    info = video.probe(path)
    assert (info.frames, info.fps, info.duration) == (8, 8.0, 1.0)
