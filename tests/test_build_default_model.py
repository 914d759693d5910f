"""scripts/build_default_model.py: the recipe's commands are real ones, and the runner skips, reruns,
chunks, stops at a deadline and names a failing stage."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_default_model.py"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("build_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_default_model"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("recipe", [["--recipe", "v2", "--set", "vae.use=null"], ["--recipe", "smoke"]])
def test_every_stage_command_is_one_the_cli_takes(build, tmp_path, recipe):
    from soraflow.cli import build_parser

    b = build.resolve(build.parse_args([*recipe, "--work", str(tmp_path)]))
    parser = build_parser()
    seen = set()
    for stage in b.stages:
        for chunk in stage.get("chunks") or [None]:
            argv = b.argv(stage, chunk)
            if argv is None or stage.get("python"):
                continue
            args = parser.parse_args(argv[3:])  # an unknown option or a bad value exits here
            seen.add(stage["name"])
            assert callable(args.func)
    assert seen == {"data", "vae", "cache", "dit", "bench"}
    dit = next(s for s in b.stages if s["name"] == "dit")
    assert dit["chunks"][-1] == b.recipe["dit"]["steps"] and dit["chunks"] == sorted(dit["chunks"])


def test_vae_use_takes_a_finished_vae_and_later_settings_do_not_redo_it(build, tmp_path):
    from soraflow.models.vae import VideoVAE, vae_config

    assert (SCRIPT.parents[1] / build.RECIPES["v2"]["vae"]["use"] / "config.json").is_file()  # the v2 recipe's VAE is in the repo
    src = tmp_path / "vae-src"
    VideoVAE(vae_config("tiny", z_dim=4)).save_pretrained(src)
    args = ["--work", str(tmp_path / "w"), "--set", f"vae.use={json.dumps(str(src))}"]
    b = build.resolve(build.parse_args(args))
    vae = next(s for s in b.stages if s["name"] == "vae")
    assert b.argv(vae) is None  # no training command
    vae["cmd"](b)
    assert (tmp_path / "w" / "vae" / "model" / "config.json").read_bytes() == (src / "config.json").read_bytes()
    later = build.resolve(build.parse_args([*args, "--set", "dit.steps=100"]))
    assert later.key(next(s for s in later.stages if s["name"] == "vae")) == b.key(vae)  # the cache is not rebuilt
    (src / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception):  # a folder that does not load stops the stage before anything is copied over
        vae["cmd"](b)
    assert VideoVAE.from_pretrained(tmp_path / "w" / "vae" / "model") is not None


def test_set_changes_one_setting_and_refuses_unknown_ones(build, tmp_path):
    b = build.resolve(build.parse_args(["--work", str(tmp_path), "--set", "dit.steps=100", "--set", "data.sizes=96x96"]))
    assert b.recipe["dit"]["steps"] == 100 and b.recipe["data"]["sizes"] == "96x96"
    assert build.RECIPES["v2"]["dit"]["steps"] != 100  # the recipe itself is untouched
    with pytest.raises(SystemExit, match="no setting 'dit.stepz'"):
        build.resolve(build.parse_args(["--work", str(tmp_path), "--set", "dit.stepz=1"]))


def _fake_stages(tmp_path):
    """Stages that append their name to a file (python commands, as the speed stage is)."""
    log = tmp_path / "ran.txt"

    def cmd(name, extra=""):
        code = f"open({str(log)!r}, 'a').write({name!r} + chr(10)); {extra}"
        return [sys.executable, "-c", code]

    def stages(r, work, device, threads):
        return [{"name": "a", "cmd": cmd("a"), "python": True},
                {"name": "b", "cmd": cmd("b" + str(r["dit"]["steps"])), "python": True},
                {"name": "c", "cmd": cmd("c"), "python": True}]
    return stages, log


def test_done_stages_are_skipped_and_a_changed_one_reruns_with_all_after_it(build, tmp_path, monkeypatch):
    stages, log = _fake_stages(tmp_path)
    monkeypatch.setattr(build, "stages", stages)
    work = ["--work", str(tmp_path / "w")]
    assert build.main(work) == 0
    assert build.main(work) == 0  # nothing to do
    steps = build.RECIPES["v2"]["dit"]["steps"]
    assert log.read_text().split() == ["a", f"b{steps}", "c"]
    assert build.main([*work, "--set", "dit.steps=7"]) == 0  # b's command changed: b and c again, not a
    assert log.read_text().split() == ["a", f"b{steps}", "c", "b7", "c"]
    seconds = json.loads((tmp_path / "w" / "build.json").read_text())["seconds"]
    assert set(seconds) == {"a", "b", "c"}


def test_a_done_stage_whose_output_is_gone_runs_again_with_all_after_it(build, tmp_path, monkeypatch):
    stages, log = _fake_stages(tmp_path)
    marker = tmp_path / "a-output"

    def with_output(r, work, device, threads):
        out = stages(r, work, device, threads)
        out[0]["cmd"][-1] = out[0]["cmd"][-1].rstrip("; ") + f"; open({str(marker)!r}, 'w')"
        out[0]["made"] = lambda chunk: marker.is_file()
        return out
    monkeypatch.setattr(build, "stages", with_output)
    work = ["--work", str(tmp_path / "w")]
    assert build.main(work) == 0 and build.main(work) == 0
    assert log.read_text().split() == ["a", f"b{build.RECIPES['v2']['dit']['steps']}", "c"]
    marker.unlink()  # e.g. build.json restored on a machine without the work folder's data
    assert build.main(work) == 0
    assert log.read_text().split()[3:] == ["a", f"b{build.RECIPES['v2']['dit']['steps']}", "c"]


def _slow_second_stage(build, tmp_path, monkeypatch):
    """The fake stages with a second one that sleeps a minute; returns the log of the stages that ran."""
    stages, log = _fake_stages(tmp_path)

    def slow(r, work, device, threads):
        out = stages(r, work, device, threads)
        out[1]["cmd"] = [sys.executable, "-c", "import time; time.sleep(60)"]
        return out
    monkeypatch.setattr(build, "stages", slow)
    return log


def test_a_stage_past_the_deadline_is_stopped_and_a_failing_one_names_itself(build, tmp_path, monkeypatch):
    b = build.resolve(build.parse_args(["--work", str(tmp_path / "w")]))
    b.deadline = time.monotonic() + 0.5
    start = time.monotonic()
    with pytest.raises(build.Deadline):
        b._subprocess("dit", [sys.executable, "-c", "import time; time.sleep(60)"])
    assert time.monotonic() - start < 30  # killed, not waited for
    b.deadline = None
    with pytest.raises(SystemExit, match="stage cache failed \\(exit 4\\)"):
        b._subprocess("cache", [sys.executable, "-c", "raise SystemExit(4)"])
    log = _slow_second_stage(build, tmp_path, monkeypatch)
    assert build.main(["--work", str(tmp_path / "w2"), "--deadline", "0.02"]) == build.EXIT_DEADLINE
    assert log.read_text().split() == ["a"]  # b stopped, c never started


def test_sigterm_stops_the_running_stage_and_keeps_its_time(build, tmp_path, monkeypatch):
    import os
    import signal
    import threading

    log = _slow_second_stage(build, tmp_path, monkeypatch)
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    start = time.monotonic()
    try:
        assert build.main(["--work", str(tmp_path / "w")]) == build.EXIT_DEADLINE
    finally:
        timer.cancel()
    assert time.monotonic() - start < 30  # the stage was stopped, not waited for
    assert log.read_text().split() == ["a"]
    record = json.loads((tmp_path / "w" / "build.json").read_text())
    assert record["seconds"]["b"] >= 1.0 and not any(k.startswith("b") for k in record["done"])  # its time counted, not done
    assert signal.getsignal(signal.SIGTERM) == before


def test_export_writes_the_recipes_sampling_defaults_and_checks_the_size(build, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_dit import make_cache, tiny_config

    from soraflow.model_folder import read_config
    from soraflow.models.vae import VideoVAE, vae_config
    from soraflow.train.launch import train_dit

    work = tmp_path / "w"
    VideoVAE(vae_config("tiny", z_dim=4)).save_pretrained(work / "vae" / "model")
    cache = make_cache(tmp_path / "cache", text_dim=384)
    index = json.loads((cache / "index.json").read_text())
    index["text"]["reference"] = "minilm"  # MiniLM's width, so the exported folder loads with it
    (cache / "index.json").write_text(json.dumps(index))
    train_dit(tiny_config(cache, work / "dit", steps=2), progress=False)
    b = build.resolve(build.parse_args(["--work", str(work), "--set", "export.guidance_min_t=0.5"]))
    build.export_package(b)
    cfg = read_config(work / "model")
    assert (cfg.steps, cfg.guidance_scale, cfg.guidance_min_t, cfg.shift) == (8, 4.0, 0.5, b.recipe["dit"]["timestep_shift"])
    info = json.loads((work / "model" / "build.json").read_text())
    assert info["recipe"]["export"]["guidance_min_t"] == 0.5 and info["dit_step"] == 2
    b.recipe["export"]["max_mb"] = 0.001
    with pytest.raises(SystemExit, match="over export.max_mb"):
        build.export_package(b, tmp_path / "too-big")
    assert not (tmp_path / "too-big").exists()


def test_the_v2_model_fits_the_size_budget(build):
    import torch

    from soraflow.models.dit import DiT, dit_config
    from soraflow.models.vae import VideoVAE
    from soraflow.train.vae import TrainVAEConfig, model_config

    r = build.RECIPES["v2"]
    d, v = r["dit"], r["vae"]
    with torch.device("meta"):
        dit = DiT(dit_config(d["preset"], **{k: d[k] for k in ("num_layers", "num_attention_heads", "ffn_dim") if k in d}))
        vae = VideoVAE(model_config(TrainVAEConfig(preset=v["preset"], spatial_factor=v.get("spatial_factor", 0),
                                                   residual=v.get("residual", False))))
    params = sum(p.numel() for p in dit.parameters()) + sum(p.numel() for p in vae.parameters())
    assert 2 * params / 2**20 <= r["export"]["max_mb"]  # bf16


def test_loss_curves_are_read_from_tensorboard_logs_and_plotted(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from soraflow.train.curves import plot_curve, read_scalars

    logdir = tmp_path / "tb"
    for start in (0, 20):  # two event files, as after a resume
        writer = SummaryWriter(log_dir=str(logdir))
        for step in range(start + 1, start + 21):
            writer.add_scalar("train/loss", 1.0 / step, step)
        writer.close()
    points = read_scalars(logdir, "train/loss")
    assert [s for s, _ in points] == list(range(1, 41))
    assert points[-1][1] == pytest.approx(1 / 40)
    png = plot_curve(points, tmp_path / "curves" / "dit_loss.png", title="DiT")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_scalars(tmp_path / "missing", "train/loss") == []


def test_snapshot_benches_are_read_by_step_and_plotted(tmp_path):
    from soraflow.train.curves import plot_benches, read_snapshot_benches

    for step, color in ((50000, 0.1), (25000, 0.05)):
        bench = tmp_path / "snapshots" / f"{step:08d}" / "bench"
        bench.mkdir(parents=True)
        rows = [{"name": "model", "overall": {"score": 2 * color, "color": color, "n": 30}},
                {"name": "simulator", "overall": {"score": 1.0, "color": 1.0}}]
        (bench / "bench.json").write_text(json.dumps({"command": "", "results": rows}))
    (tmp_path / "snapshots" / "00075000").mkdir()  # a snapshot still being taken: no bench yet
    (tmp_path / "snapshots" / "notes").mkdir()
    points = read_snapshot_benches(tmp_path / "snapshots")
    assert [(s, m["color"]) for s, m in points] == [(25000, 0.05), (50000, 0.1)]
    assert read_snapshot_benches(tmp_path / "snapshots", source="simulator")[0][1]["score"] == 1.0
    png = plot_benches(points, tmp_path / "curves" / "bench.png", title="bench")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_snapshot_benches(tmp_path / "missing") == []


def test_from_pretrained_auto_runs_each_model_in_the_precision_the_cpu_measured_fastest(monkeypatch, tmp_path):
    import torch

    sys.path.insert(0, str(SCRIPT.parent))
    from make_random_model import make_random_pipeline

    from soraflow import hardware
    from soraflow.errors import InputError
    from soraflow.pipeline import SoraPipeline, auto_int8

    make_random_pipeline().save_pretrained(tmp_path / "m")

    def measured(dit, vae):
        choice = hardware.CPUChoice(dit=dit, vae=vae, train_dit="float32", train_vae="float32")
        monkeypatch.setattr(hardware, "cpu_choice", lambda: choice)

    measured("int8", "bfloat16")
    assert auto_int8("cpu") and not auto_int8("cuda")
    pipe = SoraPipeline.from_pretrained(tmp_path / "m", dtype="auto")
    assert pipe.dit.proj_out.weight.dtype == torch.float32 and pipe.dit.is_quantized
    assert pipe.vae.quant_conv.weight.dtype == torch.bfloat16 and pipe.vae.channels_last
    frames = pipe("a red ball", num_frames=5, steps=1, seed=0, progress=False, expand=False).frames
    assert frames.shape == (5, 32, 48, 3) and frames.dtype.name == "uint8"
    # int8 asked for by name (same VAE choice); float32 keeps every model as it is.
    assert SoraPipeline.from_pretrained(tmp_path / "m", dtype="int8").dit.is_quantized
    assert not SoraPipeline.from_pretrained(tmp_path / "m", dtype=torch.float32).dit.is_quantized
    with pytest.raises(InputError, match="CPU only"):
        SoraPipeline.from_pretrained(tmp_path / "m", device="cuda", dtype="int8")
    with pytest.raises(InputError, match="int8 blocks"):  # quantized layers cannot be cast: said, not half-done
        pipe.to(dtype=torch.bfloat16)
    # Where bf16 GEMMs won (AMX, AVX-512 BF16), the DiT runs in bf16, not int8.
    measured("bfloat16", "bfloat16")
    assert not auto_int8("cpu")
    pipe = SoraPipeline.from_pretrained(tmp_path / "m", dtype="auto")
    assert pipe.dit.proj_out.weight.dtype == torch.bfloat16 and not pipe.dit.is_quantized
    # AVX2 only (bf16 emulated): everything in fp32.
    measured("float32", "float32")
    pipe = SoraPipeline.from_pretrained(tmp_path / "m", dtype="auto")
    assert pipe.dit.proj_out.weight.dtype == torch.float32 and not pipe.dit.is_quantized
    assert pipe.vae.quant_conv.weight.dtype == torch.float32




def test_snapshot_exports_and_benches_the_checkpoint_asked_for(build, tmp_path, monkeypatch):
    work = tmp_path / "w"
    for step in (52000, 54000):
        (work / "dit" / "checkpoints" / f"step_{step:08d}").mkdir(parents=True)
    exported, benched = [], []

    def fake_export(b, out=None, checkpoint=None):
        exported.append(checkpoint)
        (out / "config.json").parent.mkdir(parents=True)
        (out / "config.json").write_text("{}")

    def fake_bench(self, name, argv):
        benched.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "bench.md").write_text("# bench")

    monkeypatch.setattr(build, "export_package", fake_export)
    monkeypatch.setattr(build, "draw_curves", lambda b, out=None: None)
    monkeypatch.setattr(build.Build, "_subprocess", fake_bench)
    with pytest.raises(SystemExit, match="no DiT checkpoint at step 53000.*kept: 52000, 54000"):
        build.main(["--work", str(work), "--snapshot", "53000"])
    assert build.main(["--work", str(work), "--snapshot", "52000"]) == 0
    snap = work / "snapshots" / "00052000"
    assert exported == [work.resolve() / "dit" / "checkpoints" / "step_00052000"]
    assert benched[0][benched[0].index("--model") + 1] == str(snap.resolve() / "model")
    assert (snap / "bench" / "bench.md").is_file() and not (snap / "model").exists()  # the weights stay in the checkpoint
    assert build.main(["--work", str(work), "--snapshot", "52000"]) == 0 and len(exported) == 1  # taken once
