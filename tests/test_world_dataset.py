"""SoraWorld dataset writer and `soraflow world` commands: manifest, resumability, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from soraflow.cli import main
from soraflow.errors import InputError
from soraflow.world.dataset import DatasetConfig, make_clip, read_manifest, read_truth, write_dataset

KEYS = {"id", "path", "short", "long", "height", "width", "fps", "frames", "seed", "spec", "truth"}


def tiny(n=6, **kw):
    return DatasetConfig(n=n, sizes=[(64, 64), (64, 96)], seconds=(0.5, 1.0), fps=8, seed=0,
                         image_fraction=kw.pop("image_fraction", 0.3), **kw)


def check_dataset(out: Path, n: int):
    lines = (out / "manifest.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # strictly valid JSONL: every line parses
    assert [e["id"] for e in entries] == [f"{i:06d}" for i in range(n)]
    from soraflow.video import read_image, read_video

    for e in entries:
        assert KEYS <= set(e)
        path = out / e["path"]
        frames = read_image(path)[None] if path.suffix == ".png" else read_video(path)
        assert frames.shape == (e["frames"], e["height"], e["width"], 3)
        truth = json.loads((out / e["truth"]).read_text())
        assert truth["entry"] == e and truth["truth"]["frames"] == e["frames"]
        assert e["short"] and e["long"]
    return entries


def test_dataset_writes_valid_manifest_and_lossless_clips(tmp_path):
    config = tiny(n=8)
    summary = write_dataset(tmp_path, config, workers=1, progress=False)
    assert (summary.total, summary.written, summary.skipped) == (8, 8, 0)
    entries = check_dataset(tmp_path, 8)
    assert any(e["frames"] == 1 and e["path"].endswith(".png") for e in entries)  # images are in the mix
    assert {(e["height"], e["width"]) for e in entries} == {(64, 64), (64, 96)}
    # A stored clip is exactly what the simulator renders for that id (lossless, and reproducible).
    from soraflow.video import read_video

    e = next(e for e in entries if e["frames"] > 1)
    clip, entry = make_clip(config, int(e["id"]))
    assert entry["long"] == e["long"] and entry["spec"] == e["spec"]
    assert np.array_equal(read_video(tmp_path / e["path"]), clip.frames)
    truth = read_truth(tmp_path, e)
    assert len(truth.frames) == e["frames"]
    assert truth.frames[-1].objects[0].pixel == pytest.approx(clip.truth.frames[-1].objects[0].pixel, abs=1e-3)
    # A rerun finds everything finished and renders nothing.
    again = write_dataset(tmp_path, config, workers=1, progress=False)
    assert (again.written, again.skipped) == (0, 8)


def _finished_clips(out):
    """The clips' sidecars, without the hidden temporaries a kill can leave beside them."""
    return [p for p in (out / "clips").glob("*.json") if not p.name.startswith(".")]


def test_dataset_resumes_after_kill_9(tmp_path):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "soraflow.cli", "world", "dataset", "--n", "40", "--out", str(out),
           "--sizes", "64x64,96x64", "--seconds", "0.5-1", "--workers", "2", "--image-fraction", "0.2", "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(_finished_clips(out)) < 6:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group we started: writer and its workers
        proc.wait()
    finished = len(_finished_clips(out))
    assert 6 <= finished < 40, "the kill must land mid-run"
    # A clip written by another process is byte-identical to one rendered here (no hidden global state).
    from soraflow.video import read_image, read_video

    e = json.loads(_finished_clips(out)[0].read_text())["entry"]
    clip, entry = make_clip(tiny(n=40, image_fraction=0.2), int(e["id"]))
    stored = read_image(out / e["path"])[None] if e["frames"] == 1 else read_video(out / e["path"])
    assert entry["long"] == e["long"] and np.array_equal(stored, clip.frames)
    # Right after the kill the manifest is valid JSONL that lists only finished clips.
    for e in read_manifest(out):
        assert (out / e["truth"]).is_file() and (out / e["path"]).is_file()
    summary = write_dataset(out, tiny(n=40, image_fraction=0.2), workers=1, progress=False)  # the same settings
    assert summary.total == 40 and summary.skipped >= 6
    check_dataset(out, 40)
    assert not list((out / "clips").glob(".*"))  # no temporary files left


