"""VAE training: a step lowers the loss, exact resume, corrupt clips skipped, outputs, eval, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from soraflow.errors import DataError, InputError
from soraflow.eval.recon import psnr, ssim
from soraflow.models.vae import VideoVAE, vae_config
from soraflow.train.vae import TrainVAEConfig, list_clips, salience, train_vae, vae_loss, weighted_l1


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from soraflow.video import write_video

    root = tmp_path_factory.mktemp("clips")
    t, y, x = np.meshgrid(np.arange(12), np.arange(32), np.arange(32), indexing="ij")
    for k in range(3):
        f = np.stack([128 + 100 * np.sin(0.3 * x + 0.2 * y + 0.5 * t + k + c) for c in range(3)], -1)
        write_video(root / f"clip{k}.mp4", f.astype(np.uint8), 8, lossless=True)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 20)
    return root


def _cfg(clips, run_dir, **kw) -> TrainVAEConfig:
    base = dict(data=clips, run_dir=run_dir, preset="tiny", steps=4, batch_size=2, size=32, crop=16, frames=5,
                image_prob=0.5, save_every=2, sample_every=2, stats_batches=1, progress=False, lr=1e-3)  # fmt: skip
    return TrainVAEConfig(**(base | kw))


def test_one_step_lowers_reconstruction_loss():
    torch.manual_seed(0)
    vae = VideoVAE(vae_config("tiny")).train()
    cfg = TrainVAEConfig(precision="fp32", kl_weight=0.0)
    x = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    before, _, _ = vae_loss(vae, x, cfg, torch.Generator().manual_seed(0), None, False)
    before.backward()
    opt.step()
    with torch.no_grad():
        after, _, _ = vae_loss(vae, x, cfg, torch.Generator().manual_seed(0), None, False)
    assert after.item() < before.item() - 1e-4


def _square_clip(t: int = 3) -> torch.Tensor:
    """A red 6x6 square on a flat grey 48x48 background: (1, 3, t, 48, 48) in [-1, 1]."""
    x = torch.zeros(1, 3, t, 48, 48)
    x[:, 0, :, 20:26, 20:26] = 1.0
    x[:, 1:, :, 20:26, 20:26] = -1.0
    return x


def test_salience_marks_objects_not_flat_background():
    s = salience(_square_clip())
    assert s.shape == (1, 1, 3, 48, 48)
    assert s[..., 20:26, 20:26].min() == 1.0  # the square, inside and out to its edges
    assert s[..., :10, :10].max() < 0.1 and s[..., 38:, 38:].max() < 0.1  # far background
    assert (s > 0.5).float().mean() < 0.15  # a small part of the frame


def test_motion_marks_where_an_object_was_and_went_and_weighs_the_loss():
    from soraflow.train.vae import motion

    x = -torch.ones(1, 3, 3, 32, 32)
    x[:, :, 0, 4:10, 4:10] = 1  # a square at the left, then at the right for two frames
    x[:, :, 1:, 4:10, 14:20] = 1
    m = motion(x)[0, 0]
    assert m.shape == (3, 32, 32) and m[0].sum() == 0 and m[2].sum() == 0  # frame 0, and a frame that did not change
    assert m[1, 6, 6] == 1 and m[1, 6, 16] == 1 and m[1, 25, 25] == 0  # the place it left, the place it went, not the rest
    ghost = x.clone()
    ghost[:, :, 1:] = x[:, :, :1]  # a decoder that keeps frame 0's picture
    elsewhere = x.clone()
    elsewhere[:, :, :, 20:26, 20:26] = 0.0  # an error of the same size on the static background
    ratio = lambda w: (weighted_l1(ghost, x, 0.0, w) / weighted_l1(elsewhere, x, 0.0, w)).item()  # noqa: E731
    assert ratio(8.0) > 2 * ratio(0.0)  # with the weight, carrying the old frame forward costs far more


def test_object_weight_makes_object_errors_cost_more():
    x = _square_clip()
    on_object, on_background = x.clone(), x.clone()
    on_object[:, :, :, 20:26, 20:26] = 0.0  # the square loses its colour
    on_background[:, :, :, 0:6, 0:6] += 1.0  # the same number of pixels wrong by the same amount
    plain = weighted_l1(on_object, x, 0.0), weighted_l1(on_background, x, 0.0)
    assert plain[0].item() == pytest.approx(plain[1].item())
    weighted = weighted_l1(on_object, x, 10.0), weighted_l1(on_background, x, 10.0)
    assert weighted[0].item() > 5 * weighted[1].item()


def test_training_run_resumes_exactly_and_skips_corrupt_clips(clips, tmp_path):
    straight = train_vae(_cfg(clips, tmp_path / "a"))
    assert straight.step == 4 and len(straight.losses) == 4
    assert [p.endswith("broken.mp4") for p in straight.skipped] == [True]
    part = train_vae(_cfg(clips, tmp_path / "b"), stop_after=2)  # "interrupted" after 2 steps
    assert part.step == 2 and part.model_dir is None
    rest = train_vae(_cfg(clips, tmp_path / "b"))
    assert rest.step == 4 and len(rest.losses) == 2
    assert rest.losses == straight.losses[2:]
    a = VideoVAE.from_pretrained(straight.model_dir)
    b = VideoVAE.from_pretrained(rest.model_dir)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    # what a run leaves behind
    run = tmp_path / "a"
    assert (run / "samples" / "step_00000004.png").is_file()
    assert any((run / "tb").iterdir())
    config = json.loads((run / "model" / "config.json").read_text())
    assert len(config["latents_mean"]) == 4 and all(s > 0 for s in config["latents_std"])


def test_decoder_fine_tuning_keeps_the_encoder_and_its_latent_statistics(clips, tmp_path):
    base = train_vae(_cfg(clips, tmp_path / "base", steps=2))
    tuned = train_vae(_cfg(clips, tmp_path / "tuned", init=base.model_dir, freeze_encoder=True, steps=3))
    a, b = VideoVAE.from_pretrained(base.model_dir), VideoVAE.from_pretrained(tuned.model_dir)
    sa, sb = a.state_dict(), b.state_dict()
    encoder = [k for k in sa if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in sa if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder and len(encoder) + len(decoder) == len(sa)
    assert all(torch.equal(sa[k], sb[k]) for k in encoder)
    assert sum(not torch.equal(sa[k], sb[k]) for k in decoder) > len(decoder) // 2  # the decoder learned
    assert b.config.latents_mean == a.config.latents_mean and b.config.latents_std == a.config.latents_std
    with pytest.raises(InputError, match="--init"):
        train_vae(_cfg(clips, tmp_path / "no-init", freeze_encoder=True))


def test_a_wider_decoder_starts_new_on_the_frozen_encoder_and_resumes_only_as_itself(clips, tmp_path):
    base = train_vae(_cfg(clips, tmp_path / "base", steps=2))
    a = VideoVAE.from_pretrained(base.model_dir)
    width = 2 * a.config.base_dim
    wide = train_vae(_cfg(clips, tmp_path / "wide", init=base.model_dir, freeze_encoder=True, decoder_base_dim=width, steps=2))
    b = VideoVAE.from_pretrained(wide.model_dir)
    assert b.config.decoder_base_dim == width and b.config.base_dim == a.config.base_dim
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith(("encoder.", "quant_conv.")))  # the same latents
    assert sum(v.numel() for k, v in sb.items() if k.startswith("decoder.")) > 2 * sum(
        v.numel() for k, v in sa.items() if k.startswith("decoder."))
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        assert b.decode(b.encode(x).mode()).shape == x.shape
    with pytest.raises(InputError, match="another model"):  # the run folder holds the wide decoder: not resumed as another
        train_vae(_cfg(clips, tmp_path / "wide", init=base.model_dir, freeze_encoder=True, steps=3))


def test_adversarial_term_switches_on_late(clips, tmp_path):
    cfg = _cfg(clips, tmp_path / "adv", steps=2, adv_weight=0.1, adv_start=1, save_every=2, sample_every=2, stats_batches=0)
    result = train_vae(cfg)
    assert result.step == 2
    from soraflow.train.checkpoint import latest_checkpoint

    assert (latest_checkpoint(tmp_path / "adv") / "disc.safetensors").is_file()


def test_long_clip_steps_mix_lengths_and_crops(clips):
    from soraflow.train.vae import ClipReader, sample_batch

    cfg = _cfg(clips, None, image_prob=0.25, long_prob=0.5, long_frames=9, long_crop=8)
    reader = ClipReader(list_clips(clips), cfg.size, 64, report=lambda msg: None)
    shapes = [tuple(sample_batch(reader, cfg, step).shape[2:]) for step in range(40)]
    assert set(shapes) == {(1, 16, 16), (5, 16, 16), (9, 8, 8)}
    assert 10 <= shapes.count((9, 8, 8)) <= 30  # about half the steps
    # With no long steps the draw uses no extra random numbers, so a run saved without the option resumes exactly.
    plain = _cfg(clips, None, image_prob=0.25)
    assert [sample_batch(reader, plain, s).shape[2] for s in range(12)] == [
        1 if np.random.default_rng([plain.seed, s, 1]).random() < 0.25 else 5 for s in range(12)]


def test_shape_options_build_the_latent_grid_they_name(clips, tmp_path):
    from soraflow.train.vae import model_config

    for kw, (tf, sf, z) in {(): (4, 8, 16), (("spatial_factor", 4),): (4, 4, 16), (("z_dim", 4), ("spatial_factor", 4)): (4, 4, 4),
                            (("temporal_factor", 2), ("spatial_factor", 4)): (2, 4, 16), (("residual", True),): (4, 8, 16),
                            (("residual", True), ("spatial_factor", 4)): (4, 4, 16)}.items():
        cfg = model_config(TrainVAEConfig(preset="small", **dict(kw)))
        vae = VideoVAE(cfg)
        latent = vae.encode(torch.zeros(1, 3, 9, 32, 32)).mode()
        assert (vae.temporal_factor, vae.spatial_factor, cfg.z_dim) == (tf, sf, z)
        assert tuple(latent.shape) == (1, z, 1 + 8 // tf, 32 // sf, 32 // sf)
    assert model_config(TrainVAEConfig(preset="small", spatial_factor=4)).dim_mult == [1, 2, 4]  # the deepest stage goes
    residual = model_config(TrainVAEConfig(preset="small", residual=True))
    assert residual.is_residual and residual.dim_mult == [1, 2, 4, 4]  # the last stage cannot widen through its shortcut
    with pytest.raises(InputError, match="--spatial-factor 16 needs 4 downsampling stages"):
        model_config(TrainVAEConfig(preset="small", spatial_factor=16))
    run = _cfg(clips, tmp_path / "r", spatial_factor=4, z_dim=8, steps=1)
    assert train_vae(run).step == 1
    with pytest.raises(InputError, match="holds a run of another model"):  # resuming with another shape
        train_vae(_cfg(clips, tmp_path / "r", steps=2))


def test_bad_training_inputs(clips, tmp_path):
    with pytest.raises(InputError, match="1 \\+ 4k"):
        train_vae(_cfg(clips, tmp_path / "x", frames=4))
    with pytest.raises(InputError, match="--long-frames 1 \\+ 4k"):
        train_vae(_cfg(clips, tmp_path / "x", long_prob=0.5, long_frames=8))
    with pytest.raises(InputError, match="add up to more than 1"):
        train_vae(_cfg(clips, tmp_path / "x", long_prob=0.6, long_frames=9))
    with pytest.raises(InputError, match="--long-crop 12"):
        train_vae(_cfg(clips, tmp_path / "x", long_prob=0.2, long_frames=9, long_crop=12))
    with pytest.raises(DataError, match="does not exist"):
        train_vae(_cfg(tmp_path / "missing", tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing written for a bad input
    assert not (tmp_path / "x").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no clips"):
        list_clips(tmp_path / "empty")
    (tmp_path / "m").mkdir()
    # One policy for every trainer: a broken line, or one that points outside the dataset, is
    # reported and skipped, and the good lines train.
    (tmp_path / "m" / "manifest.jsonl").write_text(
        '{"id": "1", "path": "clips/1.mp4"}\n{"id": 2}\n{"id": "3", "path": "../../../../etc/hostname"}\n')
    with pytest.warns(UserWarning) as caught:
        clips = list_clips(tmp_path / "m")
    assert [c.id for c in clips] == ["1"]
    said = " ".join(str(w.message) for w in caught)
    assert "manifest.jsonl:2: not a manifest record" in said and "outside the dataset folder" in said


def test_metrics_psnr_ssim():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 2, 32, 32, generator=g) * 2 - 1
    noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert torch.all(ssim(x, x) > 0.9999)
    assert torch.isinf(psnr(x, x)).all()
    # PSNR of additive noise of std 0.1 on [-1, 1] (0.05 on [0, 1]) is about 26 dB (a bit more: clamping)
    p = psnr(noisy, x)
    assert torch.all((p > 25.5) & (p < 27.5))
    noisier = (x + 0.4 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert torch.all(ssim(noisier, x) < ssim(noisy, x)) and torch.all(ssim(noisy, x) < 0.999)
    assert torch.all(ssim(x, -x) < 0.2)
    with pytest.raises(InputError):
        psnr(x, x[:, :, :1])


def test_eval_vae_cli_reports_psnr_ssim(clips, tmp_path, real_videos):
    from soraflow.cli import main

    torch.manual_seed(0)
    VideoVAE(vae_config("tiny")).save_pretrained(tmp_path / "vae")
    out = tmp_path / "eval.json"
    argv = ["eval", "vae", "--model", str(tmp_path / "vae"), "--data", str(clips), str(real_videos / "carphone_pristine.mp4"),
            "--max-side", "32", "--frames", "5", "--json", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(out.read_text())["datasets"]
    assert [r["clips"] for r in res] == [3, 1]
    assert res[0]["skipped"] and res[0]["skipped"][0].endswith("broken.mp4")
    real = res[1]["per_clip"][0]
    assert (real["frames"], real["height"], real["width"]) == (5, 24, 32)  # 176x144 scaled to long side 32
    for r in res:
        assert 0 < r["psnr"]["mean"] < 40 and -1 <= r["ssim"]["mean"] <= 1  # an untrained VAE: poor but finite
    assert main(["eval", "vae", "--model", str(tmp_path / "nope"), "--data", str(clips)]) == 2
