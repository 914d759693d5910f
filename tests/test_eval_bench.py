"""The bench: suite, calibration (simulator >= 0.98, null below it), reports, and the CLI on a tiny random model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from soraflow.cli import main
from soraflow.eval import metrics as M
from soraflow.eval.bench import NullSource, SimulatorSource, VAESource, add_frechet, run_bench, score_video
from soraflow.eval.report import markdown
from soraflow.eval.suite import CATEGORIES, build_suite, conditioning, render_reference

ROOT = Path(__file__).resolve().parents[1]


def test_suite_covers_the_issue():
    assert sum(n for n, _ in CATEGORIES.values()) >= 200
    modes = {"t2v", "t2i", "i2v", "extend", "loop", "connect", "edit"}
    picked = build_suite(limit=len(CATEGORIES) * 2)  # two of each category, built lazily
    assert {e.category for e in picked} == set(CATEGORIES)
    assert {e.mode for e in picked} == modes
    assert {e.size for e in picked} == {(128, 128), (96, 160), (160, 96)}
    assert len({e.frames for e in picked}) >= 4
    # A subset is the same entries as the full suite would hold (each depends only on category and index).
    again = build_suite(categories=["gravity"], limit=2)
    assert [e.to_dict() for e in again] == [e.to_dict() for e in picked if e.category == "gravity"]
    for e in picked:
        if e.mode in ("extend", "connect"):
            inputs = conditioning(e)
            clips = inputs["video"] if e.mode == "extend" else inputs["video"][0]
            assert len(clips) == e.given


def test_simulator_is_the_upper_bound_and_null_the_floor():
    entries = build_suite(categories=["color", "gravity", "occlusion", "camera", "extend", "loop", "i2v", "hit"], limit=8)
    upper = run_bench(SimulatorSource(), entries, progress=False)
    lower = run_bench(NullSource(), entries, progress=False)
    add_frechet([upper, lower], upper)
    for name, value in upper.overall.items():
        if name in M.ACCURACY_METRICS:
            assert value >= 0.98, (name, value)
    assert upper.overall["first_frame"] == M.PSNR_CAP and upper.frechet == pytest.approx(0.0, abs=1e-6)
    assert lower.overall["color"] < 0.5 and lower.overall["score"] < upper.overall["score"] - 0.3
    assert lower.overall["first_frame"] < 20 and lower.frechet > 0
    text = markdown([upper, lower])
    assert "| color |" in text and "simulator" in text and "null" in text


class _Degraded:
    """The simulator's render blurred, noisy and colour-shifted, like a decoder's output."""

    name = "degraded"

    def __call__(self, entry, reference):
        from scipy import ndimage

        rng = np.random.default_rng(entry.seed)
        f = ndimage.gaussian_filter(reference.frames.astype(np.float32), (0, 0.8, 0.8, 0))
        f += rng.normal(0, 3, f.shape) + rng.uniform(-8, 8, 3)
        return f.round().clip(0, 255).astype(np.uint8)


def test_scores_survive_generation_like_degradation():
    entries = build_suite(categories=["shape", "occlusion", "multishot", "camera", "gravity"], limit=5)
    result = run_bench(_Degraded(), entries, progress=False)
    for name, value in result.overall.items():
        if name in M.ACCURACY_METRICS:
            assert value >= 0.95, (name, value)
    reference = render_reference(entries[0])
    assert 25 < M.psnr(reference.frames[0], _Degraded()(entries[0], reference)[0]) < 40  # visibly degraded


def test_a_reversed_video_fails_its_direction_and_gravity():
    entry = build_suite(categories=["gravity"], limit=1)[0]
    frames = render_reference(entry).frames
    good, _ = score_video(entry, frames)
    bad, _ = score_video(entry, frames[::-1].copy())
    assert good["gravity"] == 1.0 and bad["gravity"] == 0.0
    if entry.spec.objects[0].direction != "none":
        assert good["direction"] == 1.0 and bad["direction"] == 0.0


def test_an_empty_video_fails_permanence():
    # An occlusion prompt's render keeps its objects; the same clip with every frame set to its first
    # frame's background colour shows none of them, which must not pass as "nothing disappeared".
    entry = build_suite(categories=["occlusion"], limit=1)[0]
    assert "permanence" in entry.metrics
    frames = render_reference(entry).frames
    good, _ = score_video(entry, frames)
    empty = np.broadcast_to(frames[:1, :1, :1], frames.shape).copy()
    bad, _ = score_video(entry, empty)
    assert good["permanence"] == 1.0 and bad["permanence"] == 0.0


def _load_script():
    spec = importlib.util.spec_from_file_location("make_random_model", ROOT / "scripts" / "make_random_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("model") / "random"
    _load_script().make_random_pipeline(height=32, width=48, steps=1, window=5, overlap=2).save_pretrained(folder)
    return folder


def test_cli_bench_on_a_tiny_random_model(random_model, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["eval", "bench", "--model", str(random_model), "--limit", "3", "--category", "t2i", "color",
                 "--steps", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    results = {r["name"]: r for r in data["results"]}
    assert set(results) == {"random", "simulator", "vae", "null", "null-vae"}
    assert [e["id"] for e in results["random"]["entries"]] == ["t2i-000", "t2i-001", "color-000"]
    assert results["simulator"]["overall"]["color"] == 1.0
    assert 0.0 <= results["random"]["overall"]["score"] <= 1.0
    assert results["random"]["frechet"] > results["simulator"]["frechet"]
    # An untrained VAE smears the renders: its ceiling sits below the simulator's.
    assert results["vae"]["overall"]["color"] < results["simulator"]["overall"]["color"]
    assert data["command"] == (f"soraflow eval bench --model {random_model} --limit 3 --out {out} --steps 1 "
                               "--category t2i color")
    md = (out / "bench.md").read_text()
    assert "| color |" in md and "random" in md
    from PIL import Image

    for name in ("categories.png", "metrics.png", "trajectories.png", "contact_sheet.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 100 and im.size[1] > 50
    assert "score" in capsys.readouterr().out


def test_cli_bench_scores_a_vae_alone(random_model, tmp_path):
    # --vae: the simulator's renders through that VAE, with no model; the model's own VAE gives the same
    # ceiling as that VAE given by itself.
    out = tmp_path / "bench"
    assert main(["eval", "bench", "--vae", str(random_model / "vae"), "--reference", "simulator", "--limit", "2",
                 "--category", "color", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "bench.json").read_text())
    results = {r["name"]: r for r in data["results"]}
    assert set(results) == {"simulator", "vae"}
    assert results["vae"]["overall"]["color"] < results["simulator"]["overall"]["color"] == 1.0
    assert data["command"].startswith(f"soraflow eval bench --vae {random_model / 'vae'} --limit 2")
    both = tmp_path / "both"
    assert main(["eval", "bench", "--model", str(random_model), "--reference", "simulator", "--limit", "2",
                 "--category", "color", "--steps", "1", "--dtype", "float32", "--out", str(both), "--no-progress"]) == 0
    again = {r["name"]: r for r in json.loads((both / "bench.json").read_text())["results"]}
    assert again["vae"]["overall"] == results["vae"]["overall"]


def test_cli_bench_vae_errors_are_one_line(random_model, tmp_path, capsys):
    assert main(["eval", "bench", "--vae", str(random_model / "vae"), "--reference", "null", "--out", str(tmp_path / "a")]) == 2
    assert main(["eval", "bench", "--vae", str(tmp_path), "--reference", "simulator", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--reference both or simulator" in err[0] and "not a VAE folder" in err[1]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_bench_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "bench", "--reference", "none", "--out", str(tmp_path)]) == 2
    assert main(["eval", "bench", "--category", "juggling", "--reference", "simulator", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "nothing to score" in err[0] and "juggling" in err[1]
    assert not np.any([p.suffix == ".json" for p in tmp_path.iterdir()])


def test_a_request_the_model_refuses_scores_zero_and_the_bench_goes_on():
    from soraflow.errors import InputError

    class NoImages:
        name = "no-images"

        def __call__(self, entry, reference):
            if entry.mode == "t2i":
                raise InputError("this model makes no images")
            return reference.frames

    result = run_bench(NoImages(), build_suite(categories=["t2i", "color"], limit=3), progress=False)
    assert [e.error for e in result.entries] == ["this model makes no images"] * 2 + [None]
    assert result.per_category["t2i"]["score"] == 0.0 and result.per_category["color"]["score"] == 1.0
    assert json.loads(json.dumps(result.to_dict()))["entries"][0]["error"] == "this model makes no images"


def test_the_vae_bound_is_the_render_through_encode_and_decode_at_the_renders_length():
    """VAESource pads a clip to the VAE's 1 + 4k frames, round-trips it and trims back: with a lossless
    "VAE" it is the simulator; with one that loses colour it scores what that VAE allows."""
    seen = []

    class RoundTrip:  # stands in for a pipeline: encode_frames / decode_latents
        def __init__(self, lossy):
            self.lossy = lossy

        def encode_frames(self, frames):
            seen.append(len(frames))
            return torch.from_numpy(frames.copy())

        def decode_latents(self, z):
            frames = z.numpy()
            return frames.mean(-1, keepdims=True).repeat(3, -1).astype(np.uint8) if self.lossy else frames

    entries = build_suite(categories=["color"], limit=2)
    exact = run_bench(VAESource(RoundTrip(False)), entries, progress=False)
    assert exact.name == "vae" and exact.overall["color"] == 1.0
    lengths = [len(render_reference(e).frames) for e in entries]
    assert seen == [n + (-(n - 1)) % 4 for n in lengths] and all((n - 1) % 4 == 0 for n in seen)
    grey = run_bench(VAESource(RoundTrip(True)), entries, progress=False)
    assert grey.overall["color"] == 0.0  # grey frames: no colour survives, so none is found


def test_category_plots_mark_the_vae_ceiling_beside_the_simulator_and_the_floor():
    from soraflow.eval.bench import BenchResult
    from soraflow.eval.report import bound_markers

    def result(name):
        return BenchResult(name=name, entries=[], overall={}, per_category={})

    marks = bound_markers([result("model"), result("null"), result("vae"), result("simulator")])
    assert [(r.name, color) for r, _, color in marks] == [("simulator", "green"), ("vae", "orange"), ("null", "red")]
    assert "VAE" in marks[1][1]
    # A bench run without the VAE reference (or with only the null through the VAE) marks what it has.
    marks = bound_markers([result("model"), result("null-vae")])
    assert [(r.name, label) for r, label, _ in marks] == [("null-vae", "null (floor)")]


def test_concept_suite_scores_the_backdrop():
    from soraflow.eval.suite import CONCEPT_CATEGORIES, background_signatures

    entries = build_suite("concept")
    assert len(entries) == sum(n for n, _ in CONCEPT_CATEGORIES.values())
    assert {e.spec.background.name for e in entries if e.category == "concept"} == {"lava"}
    assert {e.spec.background.name for e in entries if e.category == "known"} == {"grass", "sand", "snow", "tiles"}
    assert all("lava" in e.prompt for e in entries if e.category == "concept")
    sim = run_bench(SimulatorSource(), entries, progress=False)
    null = run_bench(NullSource(), entries, progress=False)
    assert sim.per_category["concept"]["background"] == 1.0 and sim.per_category["known"]["background"] == 1.0
    assert null.overall["background"] < 0.2
    # The metric tells the backdrops apart: a lava clip is not "grass", a grass clip not "lava".
    lava = render_reference(entries[0])
    grass = render_reference(next(e for e in entries if e.spec.background.name == "grass" and e.size == entries[0].size))
    refs = background_signatures(*entries[0].size)
    assert M.background_match(lava.frames, "lava", refs) == 1.0 and M.background_match(lava.frames, "grass", refs) == 0.0
    assert M.background_match(grass.frames, "grass", refs) == 1.0 and M.background_match(grass.frames, "lava", refs) == 0.0
    with pytest.raises(Exception, match="unknown concept bench categories: color"):
        build_suite("concept", categories=["color"])
