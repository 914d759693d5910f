"""scripts/build_default_model.py: stage planning (what is done, what runs), overrides, loss curves."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
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


def _resolve(build, tmp_path, *extra):
    return build.resolve(build.parse_args(["--scale", "smoke", "--work", str(tmp_path / "w"), *extra]))


def _todo(build, b, capsys, force=()):
    todo = build.plan(b, list(build.STAGES), set(force))
    return todo, capsys.readouterr().out


def test_fresh_work_dir_runs_every_stage_and_smoke_exports_inside_it(build, tmp_path, capsys):
    b = _resolve(build, tmp_path)
    todo, out = _todo(build, b, capsys)
    assert todo == list(build.STAGES)
    assert b.export == (tmp_path / "w" / "export").resolve()  # a smoke run never touches the package assets
    assert "0/12 clips" in out


def test_completed_stages_are_skipped_and_partial_ones_resume(build, tmp_path, capsys):
    b = _resolve(build, tmp_path)
    n = b.scale.clips
    b.data.mkdir(parents=True)
    (b.data / "manifest.jsonl").write_text("".join(json.dumps({"id": f"{i:06d}"}) + "\n" for i in range(n)))
    (b.vae_model).mkdir(parents=True)
    (b.vae_model / "config.json").write_text("{}")
    b.cache.mkdir(parents=True)
    (b.cache / "index.json").write_text(json.dumps({"entries": [{}] * (n - 1), "skipped": {"bad.mp4": "unreadable"}}))
    (b.dit_run / "checkpoints" / "step_00000002").mkdir(parents=True)  # 2 of 3 steps: must resume
    todo, out = _todo(build, b, capsys)
    assert todo == ["dit", "dit-pooled-text", "dit-high-shift", "vae-decoder", "vae-objects", "vae-whole", "cache-again", "dit-new-latents", "dit-objects", "export", "bench", "speed", "curves"]
    assert "step 2/3" in out

    (b.dit_run / "checkpoints" / "step_00000003").mkdir(parents=True)
    assert _todo(build, b, capsys)[0] == ["dit-pooled-text", "dit-high-shift", "vae-decoder", "vae-objects", "vae-whole", "cache-again", "dit-new-latents", "dit-objects", "export", "bench", "speed", "curves"]
    # The last DiT phase that is on is the DiT that ships, and its timestep shift is the sampling default.
    assert b.final_dit == b.dit_objects_runs[-1] == b.work / "dit-objects-2" and b.final_shift == b.scale.dit_reshift
    assert _resolve(build, tmp_path, "--set", "dit_objects_steps=0").final_dit == b.dit_long_run
    assert _resolve(build, tmp_path, "--set", "vae_long_steps=0", "dit_objects_steps=0").final_dit == b.dit_reshift_run
    (b.dit_tune_run / "checkpoints" / "step_00000002").mkdir(parents=True)
    assert _todo(build, b, capsys)[0] == ["dit-high-shift", "vae-decoder", "vae-objects", "vae-whole", "cache-again", "dit-new-latents", "dit-objects", "export", "bench", "speed", "curves"]
    (b.dit_reshift_run / "checkpoints" / "step_00000002").mkdir(parents=True)
    assert _todo(build, b, capsys)[0] == ["vae-decoder", "vae-objects", "vae-whole", "cache-again", "dit-new-latents", "dit-objects", "export", "bench", "speed", "curves"]
    off = _resolve(build, tmp_path, "--set", "dit_reshift_steps=0", "vae_long_steps=0", "dit_objects_steps=0")
    assert off.final_dit == off.dit_tune_run and off.final_shift is None  # smoke: no shift in phases 1-2
    assert "off (dit_reshift_steps=0)" in _todo(build, off, capsys)[1]
    off = _resolve(build, tmp_path, "--set", "dit_tune_steps=0", "dit_reshift_steps=0", "dit_shift=3", "vae_long_steps=0", "dit_objects_steps=0")
    assert off.final_dit == off.dit_run and off.final_shift == 3.0
    assert "off (dit_tune_steps=0)" in _todo(build, off, capsys)[1]
    # The second round's VAE ships; without the round the objects-tuned one does, without that the decoder-tuned
    # one; with decoder_steps=0 as well, the VAE as trained.
    # The objects stage's rounds (two in smoke) train on one from the other; the last one's VAE is the decoder
    # stages' result.
    assert b.final_vae == b.work / "vae-long" / "model" and b.decoder_vae == b.work / "vae-objects-2" / "model"
    assert b.decoder_only_vae == b.work / "vae-decoder" / "model"
    b.decoder_only_vae.mkdir(parents=True)
    (b.decoder_only_vae / "config.json").write_text("{}")
    assert _todo(build, b, capsys)[0] == ["vae-objects", "vae-whole", "cache-again", "dit-new-latents", "dit-objects", "export", "bench", "speed", "curves"]
    (b.objects_run / "model").mkdir(parents=True)
    (b.objects_run / "model" / "config.json").write_text("{}")
    todo, out = _todo(build, b, capsys)
    assert todo[0] == "vae-objects" and "1/2 rounds of 2 steps" in out  # round 1 of 2 done: the stage goes on
    b.decoder_vae.mkdir(parents=True)
    (b.decoder_vae / "config.json").write_text("{}")
    assert _todo(build, b, capsys)[0] == ["vae-whole", "cache-again", "dit-new-latents", "dit-objects", "export", "bench", "speed", "curves"]
    off = _resolve(build, tmp_path, "--set", "decoder_steps=0", "objects_steps=0", "vae_long_steps=0")
    assert off.final_vae == off.vae_model and "off (decoder_steps=0)" in _todo(build, off, capsys)[1]
    assert _resolve(build, tmp_path, "--set", "vae_long_steps=0").final_vae == b.decoder_vae
    off = _resolve(build, tmp_path, "--set", "objects_steps=0", "vae_long_steps=0")
    assert off.final_vae == b.decoder_only_vae and "off (objects_steps=0)" in _todo(build, off, capsys)[1]
    # The round: the VAE, then a second cache (one skipped clip counts), then the DiT phase, each resumable.
    b.final_vae.mkdir(parents=True)
    (b.final_vae / "config.json").write_text("{}")
    b.cache_long.mkdir(parents=True)
    (b.cache_long / "index.json").write_text(json.dumps({"entries": [{}] * (n - 2)}))
    todo, out = _todo(build, b, capsys)
    assert todo == ["cache-again", "dit-new-latents", "dit-objects", "export", "bench", "speed", "curves"] and f"{n - 2}/{n} clips encoded" in out
    (b.cache_long / "index.json").write_text(json.dumps({"entries": [{}] * (n - 1), "skipped": {"bad.mp4": "unreadable"}}))
    (b.dit_long_run / "checkpoints" / "step_00000002").mkdir(parents=True)
    assert _todo(build, b, capsys)[0] == ["dit-objects", "export", "bench", "speed", "curves"]
    (b.dit_objects_run / "checkpoints" / "step_00000002").mkdir(parents=True)
    todo, out = _todo(build, b, capsys)  # the smoke recipe's dit-objects has two rounds
    assert todo == ["dit-objects", "export", "bench", "speed", "curves"] and "round 2/2 at step 0/2" in out
    (b.final_dit / "checkpoints" / "step_00000002").mkdir(parents=True)
    assert _todo(build, b, capsys)[0] == ["export", "bench", "speed", "curves"]
    # An export from this work dir at the final step counts as done; one from another run does not.
    b.export.mkdir(parents=True)
    (b.export / "config.json").write_text("{}")
    exported = {"work": str(b.work.resolve()), "dit": str(b.final_dit.resolve()), "dit_step": 2, "vae": str(b.final_vae.resolve())}
    (b.export / "build.json").write_text(json.dumps(exported | {"vae": str(b.decoder_vae.resolve())}))
    assert _todo(build, b, capsys)[0][0] == "export"  # an earlier VAE's export
    (b.export / "build.json").write_text(json.dumps(exported | {"dit": str(b.dit_reshift_run.resolve())}))
    assert _todo(build, b, capsys)[0][0] == "export"  # an earlier DiT phase's at the same step number
    (b.export / "build.json").write_text(json.dumps(exported))
    assert _todo(build, b, capsys)[0] == ["bench", "speed", "curves"]
    # Bench and speed results count only when newer than the export they measured.
    b.bench.mkdir(parents=True)
    for result in (b.bench / "bench.json", b.speed):
        result.write_text("{}")
        os.utime(result, (1, 1))
    assert _todo(build, b, capsys)[0] == ["bench", "speed", "curves"]
    for result in (b.bench / "bench.json", b.speed):
        result.touch()
    assert _todo(build, b, capsys)[0] == ["curves"]
    # When the export itself is to run, its old measurements are redone after it, however recent.
    assert _todo(build, b, capsys, force=["export"])[0] == ["export", "bench", "speed", "curves"]
    (b.export / "build.json").write_text(json.dumps({"work": "/elsewhere", "dit_step": 2}))
    assert _todo(build, b, capsys)[0][0] == "export"
    # --force reruns a finished stage.
    assert _todo(build, b, capsys, force=["data"])[0][0] == "data"


def _commands(build, b, monkeypatch, *stages) -> dict[str, list[str]]:
    """The command line each stage would run (nothing runs; earlier phases' EMA exports are faked)."""
    import soraflow.train.dit

    seen = {}
    monkeypatch.setattr(b, "run", lambda stage, args: seen.setdefault(stage, [str(a) for a in args]), raising=False)
    monkeypatch.setattr(soraflow.train.dit, "export_dit", lambda run, out, ema: (Path(out).mkdir(parents=True),
                                                                                 (Path(out) / "config.json").write_text("{}")))
    for stage in stages:
        build.STAGES[stage](b)
    return seen


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_dit_phases_and_the_decoder_stage_train_with_the_recipes_settings(build, tmp_path, monkeypatch):
    # gpu: one DiT phase with the pooled prompt and the timestep shift from step 0.
    gpu = build.resolve(build.parse_args(["--work", str(tmp_path / "g")]))
    cmd = _commands(build, gpu, monkeypatch, "dit", "dit-pooled-text", "dit-high-shift")
    assert list(cmd) == ["dit"] and "--pooled-text" in cmd["dit"]
    assert (_flag(cmd["dit"], "--timestep-shift"), _flag(cmd["dit"], "--terminal-prob")) == ("4.0", "0.1")
    assert gpu.final_shift == 4.0
    # cpu: phases 1-2 at the size-based shift; the third starts from the second's EMA at shift dit_reshift.
    cpu = build.resolve(build.parse_args(["--scale", "cpu", "--work", str(tmp_path / "c")]))
    cmd = _commands(build, cpu, monkeypatch, "dit", "dit-pooled-text", "dit-high-shift", "vae-decoder")
    assert "--timestep-shift" not in cmd["dit"] + cmd["dit-pooled-text"] and "--terminal-prob" not in cmd["dit"] + cmd["dit-pooled-text"]
    assert _flag(cmd["dit-pooled-text"], "--init") == str(cpu.dit_tune_run / "init")
    shift = cmd["dit-high-shift"]
    assert _flag(shift, "--init") == str(cpu.dit_reshift_run / "init") and "--pooled-text" in shift
    assert (_flag(shift, "--timestep-shift"), _flag(shift, "--terminal-prob")) == ("4.0", "0.1")
    assert (_flag(shift, "--steps"), _flag(shift, "--seed")) == ("1200", "2")
    # The decoder trains on whole 33-frame clips (the DiT's window), from the VAE as trained, encoder frozen.
    dec = cmd["vae-decoder"]
    assert (_flag(dec, "--frames"), _flag(dec, "--batch-size"), _flag(dec, "--image-prob")) == ("33", "2", "0")
    assert _flag(dec, "--init") == str(cpu.vae_model) and "--freeze-encoder" in dec
    assert _flag(_commands(build, cpu, monkeypatch, "vae")["vae"], "--frames") == "9"  # the VAE itself: short crops
    # Then the decoder again, from the decoder stage's, with the object-weighted L1; that VAE ships with the DiT.
    obj = _commands(build, cpu, monkeypatch, "vae-objects")["vae-objects"]
    assert _flag(obj, "--init") == str(cpu.decoder_only_vae) and "--freeze-encoder" in obj
    assert (_flag(obj, "--object-weight"), _flag(obj, "--steps"), _flag(obj, "--frames")) == ("10.0", "800", "33")
    assert (_flag(obj, "--run-dir"), _flag(obj, "--seed")) == (str(cpu.objects_run), "0")
    # Its second round trains on from the first round's VAE, on other clips (the next seed), into its own
    # folder; a finished round is not run again. The last round's VAE ships.
    (cpu.objects_run / "model").mkdir(parents=True)
    (cpu.objects_run / "model" / "config.json").write_text("{}")
    obj = _commands(build, cpu, monkeypatch, "vae-objects")["vae-objects 2"]
    assert (_flag(obj, "--init"), _flag(obj, "--seed")) == (str(cpu.objects_run / "model"), "1")
    assert _flag(obj, "--run-dir") == str(cpu.work / "vae-objects-2") and "--object-weight" in obj and "--freeze-encoder" in obj
    (cpu.work / "vae-objects-2" / "model").mkdir(parents=True)
    (cpu.work / "vae-objects-2" / "model" / "config.json").write_text("{}")
    obj = _commands(build, cpu, monkeypatch, "vae-objects")["vae-objects 3"]  # the cpu recipe's third round
    assert (_flag(obj, "--init"), _flag(obj, "--seed")) == (str(cpu.work / "vae-objects-2" / "model"), "2")
    assert cpu.decoder_vae == cpu.work / "vae-objects-3" / "model"
    # The second round: the whole VAE (encoder too) on whole clips from the decoder stages' VAE, keeping the
    # objects' weighting, at half the objects' lr (lr 1e-4 lost more than it gained); its latents are cached
    # apart; the DiT phase trains on them from dit-shift's EMA at that phase's timestep settings. That VAE ships.
    cmd = _commands(build, cpu, monkeypatch, "vae-whole", "cache-again", "dit-new-latents")
    vae = cmd["vae-whole"]
    assert _flag(vae, "--init") == str(cpu.decoder_vae) and "--freeze-encoder" not in vae
    assert (_flag(vae, "--frames"), _flag(vae, "--steps"), _flag(vae, "--run-dir")) == ("33", "800", str(cpu.vae_long_run))
    assert (_flag(vae, "--object-weight"), _flag(vae, "--lr")) == ("10.0", "5e-05")
    assert cpu.final_vae == cpu.vae_long_run / "model" and cpu.final_dit == cpu.dit_objects_runs[-1]
    # Without the objects stage there is no weighting to keep.
    plain = build.resolve(build.parse_args(["--scale", "cpu", "--work", str(tmp_path / "p"), "--set", "objects_steps=0"]))
    assert "--object-weight" not in _commands(build, plain, monkeypatch, "vae-whole")["vae-whole"]
    cache = cmd["cache-again"]
    assert cache[3:5] == ["train", "cache-latents"] and (_flag(cache, "--device"), _flag(cache, "--limit")) == ("cpu", "1600")
    assert (_flag(cache, "--data"), _flag(cache, "--vae"), _flag(cache, "--out")) == (str(cpu.data), str(cpu.final_vae), str(cpu.cache_long))
    dit = cmd["dit-new-latents"]
    assert (_flag(dit, "--data"), _flag(dit, "--init")) == (str(cpu.cache_long), str(cpu.dit_long_run / "init"))
    assert (_flag(dit, "--timestep-shift"), _flag(dit, "--terminal-prob"), _flag(dit, "--seed")) == ("4.0", "0.1", "3")
    assert "--pooled-text" in dit
    # A round that changes the VAE without retraining the DiT on it would ship mismatched models.
    with pytest.raises(SystemExit, match="dit_long_steps"):
        build.resolve(build.parse_args(["--scale", "cpu", "--work", str(tmp_path / "c"), "--set", "dit_long_steps=0"]))


def test_dit_objects_phase_trains_last_with_the_objects_weighted(build, tmp_path, monkeypatch, capsys):
    # From dit-long's EMA, on the shipped VAE's latents, at the late phases' timesteps, with --object-weight.
    b = build.resolve(build.parse_args(["--scale", "cpu", "--work", str(tmp_path / "c"), "--set", "dit_objects_steps=5",
                                        "dit_object_weight=7", "dit_objects_rounds=1"]))
    assert b.final_dit == b.dit_objects_run and [p[0] for p in b.dit_phases][-2:] == ["dit-new-latents", "dit-objects"]
    dit = _commands(build, b, monkeypatch, "dit-objects")["dit-objects"]
    assert (_flag(dit, "--init"), _flag(dit, "--data")) == (str(b.dit_objects_run / "init"), str(b.cache_long))
    assert (_flag(dit, "--object-weight"), _flag(dit, "--steps"), _flag(dit, "--seed")) == ("7.0", "5", "4")
    assert (_flag(dit, "--timestep-shift"), _flag(dit, "--terminal-prob")) == ("4.0", "0.1") and "--pooled-text" in dit
    # its steps count for the plan and the export: the model is not done until this phase is
    (b.dit_objects_run / "checkpoints" / "step_00000003").mkdir(parents=True)
    todo, out = _todo(build, b, capsys)
    assert "dit-objects" in todo and "step 3/5" in out and "objects weighted 8x" in out
    # without the second round it trains on the first cache, from the last phase that is on
    short = build.resolve(build.parse_args(["--scale", "cpu", "--work", str(tmp_path / "s"), "--set", "dit_objects_steps=5",
                                            "vae_long_steps=0", "dit_objects_rounds=1"]))
    dit = _commands(build, short, monkeypatch, "dit-objects")["dit-objects"]
    assert _flag(dit, "--data") == str(short.cache) and [p[0] for p in short.dit_phases][-2:] == ["dit-high-shift", "dit-objects"]
    # more rounds: each from the last one's EMA with the next seed; the rounds already done are skipped
    more = build.resolve(build.parse_args(["--scale", "cpu", "--work", str(tmp_path / "r"), "--set", "dit_objects_steps=5",
                                           "dit_objects_rounds=3"]))
    assert more.final_dit == more.work / "dit-objects-3" and [p[0] for p in more.dit_phases][-4:] == ["dit-new-latents"] + ["dit-objects"] * 3
    (more.dit_objects_run / "checkpoints" / "step_00000005").mkdir(parents=True)
    ran = []
    monkeypatch.setattr(more, "run", lambda stage, args: ran.append([str(a) for a in args]), raising=False)
    build.STAGES["dit-objects"](more)
    assert [(_flag(r, "--out"), _flag(r, "--init"), _flag(r, "--seed"), _flag(r, "--object-weight")) for r in ran] == [
        (str(more.work / f"dit-objects-{k}"), str(more.work / f"dit-objects-{k}" / "init"), str(3 + k), "10.0") for k in (2, 3)]


def test_set_overrides_stage_sizes_and_rejects_unknown_fields(build, tmp_path):
    b = _resolve(build, tmp_path, "--set", "dit_steps=7", "vae_lr=0.001", "bench_limit=none", "sizes=64x64")
    assert (b.scale.dit_steps, b.scale.vae_lr, b.scale.bench_limit, b.scale.sizes) == (7, 0.001, None, "64x64")
    assert _resolve(build, tmp_path, "--set", "dit_pooled_text=true").scale.dit_pooled_text is True
    with pytest.raises(SystemExit, match="true or false"):
        _resolve(build, tmp_path, "--set", "dit_pooled_text=maybe")
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        _resolve(build, tmp_path, "--set", "no_such_field=1")


def test_export_writes_the_recipes_sampling_defaults(build, tmp_path, monkeypatch):
    import soraflow.train.dit as train_dit

    seen = []

    class Stop(Exception):
        pass

    def fake_export(run, out, **kwargs):
        seen.append((Path(run), kwargs))
        raise Stop

    monkeypatch.setattr(train_dit, "export_pipeline", fake_export)
    for extra, want in (((), 0.75), (("--set", "guidance_min_t=0"), 0.0)):
        b = _resolve(build, tmp_path, *extra)
        with pytest.raises(Stop):
            build.stage_export(b)
        run, kwargs = seen[-1]
        assert run == b.final_dit and kwargs["vae"] == b.final_vae and kwargs["ema"] is True
        assert kwargs["guidance_min_t"] == want and kwargs["guidance_scale"] == 4.0 and kwargs["steps"] == 8
        assert kwargs["shift"] == b.final_shift


def test_gpu_scale_exports_into_the_package_and_fits_the_size_budget(build, tmp_path):
    b = build.resolve(build.parse_args(["--work", str(tmp_path / "w")]))
    assert b.export == build.DEFAULT_EXPORT
    # The objects weighted in a decoder round and in a last DiT phase (plain losses train the backgrounds), on
    # the first cache (no second VAE round, so the encoder the DiT learned is the one that ships).
    assert b.on("vae-objects") and b.on("dit-objects") and not b.on("vae-whole") and not b.on("dit-pooled-text")
    assert b.final_dit == b.dit_objects_run and b.final_cache == b.cache and b.final_vae == b.objects_run / "model"
    # bf16 bytes of the shipped shapes: DiT "small" width at dit_layers blocks + the "small" VAE.
    from soraflow.models.dit import DiT, dit_config
    from soraflow.models.vae import VideoVAE, vae_config
    import torch

    with torch.device("meta"):
        dit = DiT(dit_config("small", num_layers=b.scale.dit_layers))
        vae = VideoVAE(vae_config(b.scale.vae_preset))
    params = sum(p.numel() for p in dit.parameters()) + sum(p.numel() for p in vae.parameters())
    assert 2 * params / 2**20 <= b.max_mb
    assert 20e6 <= sum(p.numel() for p in dit.parameters()) <= 40e6


def test_loss_curves_are_read_from_tensorboard_logs_and_plotted(build, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "tb"
    for start in (0, 20):  # two event files, as after a resume
        writer = SummaryWriter(log_dir=str(logdir))
        for step in range(start + 1, start + 21):
            writer.add_scalar("train/loss", 1.0 / step, step)
        writer.close()
    points = build.read_scalars(logdir, "train/loss")
    assert [s for s, _ in points] == list(range(1, 41))
    assert points[-1][1] == pytest.approx(1 / 40)
    png = build.plot_curve(points, tmp_path / "curves" / "dit_loss.png", title="DiT")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert build.read_scalars(tmp_path / "missing", "train/loss") == []


def test_curves_leave_out_stages_that_are_off(build, tmp_path, monkeypatch):
    b = _resolve(build, tmp_path, "--set", "vae_long_steps=0")
    monkeypatch.setattr(build, "read_scalars", lambda logdir, tag: [(1, 1.0), (2, 0.5)])
    build.stage_curves(b)
    drawn = sorted(p.name for p in b.curves.glob("*.png"))
    assert "vae-long_loss.png" not in drawn and "dit-long_loss.png" not in drawn  # a stale run folder is not drawn
    assert {"vae_loss.png", "decoder_loss.png", "objects_loss.png", "dit-shift_loss.png"} <= set(drawn)


def test_the_objects_curves_put_their_rounds_end_to_end(build, tmp_path, monkeypatch):
    b = _resolve(build, tmp_path, "--set", "objects_steps=5", "objects_rounds=3")
    logs = {b.objects_run / "tb": [(1, 3.0), (5, 2.0)], b.work / "vae-objects-2" / "tb": [(5, 1.0)],
            b.work / "vae-objects-3" / "tb": [(2, 0.5)]}
    monkeypatch.setattr(build, "read_scalars", lambda logdir, tag: logs.get(logdir, [(1, 1.0)]))
    drawn = {}
    monkeypatch.setattr(build, "plot_curve", lambda points, path, title: drawn.setdefault(path.name, points) and path)
    build.stage_curves(b)
    assert drawn["objects_loss.png"] == [(1, 3.0), (5, 2.0), (10, 1.0), (12, 0.5)]
    b = _resolve(build, tmp_path, "--set", "dit_objects_steps=4", "dit_objects_rounds=2")
    logs = {b.dit_objects_run / "tensorboard": [(2, 0.4), (4, 0.3)], b.work / "dit-objects-2" / "tensorboard": [(2, 0.2)]}
    drawn.clear()
    build.stage_curves(b)
    assert drawn["dit-objects_loss.png"] == [(2, 0.4), (4, 0.3), (6, 0.2)]


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


def test_a_stage_past_the_deadline_is_stopped_and_a_failing_one_names_itself(build, tmp_path):
    import time

    b = _resolve(build, tmp_path)
    b.deadline = time.monotonic() - 1
    start = time.monotonic()
    with pytest.raises(build.Deadline):
        b.run("dit", [sys.executable, "-c", "import time; time.sleep(60)"])
    assert time.monotonic() - start < 30  # killed, not waited for
    b.deadline = None
    with pytest.raises(SystemExit, match="stage cache failed"):
        b.run("cache", [sys.executable, "-c", "raise SystemExit(4)"])


def test_the_old_stage_names_still_select_stages_and_carry_their_times(build, tmp_path, monkeypatch):
    # --only/--force take the names the stages had before (an old run's notes); the run folders kept theirs.
    args = build.parse_args(["--scale", "smoke", "--work", str(tmp_path / "w"), "--only", "dit-tune", "objects", "--plan"])
    assert args.only == ["dit-pooled-text", "vae-objects"]
    b = build.resolve(args)
    assert b.dit_tune_run == b.work / "dit-tune" and b.vae_long_run == b.work / "vae-long"
    # An old build.json's stage times are summed under the new names.
    b.work.mkdir(parents=True)
    (b.work / "build.json").write_text(json.dumps({"seconds": {"dit-tune": 10.0, "dit-pooled-text": 5.0}}))
    monkeypatch.setattr(build, "STAGES", {})
    monkeypatch.setattr(build, "plan", lambda b, stages, force: [])
    assert build.main(["--scale", "smoke", "--work", str(b.work)]) == 0
    assert json.loads((b.work / "build.json").read_text())["seconds"] == {"dit-pooled-text": 15.0}
