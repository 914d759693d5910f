"""Conditioning masks, the DiT trainer (one step lowers the loss, exact resume after SIGKILL, NaN stop)
and the `soraflow train dit` / `export-dit` commands. Tiny DiT, synthetic latents."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from soraflow import flow
from soraflow.cli import main as cli_main
from soraflow.data import BucketSampler, LatentCacheWriter, LatentDataset, collate_latents
from soraflow.errors import DataError
from soraflow.train.checkpoint import latest_checkpoint, list_checkpoints
from soraflow.train.dit import DiTTrainer, TrainDiTConfig, TrainingError, latent_salience
from soraflow.train.launch import train_dit
from soraflow.train.masks import (
    STRATEGIES,
    MaskConfig,
    frame_timesteps,
    sample_given_masks,
    sample_strategies,
    strategy_mask,
)

# ----------------------------------------------------------------------------------------------
# Masks


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_leaves_a_frame_to_generate_and_has_its_shape(strategy):
    cfg = MaskConfig()
    g = torch.Generator().manual_seed(0)
    for frames in range(1, 10):
        for _ in range(40):
            m = strategy_mask(strategy, frames, cfg, g)
            assert m.shape == (frames,) and m.dtype == torch.bool
            assert not m.all(), (strategy, frames, m)  # at least one frame is generated
            n = int(m.sum())
            if frames == 1 or strategy == "none":
                assert n == 0  # an image is never conditioned on itself
                continue
            idx = m.nonzero().flatten().tolist()
            if strategy == "first_frame":
                assert idx == [0]
            elif strategy == "first_frames":
                assert idx == list(range(n)) and n <= max(1, int(cfg.max_given * frames))
            elif strategy == "last_frames":
                assert idx == list(range(frames - n, frames)) and n <= max(1, int(cfg.max_given * frames))
            elif strategy == "both_ends" and frames >= 3:
                free = (~m).nonzero().flatten().tolist()  # generated frames: one block in the middle
                assert m[0] and m[-1] and free == list(range(free[0], free[-1] + 1))
            elif strategy == "random_spans":
                assert n >= 1


def test_strategies_are_drawn_with_the_configured_weights():
    cfg = MaskConfig(none=1, first_frame=3, first_frames=0, last_frames=0, both_ends=0, random_spans=0)
    picks = sample_strategies(4000, 5, cfg, torch.Generator().manual_seed(1))
    frac = picks.count("first_frame") / len(picks)
    assert abs(frac - 0.75) < 0.03 and set(picks) == {"none", "first_frame"}
    # A strategy that needs more frames than a clip has is not drawn; the rest are renormalised.
    only_ends = MaskConfig(none=0, first_frame=0, first_frames=0, last_frames=0, both_ends=1, random_spans=0)
    assert set(sample_strategies(50, 2, only_ends)) == {"none"}
    assert set(sample_strategies(50, 3, only_ends)) == {"both_ends"}
    a, _ = sample_given_masks(16, 6, MaskConfig(), torch.Generator().manual_seed(5))
    b, _ = sample_given_masks(16, 6, MaskConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_given_frames_are_clean_and_excluded_from_the_loss():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 4, 5, 4, 4, generator=g)
    given, _ = sample_given_masks(8, 5, MaskConfig(none=0), g)
    assert given.any(dim=1).all()
    t = torch.rand(8, generator=g) * 0.9 + 0.05
    tf = frame_timesteps(t, given)
    assert torch.equal(tf[given], torch.zeros(int(given.sum()))) and torch.equal(tf[~given], t[:, None].expand(8, 5)[~given])
    path = flow.sample_path(x0, tf, generator=g)
    hold = given[:, None, :, None, None].expand_as(x0)
    assert torch.equal(path.xt[hold], x0[hold])  # given frames are exactly the clean latents
    assert not torch.equal(path.xt[~hold], x0[~hold])
    pred = torch.randn_like(x0)
    loss = flow.flow_loss(pred, path.target, frame_mask=~given)
    junk = torch.where(hold, torch.full_like(pred, 1e6), pred)  # whatever is predicted on given frames
    assert torch.equal(flow.flow_loss(junk, path.target, frame_mask=~given), loss)


# ----------------------------------------------------------------------------------------------
# Trainer

# Mixed sizes, durations and single images (latent C, T, H, W); tiny DiT text_dim comes from the cache.
SHAPES = [(4, 3, 8, 8)] * 6 + [(4, 1, 8, 8)] * 6 + [(4, 2, 8, 12)] * 4


def make_cache(path: Path, shapes=SHAPES, nan_index: int | None = None, text_dim=16) -> Path:
    g = torch.Generator().manual_seed(0)
    with LatentCacheWriter(path, meta={"text": {"reference": "fake", "dim": text_dim}}, shard_size=5, dtype=torch.float32) as w:
        w.set_null_text(torch.zeros(2, text_dim))
        for i, shape in enumerate(shapes):
            # Structured latents (a smooth per-channel pattern + noise) so there is something to learn.
            base = torch.linspace(-1, 1, shape[-1]).expand(shape) * torch.arange(1, shape[0] + 1).view(-1, 1, 1, 1)
            lat = base + 0.1 * torch.randn(shape, generator=g)
            if i == nan_index:
                lat[0, 0, 0, 0] = float("nan")  # e.g. a VAE that overflowed: valid bytes, bad values
            w.add(f"clip{i:02d}", lat, {"long": torch.randn(3, text_dim, generator=g)}, captions={"long": f"caption {i}"}, fps=8, source=f"{i}.mp4")
    return path


def tiny_config(cache: Path, out: Path, **kw) -> TrainDiTConfig:
    args = dict(
        data=cache, out=out, preset="tiny", steps=20, batch_tokens=64, lr=2e-3, warmup_steps=3,
        checkpoint_every=5, keep_last=10, caption_dropout=0.3, ema_decay=0.9, ema_warmup_steps=5, threads=1,
        tensorboard=False, seed=3,
    )
    args.update(kw)
    return TrainDiTConfig(**args)


def test_one_training_step_lowers_the_loss(tmp_path):
    cfg = tiny_config(make_cache(tmp_path / "cache"), tmp_path / "run", lr=1e-2, warmup_steps=0, caption_dropout=0.0)
    trainer = DiTTrainer(cfg, progress=False)
    batch = collate_latents([trainer.dataset[i] for i in range(6)])  # the six (4, 3, 8, 8) clips
    state = trainer.generator.get_state()
    before, _ = trainer.train_step(batch)
    trainer.generator.set_state(state)  # the same timesteps, masks and noise again
    after, _ = trainer.train_step(batch)
    assert after < before * 0.95, (before, after)


def test_trainer_feeds_clean_given_frames_and_null_captions(tmp_path):
    cfg = tiny_config(make_cache(tmp_path / "cache"), tmp_path / "run", caption_dropout=1.0)
    trainer = DiTTrainer(cfg, progress=False)
    seen = {}
    forward = trainer.model.forward

    def spy(x, t, context, context_mask=None):
        seen.update(x=x.detach().clone(), t=t.clone(), context=context.clone())
        return forward(x, t, context, context_mask)

    trainer.model.forward = spy
    batch = collate_latents([trainer.dataset[i] for i in range(6)])
    for _ in range(12):  # enough draws that some sample gets a conditioning mask
        trainer.train_step(batch)
        t = seen["t"]
        assert t.shape == (6, 3)  # per latent frame
        given = t == 0
        hold = given[:, None, :, None, None].expand_as(batch.latents)
        assert torch.equal(seen["x"][hold], batch.latents[hold])
        if given.any():
            break
    assert given.any()
    assert torch.equal(seen["context"][:, :2], torch.zeros(6, 2, 16))  # all captions dropped -> null


def test_batches_are_sized_by_the_models_own_tokens(tmp_path):
    """--batch-tokens counts the tokens of the DiT's patch size: 1x4x4 patches make a (3, 8, 8) latent
    12 tokens, so 64 tokens take 5 of them (counted with 1x2x2 patches it would be 1)."""
    cache = make_cache(tmp_path / "cache")
    big = DiTTrainer(tiny_config(cache, tmp_path / "a", patch_size=4), progress=False)
    assert big.sampler.patch_size == (1, 4, 4) and big.sampler.batch_size_for((4, 3, 8, 8)) == 64 // 12
    sizes = {}
    for indices in big.sampler.batches():
        shape = big.dataset.shapes[indices[0]]
        sizes.setdefault(shape, []).append(len(indices))
    assert sorted(sizes[(4, 3, 8, 8)]) == [1, 5]  # the 6 clips of that shape: one batch of 5, the rest
    small = DiTTrainer(tiny_config(cache, tmp_path / "b"), progress=False)
    assert small.sampler.batch_size_for((4, 3, 8, 8)) == 64 // 48


def test_still_views_train_on_first_frames_beside_the_clips(tmp_path):
    cfg = tiny_config(make_cache(tmp_path / "cache"), tmp_path / "run", still_views=2, steps=12, checkpoint_every=12)
    trainer = DiTTrainer(cfg, progress=False)
    videos = sum(1 for s in SHAPES if s[1] > 1)
    assert len(trainer.dataset) == len(SHAPES) + 2 * videos
    seen = []
    batches = trainer.batches()
    for _ in range(12):
        batch = next(batches)
        seen.append(batch.latents.shape[2])
        loss, _ = trainer.train_step(batch)
        assert loss == loss and loss < float("inf")
    assert 1 in seen and max(seen) > 1  # stills and clips in one run


def test_latent_salience_finds_objects_and_not_texture():
    g = torch.Generator().manual_seed(0)
    # frame 0: a flat background with faint noise and a 2x2 object; frame 1: a strong texture with a
    # 2x2 object that stands out from it; frame 2: texture only; frame 3: faint noise only
    z = torch.randn(1, 16, 4, 12, 20, generator=g) * 0.02
    z[:, :, 1:3] = torch.randn(1, 16, 2, 12, 20, generator=g) * 0.25
    z[:, :, 0, 5:7, 8:10] += 0.6
    z[:, :, 1, 2:4, 14:16] += 2.0
    s = latent_salience(z)
    assert s.shape == (1, 1, 4, 12, 20) and s.min() >= 0 and s.max() <= 1
    assert (s[0, 0, 0, 5:7, 8:10] == 1).all() and (s[0, 0, 1, 2:4, 14:16] == 1).all()
    inside = torch.zeros(4, 12, 20, dtype=torch.bool)
    inside[0, 5:7, 8:10] = inside[1, 2:4, 14:16] = True
    assert s[0, 0][~inside].mean() < 0.02  # neither the texture nor the noise counts as objects
    assert s[0, 0, 2:].max() < 0.5


def test_object_weight_weighs_the_loss_by_latent_salience(tmp_path):
    cache = make_cache(tmp_path / "cache")
    cfg = tiny_config(cache, tmp_path / "run", object_weight=10.0, caption_dropout=0.0)
    trainer = DiTTrainer(cfg, progress=False)
    batch = collate_latents([trainer.dataset[i] for i in range(6)])
    x0 = batch.latents
    # the synthetic latents' noise stands out from their smooth pattern here and there
    sal = latent_salience(x0)
    assert 0 < sal.mean() < 0.5
    seen = {}
    forward = trainer.model.forward

    def spy(x, t, context, context_mask=None):
        seen.update(xt=x.detach().clone(), t=t.clone())
        seen["pred"] = out = forward(x, t, context, context_mask)
        return out

    trainer.model.forward = spy
    loss, _ = trainer.train_step(batch)
    # rebuild the step's target from what the model saw: x_t = (1 - t) x0 + t noise, v = noise - x0 = (x_t - x0) / t
    t = seen["t"]
    te = t[:, None, :, None, None].clamp_min(1e-6)
    target = (seen["xt"] - x0) / te
    pred, counted = seen["pred"].detach(), t > 0
    weighted = flow.flow_loss(pred, target, frame_mask=counted, weight=1.0 + 10.0 * sal).item()
    assert loss == pytest.approx(weighted, rel=1e-3)
    assert loss != pytest.approx(flow.flow_loss(pred, target, frame_mask=counted).item(), rel=1e-2)
    # each clip's salience is computed once and kept: the next epoch's step reads it back
    assert set(trainer._salience) == set(batch.ids)
    import soraflow.train.dit as dit_module

    calls = []
    real = dit_module.latent_salience
    dit_module.latent_salience = lambda z, **kw: calls.append(z) or real(z, **kw)
    try:
        again = trainer.salience(batch)
    finally:
        dit_module.latent_salience = real
    assert not calls and torch.allclose(again, sal, atol=1e-3)

    # saved with the checkpoint, so a resumed run reads the maps back instead of computing them
    trainer.save()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / dit_module.SALIENCE_NAME), framework="pt") as f:
        assert set(f.keys()) == set(batch.ids)
    resumed = DiTTrainer(cfg, progress=False)
    assert set(resumed._salience) == set(batch.ids)
    assert torch.equal(resumed.salience(batch), again)
    # a clip whose latent changed in the cache (another CRC) gets its map computed again
    resumed.dataset.entries[0].crc32 += 1
    resumed._salience.clear()
    resumed._load_salience()
    assert batch.ids[0] not in resumed._salience and len(resumed._salience) == len(batch.ids) - 1


def _tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("dit", "ema", "optim.adamw"):
        for k, v in load_file(str(ckpt / f"{name}.safetensors")).items():
            out[f"{name}/{k}"] = v
    return out


def test_exact_resume_after_sigkill_matches_a_straight_run(tmp_path):
    cache = make_cache(tmp_path / "cache")
    # 1. 20 steps straight (16 samples in 12 batches per epoch, so the run crosses an epoch boundary).
    straight = train_dit(tiny_config(cache, tmp_path / "straight"), progress=False)
    assert straight.step == 20
    # 2. The same run in another process, killed with SIGKILL right after its step-10 checkpoint.
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_train_dit import make_cache, tiny_config
        from soraflow.train.launch import train_dit
        def die(trainer, step, path):
            if step == 10:
                os.kill(os.getpid(), signal.SIGKILL)
        train_dit(tiny_config({str(cache)!r}, {str(tmp_path / "killed")!r}), progress=False, on_checkpoint=die)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-3000:]
    assert [s for s, _ in list_checkpoints(tmp_path / "killed")] == [5, 10]
    # 3. Resume: 10 more steps from the step-10 checkpoint.
    resumed = train_dit(tiny_config(cache, tmp_path / "killed"), progress=False)
    assert resumed.step == 20 and len(resumed.losses) == 10
    assert resumed.losses == straight.losses[10:]
    a, b = _tensors(latest_checkpoint(tmp_path / "straight")), _tensors(latest_checkpoint(tmp_path / "killed"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # weights, EMA and optimizer state: bitwise
    ea = json.loads((latest_checkpoint(tmp_path / "straight") / "extra.json").read_text())
    eb = json.loads((latest_checkpoint(tmp_path / "killed") / "extra.json").read_text())
    assert ea == eb  # data position, generator state, EMA counter


def test_sigterm_saves_the_step_reached_exits_143_and_the_run_resumes_exactly(tmp_path):
    cache = make_cache(tmp_path / "cache")
    straight = train_dit(tiny_config(cache, tmp_path / "straight", checkpoint_every=50), progress=False)
    # The CLI in another process; SIGTERM arrives during step 7 (checkpoints only every 50 steps).
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import soraflow.train.launch as launch
        from soraflow.cli import main
        original = launch.train_dit
        def term_at_7(trainer, step, loss):
            if step == 7:
                os.kill(os.getpid(), signal.SIGTERM)
        launch.train_dit = lambda cfg, **kw: original(cfg, **kw, on_step=term_at_7)
        sys.exit(main(["train", "dit", "--data", {str(cache)!r}, "--out", {str(tmp_path / "stopped")!r}, "--preset", "tiny",
                       "--steps", "20", "--batch-tokens", "64", "--lr", "2e-3", "--warmup-steps", "3", "--checkpoint-every", "50",
                       "--caption-dropout", "0.3", "--ema-decay", "0.9", "--ema-warmup-steps", "5", "--threads", "1",
                       "--no-tensorboard", "--seed", "3", "--quiet"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == 143, proc.stderr.decode()[-3000:]
    assert b"stopped by SIGTERM at step 7" in proc.stderr
    assert [s for s, _ in list_checkpoints(tmp_path / "stopped")] == [7]
    resumed = train_dit(tiny_config(cache, tmp_path / "stopped", checkpoint_every=50), progress=False)
    assert resumed.step == 20 and not resumed.stopped and resumed.losses == straight.losses[7:]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the trainer's only while it trains


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    nan_index = 6  # one of the (4, 1, 8, 8) images, batched 4 at a time
    cache = make_cache(tmp_path / "cache", nan_index=nan_index)
    ds = LatentDataset(cache)
    # A seed whose first epoch reaches the bad batch after a few good steps.
    seed = next(
        s for s in range(50)
        if 3 <= [nan_index in b for b in BucketSampler(ds.shapes, tokens_per_batch=64, seed=s).batches(0)].index(True)
    )
    cfg = tiny_config(cache, tmp_path / "run", seed=seed, checkpoint_every=1)
    trainer = DiTTrainer(cfg, progress=False)
    with pytest.raises(TrainingError, match=r"loss is nan at step \d+") as err:
        trainer.run()
    good = latest_checkpoint(tmp_path / "run")
    assert trainer.step >= 3 and good.name == f"step_{trainer.step:08d}"
    assert str(good) in str(err.value) and "\n" not in str(err.value)
    weights = load_file(str(good / "dit.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_empty_or_missing_dataset_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        DiTTrainer(tiny_config(tmp_path / "missing", tmp_path / "run"))
    LatentCacheWriter(tmp_path / "empty").flush()
    with pytest.raises(DataError, match="no usable entries"):
        DiTTrainer(tiny_config(tmp_path / "empty", tmp_path / "run"))


def test_cli_trains_resumes_with_saved_config_and_reports_bad_input(tmp_path, capsys):
    cache = make_cache(tmp_path / "cache")
    run = tmp_path / "run"
    base = ["train", "dit", "--data", str(cache), "--out", str(run), "--threads", "1", "--no-tensorboard", "--quiet"]
    assert cli_main(base + ["--preset", "tiny", "--steps", "3", "--lr", "1e-3", "--checkpoint-every", "2"]) == 0
    assert [s for s, _ in list_checkpoints(run)] == [2, 3]
    saved = json.loads((latest_checkpoint(run) / "config.json").read_text())
    assert saved["preset"] == "tiny" and saved["lr"] == 1e-3 and saved["mask"]["first_frame"] == 0.2
    # Re-running resumes; the saved config is the base (preset tiny, lr) and options override it.
    capsys.readouterr()
    assert cli_main(["train", "dit", "--out", str(run), "--steps", "4", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["preset"] == "tiny" and printed["steps"] == 4 and printed["lr"] == 1e-3
    assert cli_main(["train", "dit", "--out", str(run), "--steps", "4", "--quiet"]) == 0
    assert latest_checkpoint(run).name == "step_00000004"
    capsys.readouterr()
    # Bad input: one line, exit status 2.
    assert cli_main(["train", "dit", "--data", str(cache), "--out", str(run), "--steps", "5", "--no-resume", "--quiet"]) == 2
    assert "already holds checkpoints (latest step_00000004)" in capsys.readouterr().err
    assert cli_main(base + ["--out", str(tmp_path / "r2"), "--lr", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "soraflow: error: --lr = -1.0: must be > 0"
    assert cli_main(["train", "dit", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r3"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("soraflow: error: latent cache") and "does not exist" in err and "\n" not in err


def test_init_adds_the_pooled_prompt_path_to_weights_trained_without_it(tmp_path, capsys):
    """The CPU default model's second phase: --init from a plain run's EMA, --pooled-text on top."""
    from soraflow.models.dit import DiT
    from soraflow.train.dit import export_dit

    cache = make_cache(tmp_path / "cache")
    train_dit(tiny_config(cache, tmp_path / "plain", steps=3), progress=False)
    export_dit(tmp_path / "plain", tmp_path / "init", ema=True)
    plain = DiT.from_pretrained(tmp_path / "init").eval()
    assert plain.condition_embedder.text_pooler is None

    capsys.readouterr()
    trainer = DiTTrainer(tiny_config(cache, tmp_path / "tuned", init=tmp_path / "init", pooled_text=True), progress=False)
    assert "no text pooler there; it starts from its zero init" in capsys.readouterr().out
    model = trainer.model.eval()
    assert model.config.pooled_text and model.condition_embedder.text_pooler is not None
    item = trainer.dataset[0]
    x, ctx = item.latent[None], item.text[None]
    with torch.no_grad():  # loaded weights + a zero pooled path: the plain model's velocities
        torch.testing.assert_close(model(x, torch.tensor([0.4]), ctx), plain(x, torch.tensor([0.4]), ctx), atol=1e-6, rtol=0)
    trainer.model.train()
    trainer.run()
    pooler = trainer.model.condition_embedder.text_pooler
    assert pooler.linear_2.weight.abs().max() > 0  # it trained
    export_dit(tmp_path / "tuned", tmp_path / "tuned-model", ema=True)
    assert DiT.from_pretrained(tmp_path / "tuned-model").config.pooled_text
    # A shape mismatch is still an error, not silently skipped.
    with pytest.raises(Exception, match="does not match the model"):
        DiTTrainer(tiny_config(cache, tmp_path / "bad", init=tmp_path / "init", ffn_dim=24), progress=False)


def test_end_to_end_cache_latents_train_with_sample_videos_and_export(tmp_path, monkeypatch, capsys):
    """clips -> `cache-latents` (tiny VAE) -> `train dit` with periodic sample videos -> `export-dit`."""
    import soraflow.models.text as text
    from soraflow import video
    from soraflow.models.dit import DiT
    from soraflow.models.vae import VideoVAE, vae_config
    from test_data import FakeTextEncoder, _write_world

    torch.manual_seed(0)
    VideoVAE(vae_config("tiny")).save_pretrained(tmp_path / "vae")
    _write_world(tmp_path / "world", {"a": (9, 32, 48, "a red ball bouncing"), "c": (1, 32, 32, "a yellow star")})
    monkeypatch.setattr(text, "load_text_encoder", lambda reference="minilm", **kw: FakeTextEncoder())
    cache, run = tmp_path / "cache", tmp_path / "run"
    assert cli_main(["train", "cache-latents", "--data", str(tmp_path / "world"), "--vae", str(tmp_path / "vae"), "--out", str(cache)]) == 0
    assert "2 clips cached (2 new, 0 skipped)" in capsys.readouterr().out

    args = ["train", "dit", "--data", str(cache), "--out", str(run), "--preset", "tiny", "--steps", "2", "--threads", "1",
            "--vae", str(tmp_path / "vae"), "--sample-every", "2", "--sample-steps", "2", "--quiet"]
    assert cli_main(args) == 0
    samples = sorted(p.name for p in (run / "samples").iterdir())
    assert samples == ["step_00000002_0.mp4", "step_00000002_0.txt", "step_00000002_1.png", "step_00000002_1.txt"]
    info = video.probe(run / "samples" / "step_00000002_0.mp4")
    assert (info.frames, info.height, info.width) == (9, 32, 48)
    assert (run / "samples" / "step_00000002_0.txt").read_text().strip() == "a red ball bouncing"
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())

    assert cli_main(["train", "export-dit", str(run), "-o", str(tmp_path / "model")]) == 0
    model = DiT.from_pretrained(tmp_path / "model")
    ema = load_file(str(latest_checkpoint(run) / "ema.safetensors"))
    assert model.config.in_channels == 4 and model.config.text_dim == 8
    for k, v in model.state_dict().items():
        assert torch.equal(v, ema[k]), k
    # A complete model folder for the pipeline: the cache's VAE, the EMA DiT, sizes from the data.
    from soraflow.pipeline import read_config

    assert cli_main(["train", "export-dit", str(run), "-o", str(tmp_path / "pipe"), "--pipeline"]) == 0
    pcfg = read_config(tmp_path / "pipe")
    assert (pcfg.height, pcfg.width, pcfg.fps, pcfg.latent_channels, pcfg.text_encoder) == (32, 48, 8, 4, "fake-words")
    assert torch.equal(DiT.from_pretrained(tmp_path / "pipe" / "dit").proj_out.weight, model.proj_out.weight)
    assert VideoVAE.from_pretrained(tmp_path / "pipe" / "vae").config.z_dim == 4


def test_gradient_checkpointing_gives_the_same_step(tmp_path):
    cache = make_cache(tmp_path / "cache")
    results = []
    for flag in (False, True):
        trainer = DiTTrainer(tiny_config(cache, tmp_path / f"run{flag}", gradient_checkpointing=flag), progress=False)
        batch = collate_latents([trainer.dataset[i] for i in range(6)])
        loss, norm = trainer.train_step(batch)
        results.append((loss, norm, {k: v.clone() for k, v in trainer.model.state_dict().items()}))
    (l0, n0, w0), (l1, n1, w1) = results
    assert l0 == l1 and abs(n0 - n1) <= 1e-5 * n0
    for k in w0:
        torch.testing.assert_close(w1[k], w0[k], atol=1e-6, rtol=1e-5)