def test_torn_manifest_line_and_missing_lines_are_repaired(tmp_path):
    config = tiny(n=5)
    write_dataset(tmp_path, config, workers=1, progress=False)
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines(keepends=True)
    # Simulate a crash: the last clip's line missing and a torn half line at the end.
    (tmp_path / "manifest.jsonl").write_text("".join(lines[:3]) + lines[4][: len(lines[4]) // 2])
    assert len(read_manifest(tmp_path)) == 3  # readers skip the torn line
    summary = write_dataset(tmp_path, config, workers=1, progress=False)
    assert summary.written == 0
    check_dataset(tmp_path, 5)


def test_a_resume_removes_what_a_kill_left_between_temporary_and_rename(tmp_path):
    # A kill can land while a clip is half written (".name.tmp...") or while the writability probe
    # exists (check_writable makes and removes it at once): the next run removes both.
    from soraflow.atomic import PROBE_PREFIX

    write_dataset(tmp_path, tiny(n=2), workers=1, progress=False)
    left = [tmp_path / "clips" / f"{PROBE_PREFIX}abc123", tmp_path / "clips" / ".clip_00002.mkv.123.x.tmp.mkv"]
    for f in left:
        f.write_bytes(b"")
    assert write_dataset(tmp_path, tiny(n=3), workers=1, progress=False).written == 1
    assert not any(f.exists() for f in left) and not list((tmp_path / "clips").glob(".*"))


def test_rerun_with_different_settings_is_refused(tmp_path):
    write_dataset(tmp_path, tiny(n=2), workers=1, progress=False)
    with pytest.raises(InputError, match="different settings"):
        write_dataset(tmp_path, DatasetConfig(n=2, sizes=[(64, 64)], seconds=(0.5, 1.0)), workers=1, progress=False)
    # Growing the dataset with the same settings is fine.
    assert write_dataset(tmp_path, tiny(n=3), workers=1, progress=False).written == 1


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("soraflow: error:"), err
    return err[0]


@pytest.mark.parametrize("extra, word", [
    (["--size", "100x128"], "multiple of 16"), (["--size", "48x64"], "between 64 and 512"),
    (["--size", "1024x512"], "between 64 and 512"), (["--fps", "3"], "fps"), (["--fps", "31"], "fps"),
    (["--seconds", "61"], "60"), (["--seconds", "0"], "in (0, 60]"), (["--seconds", "-2"], "in (0, 60]"),
])
def test_sample_bad_input_exits_2_with_one_line_and_no_file(tmp_path, capsys, extra, word):
    out = tmp_path / "clip.mp4"
    line = _one_line_error(capsys, ["world", "sample", "a red ball bouncing on grass", "-o", str(out), *extra])
    assert word in line
    assert list(tmp_path.iterdir()) == []


def test_sample_empty_prompt_and_unwritable_output(tmp_path, capsys):
    assert "empty" in _one_line_error(capsys, ["world", "sample", "  ", "-o", str(tmp_path / "a.mp4")])
    assert "does not exist" in _one_line_error(capsys, ["world", "sample", "a red ball", "-o",
                                                        str(tmp_path / "missing" / "a.mp4")])
    assert "does not exist" in _one_line_error(capsys, ["world", "sample", "a red ball", "-o", str(tmp_path / "a.mp4"),
                                                        "--truth", str(tmp_path / "missing" / "t.json")])
    assert "PNG" in _one_line_error(capsys, ["world", "sample", "a red ball", "-o", str(tmp_path / "a.png")])
    assert list(tmp_path.iterdir()) == []


def test_dataset_bad_input_exits_2(tmp_path, capsys):
    base = ["world", "dataset", "--n", "2", "--out", str(tmp_path / "d")]
    assert "multiple of 16" in _one_line_error(capsys, base + ["--sizes", "128x100"])
    assert "60" in _one_line_error(capsys, base + ["--seconds", "1-70"])
    assert "range" in _one_line_error(capsys, base + ["--seconds", "abc"])
    assert "fps" in _one_line_error(capsys, base + ["--fps", "50"])
    assert not (tmp_path / "d").exists()


def test_sample_writes_clip_truth_and_prints_caption(tmp_path, capsys):
    spec = {"objects": [{"shape": "box", "color": "green", "size": "large", "motion": "move", "direction": "left",
                         "speed": "fast", "spin": "none", "growth": "none", "trail": False, "hit_color": "none"}],
            "background": {"kind": "sky", "name": "day"}, "camera": "static", "occluder": None,
            "shots": [{"kind": "wide", "target": None}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out, truth = tmp_path / "c.mp4", tmp_path / "t.json"
    assert main(["world", "sample", "--spec", str(tmp_path / "spec.json"), "-o", str(out), "--size", "96x64",
                 "--seconds", "1", "--fps", "8", "--truth", str(truth), "--lossless"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == str(out)
    assert "green" in printed[1].lower() or "emerald" in printed[1].lower()  # the long caption
    from soraflow.video import read_video

    frames = read_video(out)
    data = json.loads(truth.read_text())
    assert frames.shape == (8, 64, 96, 3) and data["spec"] == spec and data["truth"]["frames"] == 8
    xs = [p[0] for p in data["truth"]["objects"][0]["pixel"]]
    assert xs[-1] < xs[0] - 20  # moving left, as the spec says


def test_second_writer_on_the_same_folder_is_refused(tmp_path, monkeypatch):
    import fcntl

    import soraflow.world.dataset as dataset

    monkeypatch.setattr(dataset, "LOCK_GRACE_S", 0.3)  # it waits this long for a just-killed writer's lock

    write_dataset(tmp_path, tiny(n=1), workers=1, progress=False)
    with open(tmp_path / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running writer would
        with pytest.raises(InputError, match="another process"):
            write_dataset(tmp_path, tiny(n=2), workers=1, progress=False)
    assert write_dataset(tmp_path, tiny(n=2), workers=1, progress=False).written == 1


def test_concept_background_only_when_asked(tmp_path):
    # Random scenes never draw the concept backdrop, so a default dataset keeps its settings and clips...
    from soraflow.world.spec import CONCEPT_BACKGROUNDS, random_spec

    assert "background" not in tiny().settings()
    assert all(random_spec(seed).background.name not in CONCEPT_BACKGROUNDS["ground"] for seed in range(300))
    # ...and --background puts every clip on it, with captions and a truth file that say so.
    assert main(["world", "dataset", "--n", "4", "--out", str(tmp_path / "lava"), "--sizes", "64x64",
                 "--seconds", "1", "--background", "lava", "--no-progress"]) == 0
    entries = check_dataset(tmp_path / "lava", 4)
    assert {e["spec"]["background"]["name"] for e in entries} == {"lava"}
    assert all("lava" in e["long"] for e in entries)
    from soraflow.world.parser import parse

    assert parse("a red ball bouncing on lava").background.name == "lava"
    with pytest.raises(InputError, match="unknown background 'lavaa'"):
        tiny(background="lavaa").check()
