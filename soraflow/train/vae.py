"""Training the causal 3D VAE (``soraflow train vae``).

One step:

1. a batch of random crops: with probability ``image_prob`` single frames (an image is a one-frame
   video, so one model learns both), with probability ``long_prob`` ``long_frames``-frame clips at the
   smaller ``long_crop``, otherwise ``frames``-frame clips; random start, random square crop;
2. reconstruct through a sampled posterior under bf16 autocast;
3. loss = L1 + ssim_weight * (1 - SSIM) + kl_weight * KL (+ adv_weight * hinge generator loss from
   ``adv_start`` on, with a small 3D patch discriminator trained alongside);
4. AdamW with warmup, gradient clipping.

Every random choice of step ``s`` comes from generators seeded with (seed, s), so a resumed run
draws exactly what an uninterrupted one would; with the checkpoint (weights, optimizer, step) resume
is exact. At the end the model is exported to ``RUN/model`` (config.json + safetensors, diffusers
layout) with per-channel latent mean/std measured on the data, ready for ``soraflow eval vae`` and
the DiT's latent cache.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DataError, InputError, SoraflowError, VideoError
from ..atomic import check_output_dir
from ..memory import check_fits
from ..validate import check_device
from ..eval.recon import ssim_loss
from ..models.vae import VideoVAE, vae_config
from .checkpoint import latest_checkpoint, load_checkpoint, load_json, save_checkpoint
from .config import config_to_dict, validate_config
from .optim import build_adamw, lr_multiplier, set_lr
from .vae_config import TrainVAEConfig

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Data


@dataclass
class Clip:
    path: Path
    id: str


def list_clips(data: str | Path) -> list[Clip]:
    """Clips of a SoraWorld dataset (DIR/manifest.jsonl), a folder of videos and images, or one file."""
    from ..data import discover_clips

    # The one manifest reader: a bad line is reported and skipped, as for every other trainer.
    return [Clip(item.path, item.id) for item in discover_clips(data)]


class ClipReader:
    """Reads clips resized to size x size; keeps short ones decoded in memory; skips unreadable ones
    once, reporting each (a corrupt clip must not stop a long run)."""

    def __init__(self, clips: list[Clip], size: int, cache_mb: int, report=print) -> None:
        self.clips, self.size = clips, size
        self.cache: dict[int, np.ndarray] = {}
        self.lengths: dict[int, int] = {}
        self.bad: set[int] = set()
        self.budget = cache_mb * 2**20
        self.report = report

    def good(self) -> list[int]:
        return [i for i in range(len(self.clips)) if i not in self.bad]

    def read(self, i: int, start_frac: float, frames: int) -> np.ndarray | None:
        """``frames`` frames (T, size, size, 3) starting at a fraction of the clip; None if unreadable.
        Clips shorter than ``frames`` are padded by repeating their last frame."""
        from ..video import probe, read_video

        if i in self.bad:
            return None
        clip = self.clips[i]
        try:
            if i in self.cache:
                video = self.cache[i]
            else:
                n = self.lengths.get(i)
                if n is None:
                    n = self.lengths[i] = max(1, probe(clip.path).frames or 1)
                cost = n * self.size * self.size * 3
                if cost <= self.budget:
                    video = read_video(clip.path, size=(self.size, self.size))
                    self.cache[i] = video
                    self.budget -= video.nbytes
                else:  # too long to keep: read only the window
                    start = int(start_frac * max(0, n - frames))
                    info_fps = probe(clip.path).fps or 25.0
                    video = read_video(clip.path, size=(self.size, self.size), start=start / info_fps, max_frames=frames)
                    start_frac = 0.0
        except (VideoError, InputError, OSError) as err:
            self.bad.add(i)
            self.report(f"skipping unreadable clip {clip.path}: {err}")
            return None
        start = int(start_frac * max(0, len(video) - frames))
        out = video[start : start + frames]
        if len(out) < frames:
            out = np.concatenate([out, np.repeat(out[-1:], frames - len(out), axis=0)])
        return out


def sample_batch(reader: ClipReader, cfg: TrainVAEConfig, step: int, *, tries: int = 50) -> torch.Tensor:
    """The batch of optimizer step ``step``: (B, 3, T, crop, crop) in [-1, 1], T = 1, cfg.frames or cfg.long_frames."""
    rng = np.random.default_rng([cfg.seed, step, 1])
    kind = rng.random()
    frames, crop = cfg.frames, cfg.crop or cfg.size
    if kind < cfg.image_prob:
        frames = 1
    elif kind < cfg.image_prob + cfg.long_prob:
        frames, crop = cfg.long_frames, cfg.long_crop
    out = []
    for _ in range(tries * cfg.batch_size):
        if not reader.good():
            raise DataError(f"no readable clips in {cfg.data} ({len(reader.bad)} unreadable)")
        # Draw from all clips and redraw on an unreadable one: the random stream then does not
        # depend on when a bad clip was found, which keeps resumed runs exact.
        i = int(rng.integers(len(reader.clips)))
        start = float(rng.random())
        y, x = (int(v) for v in rng.integers(0, cfg.size - crop + 1, size=2))
        clip = reader.read(i, start, frames)
        if clip is None:
            continue
        out.append(torch.from_numpy(np.ascontiguousarray(clip[:, y : y + crop, x : x + crop])))
        if len(out) == cfg.batch_size:
            break
    if len(out) < cfg.batch_size:
        raise DataError(f"could not read {cfg.batch_size} clips from {cfg.data}")
    batch = torch.stack(out).permute(0, 4, 1, 2, 3).float()  # (B, 3, T, H, W) uint8 values
    return batch / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------
# Discriminator (optional adversarial term)


class PatchDiscriminator3D(nn.Module):
    """A small 3D patch discriminator: strided 3D convs -> a logit per spacetime patch."""

    def __init__(self, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv3d(3, channels, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(layers - 1):
            mods += [nn.Conv3d(c, c * 2, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)), nn.GroupNorm(8, c * 2), nn.LeakyReLU(0.2)]
            c *= 2
        mods.append(nn.Conv3d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1, T, H/2^layers, W/2^layers)


# ----------------------------------------------------------------------------------------------
# Trainer


@dataclass
class VAETrainResult:
    step: int  # optimizer steps done in total
    losses: list[float]  # total loss of each step run in this process
    run_dir: Path
    model_dir: Path | None  # the exported model folder
    skipped: list[str]  # clips that could not be read


# Activation memory of a training step per pixel-frame and per channel of the first stage: measured
# ~180 B for the small preset at base 16 and 32 (fp32, forward + backward), rounded up.
VAE_TRAIN_BYTES = 250


def set_frame_pack(vae: VideoVAE, frame_pack: int) -> VideoVAE:
    """Run ``vae`` frame-wise, ``frame_pack`` frames per latent frame (same weights): its latent statistics
    become the per-frame ones repeated for every slot (re-measured when the run exports)."""
    c = vae.config
    # slot-major channels: the first z_dim entries are a frame's, packed or not
    mean = (c.latents_mean or [0.0] * c.latent_channels)[:c.z_dim]
    std = (c.latents_std or [1.0] * c.latent_channels)[:c.z_dim]
    c.frame_pack = frame_pack
    c.latents_mean, c.latents_std = mean * frame_pack, std * frame_pack
    return vae


def run_model_config(cfg: TrainVAEConfig):
    """The shape a run trains: ``--init``'s (with ``--decoder-base-dim`` if given) or :func:`model_config`."""
    if not cfg.init:
        return model_config(cfg)
    shape = VideoVAE.config_from_pretrained(cfg.init)
    if cfg.decoder_base_dim and cfg.decoder_base_dim != (shape.decoder_base_dim or shape.base_dim):
        shape = dataclasses.replace(shape, decoder_base_dim=cfg.decoder_base_dim)
    return shape


def init_vae(cfg: TrainVAEConfig, shape) -> VideoVAE:
    """``--init``'s VAE; with a decoder of another width, its encoder side (encoder, quant_conv,
    post_quant_conv) and a new, randomly initialised decoder."""
    vae = VideoVAE.from_pretrained(cfg.init)
    if shape == vae.config:
        return vae
    fresh = VideoVAE(shape)
    kept = {k: v for k, v in vae.state_dict().items() if not k.startswith("decoder.")}
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith("decoder.") for k in missing), (missing, unexpected)
    log.info("%s: encoder loaded; a new decoder of width %d", cfg.init, shape.decoder_base_dim)
    return fresh


def model_config(cfg: TrainVAEConfig):
    """The VAE a run trains from scratch: ``cfg.preset`` with ``--base-dim``, ``--z-dim``,
    ``--spatial-factor`` and ``--temporal-factor``. A spatial factor below the preset's drops its
    deepest stages (the widest, at the lowest resolution); a temporal factor of 2 halves time in the
    last downsampling stage only (the cheapest, at the lowest resolution)."""
    overrides = {}
    if cfg.base_dim:
        overrides["base_dim"] = cfg.base_dim
    if cfg.decoder_base_dim:
        overrides["decoder_base_dim"] = cfg.decoder_base_dim
    if cfg.z_dim:
        overrides["z_dim"] = cfg.z_dim
    preset = vae_config(cfg.preset)
    stages = len(preset.dim_mult) - 1
    if cfg.spatial_factor:
        wanted = {4: 2, 8: 3, 16: 4}[cfg.spatial_factor]
        if wanted > stages:
            raise InputError(f"--spatial-factor {cfg.spatial_factor} needs {wanted} downsampling stages; preset {cfg.preset!r} has {stages}")
        overrides["dim_mult"] = list(preset.dim_mult[:wanted + 1])
        overrides["temporal_downsample"] = list(preset.temporal_downsample[stages - wanted:])
        stages = wanted
    if cfg.residual:
        mult = list(overrides.get("dim_mult", preset.dim_mult))
        mult[-1] = min(mult[-1], mult[-2])  # a shortcut that only averages cannot widen: the last stage has no downsampler
        overrides.update(is_residual=True, dim_mult=mult)
    if cfg.temporal_factor:
        halvings = {1: 0, 2: 1, 4: 2}[cfg.temporal_factor]
        if halvings > stages:
            raise InputError(f"--temporal-factor {cfg.temporal_factor} needs {halvings} downsampling stages; preset {cfg.preset!r} has {stages}")
        overrides["temporal_downsample"] = [False] * (stages - halvings) + [True] * halvings
    return vae_config(cfg.preset, **overrides)


def _autocast(cfg: TrainVAEConfig):
    from ..hardware import autocast_dtype

    dtype = autocast_dtype(cfg.precision, cfg.device, model="vae")
    return torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


def salience(x: torch.Tensor, window: int = 31, threshold: float = 0.1, dilate: int = 5) -> torch.Tensor:
    """Where a frame stands out from its surroundings: (B, 1, T, H, W) in [0, 1] for x (B, 3, T, H, W) in [-1, 1].

    1 where a pixel's colour is 1.5 ``threshold`` or more (mean over channels) from the mean of its
    ``window``-pixel neighbourhood, 0 below half of it (faint textures), a ramp between; grown by
    ``dilate`` pixels so that objects' insides count too. SoraWorld's objects cover a few percent of
    a frame, so a plain L1 mostly trains the background: weighting these pixels is what keeps small
    objects' colour and shape (docs/default_model.md, "Objects").
    """
    b, c, t, h, w = x.shape
    frames = x.detach().transpose(1, 2).reshape(b * t, c, h, w).float()
    k = min(window, 2 * (min(h, w) // 2) - 1)
    # box mean and dilation each in two 1D passes: equal to one 2D pass, borders included, and far cheaper
    local = F.avg_pool2d(frames, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)
    local = F.avg_pool2d(local, (1, k), stride=1, padding=(0, k // 2), count_include_pad=False)
    s = ((frames - local).abs().mean(1, keepdim=True) / threshold - 0.5).clamp(0.0, 1.0)
    if dilate > 0:
        s = F.max_pool2d(s, (2 * dilate + 1, 1), stride=1, padding=(dilate, 0))
        s = F.max_pool2d(s, (1, 2 * dilate + 1), stride=1, padding=(0, dilate))
    return s.reshape(b, t, 1, h, w).transpose(1, 2)


def motion(x: torch.Tensor, threshold: float = 0.1, dilate: int = 2) -> torch.Tensor:
    """Where a frame changes from the one before: (B, 1, T, H, W) in [0, 1] for x (B, 3, T, H, W) in [-1, 1].

    1 where the colour changed by 1.5 ``threshold`` or more (mean over channels), 0 below half of it, a
    ramp between, grown by ``dilate`` pixels; frame 0 (nothing before it) is 0. A moving object marks
    both its new place and the one it left: a decoder that carries frame 0's picture forward through its
    causal convolutions (the object left behind, a smear where it went) pays on both.
    """
    d = (x[:, :, 1:] - x[:, :, :-1]).detach().abs().float().mean(1, keepdim=True)  # (B, 1, T-1, H, W)
    m = (d / threshold - 0.5).clamp(0.0, 1.0)
    if dilate > 0 and m.shape[2]:
        m = F.max_pool3d(m, (1, 2 * dilate + 1, 2 * dilate + 1), stride=1, padding=(0, dilate, dilate))
    return torch.cat([m.new_zeros(x.shape[0], 1, 1, *x.shape[3:]), m], dim=2)


def weighted_l1(recon: torch.Tensor, x: torch.Tensor, object_weight: float, motion_weight: float = 0.0) -> torch.Tensor:
    """Mean |recon - x| with pixels weighted 1 + object_weight * salience(x) + motion_weight * motion(x),
    normalised by the mean weight (so 0, 0 is the plain L1 and the scale stays comparable across batches)."""
    err = (recon - x).abs()
    if object_weight <= 0 and motion_weight <= 0:
        return err.mean()
    w = 1.0
    if object_weight > 0:
        w = w + object_weight * salience(x)
    if motion_weight > 0 and x.shape[2] > 1:
        w = w + motion_weight * motion(x)
    if not isinstance(w, torch.Tensor):
        return err.mean()
    return (w * err).mean() / w.mean()


def vae_loss(vae: VideoVAE, x: torch.Tensor, cfg: TrainVAEConfig, generator: torch.Generator, disc: nn.Module | None, adv_on: bool):
    """Loss terms of one batch; returns (total, terms dict of floats, recon)."""
    with _autocast(cfg):
        recon, posterior = vae(x, sample=True, generator=generator, encoder_grad=not cfg.freeze_encoder)
    recon = recon.float()
    l1 = weighted_l1(recon, x, cfg.object_weight, cfg.motion_weight)
    ss = ssim_loss(recon, x) if cfg.ssim_weight > 0 else recon.new_zeros(())
    kl = posterior.kl().mean()
    total = cfg.l1_weight * l1 + cfg.ssim_weight * ss + cfg.kl_weight * kl
    terms = {"l1": l1.item(), "ssim_loss": ss.item(), "kl": kl.item()}
    if disc is not None and adv_on:
        with _autocast(cfg):
            g_adv = -disc(recon).float().mean()
        total = total + cfg.adv_weight * g_adv
        terms["g_adv"] = g_adv.item()
    return total, terms, recon


def train_vae(cfg: TrainVAEConfig, *, stop_after: int | None = None) -> VAETrainResult:
    """Train (or resume) a VAE run in ``cfg.run_dir``; ``stop_after`` ends early after that many
    steps in this process (tests use it to simulate an interruption)."""
    from tqdm import tqdm

    validate_config(cfg)
    if cfg.frames < 1 or (cfg.frames - 1) % 4:
        raise InputError(f"--frames must be 1 + 4k (1, 5, 9, 13, ...), got {cfg.frames}")
    crop = cfg.crop or cfg.size
    if crop > cfg.size or crop % 8:
        raise InputError(f"--crop {crop} must be a multiple of 8 and at most --size {cfg.size}")
    if cfg.long_prob > 0:
        if cfg.long_frames < 1 or (cfg.long_frames - 1) % 4:
            raise InputError(f"--long-prob {cfg.long_prob} needs --long-frames 1 + 4k (5, 9, 13, ...), got {cfg.long_frames}")
        if cfg.long_crop > cfg.size or cfg.long_crop % 8:
            raise InputError(f"--long-crop {cfg.long_crop} must be a multiple of 8 and at most --size {cfg.size}")
        if cfg.image_prob + cfg.long_prob > 1:
            raise InputError(f"--image-prob {cfg.image_prob} and --long-prob {cfg.long_prob} add up to more than 1")
    if cfg.freeze_encoder and not cfg.init:
        raise InputError("--freeze-encoder fine-tunes the decoder of a trained VAE: give it with --init DIR")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Every check before the run folder is made: a refused run leaves nothing behind.
    run_dir = check_output_dir(cfg.run_dir, "--run-dir")
    clips = list_clips(cfg.data)
    if cfg.init and (cfg.base_dim or cfg.temporal_factor or cfg.spatial_factor or cfg.z_dim or cfg.residual):
        raise InputError("--base-dim, --z-dim, --spatial-factor, --temporal-factor and --residual shape a new VAE; --init takes the shape of the VAE it loads")
    device = check_device(cfg.device)
    shape = run_model_config(cfg)
    shapes = [(cfg.frames, cfg.crop or cfg.size)] + ([(cfg.long_frames, cfg.long_crop)] if cfg.long_prob > 0 else [])
    frames, side = max(shapes, key=lambda fs: fs[0] * fs[1] ** 2)
    check_fits(f"a VAE training step of batch {cfg.batch_size} x {frames} frames x {side}x{side} px",
               cfg.batch_size * frames * side * side * shape.base_dim * VAE_TRAIN_BYTES, device)
    run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    vae = init_vae(cfg, shape) if cfg.init else VideoVAE(shape)
    if cfg.frame_pack and vae.config.frame_pack != cfg.frame_pack:
        set_frame_pack(vae, cfg.frame_pack)
    vae.to(device).train()
    if cfg.freeze_encoder:  # only the decoder side learns; the encoder's latents stay what they were
        for module in (vae.encoder, vae.quant_conv):
            module.requires_grad_(False)
    if device.type == "cpu":
        vae.to_channels_last()  # fp32 steps 1.28x faster on a CPU (benchmarks/bench_vae_train.py), same numbers up to rounding
    opt = build_adamw(vae, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    disc = PatchDiscriminator3D().to(device) if cfg.adv_weight > 0 else None
    modules: dict[str, nn.Module] = {"vae": vae}
    optimizers: dict[str, torch.optim.Optimizer] = {"vae": opt}
    if disc is not None:
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
        modules["disc"], optimizers["disc"] = disc, disc_opt

    step = 0
    last = latest_checkpoint(run_dir)
    if last is not None:
        # The model options first: weights of another shape would only say which tensors differ.
        saved = load_json(last / "config.json") if (last / "config.json").is_file() else {}
        saved = saved if isinstance(saved, dict) else {}
        shape = ("preset", "init", "base_dim", "decoder_base_dim", "temporal_factor", "spatial_factor", "z_dim", "residual")
        saved_model = tuple(saved.get(k, 0 if k in shape[2:] else None) for k in shape)
        wanted = (cfg.preset, str(cfg.init) if cfg.init else None, cfg.base_dim, cfg.decoder_base_dim, cfg.temporal_factor,
                  cfg.spatial_factor, cfg.z_dim, cfg.residual)
        if saved_model != wanted:
            raise InputError(f"{run_dir} holds a run of another model ({', '.join(f'{k} {v!r}' for k, v in zip(shape, saved_model))}); "
                             f"use another --run-dir or the same model options")
        loaded = load_checkpoint(last, modules=modules, optimizers=optimizers)
        step = loaded.step
        log.info("resumed %s at step %d", last, step)
    if step >= cfg.steps:
        log.info("%s is already at step %d of %d; exporting the model only", run_dir, step, cfg.steps)

    messages: list[str] = []
    bar = tqdm(total=cfg.steps, initial=step, desc="train vae", unit="step", disable=not cfg.progress, dynamic_ncols=True)

    def report(msg: str) -> None:
        messages.append(msg)
        bar.write(msg) if cfg.progress else log.warning(msg)

    if last is not None:
        report(f"resuming {last} at step {step}")
    reader = ClipReader(clips, cfg.size, cfg.cache_mb, report=report)
    if last is not None:  # clips found unreadable before the interruption are not re-read
        known = set(loaded.extra.get("skipped_clips", []))
        reader.bad = {i for i, c in enumerate(clips) if str(c.path) in known}
    writer = _tensorboard(run_dir)
    losses: list[float] = []
    done_here = 0
    t_last, clips_since = time.perf_counter(), 0
    ckpt = None
    try:
        while step < cfg.steps and (stop_after is None or done_here < stop_after):
            x = sample_batch(reader, cfg, step).to(device)
            gen = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + step)  # posterior noise is drawn on the device
            adv_on = disc is not None and step >= cfg.adv_start
            set_lr(opt, cfg.lr * lr_multiplier(step, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, min_ratio=0.1))
            total, terms, recon = vae_loss(vae, x, cfg, gen, disc, adv_on)
            if not math.isfinite(total.item()):
                raise SoraflowError(f"loss became {total.item()} at step {step}; lower --lr or use --precision fp32")
            opt.zero_grad(set_to_none=True)
            total.backward()
            if cfg.grad_clip > 0:
                terms["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip))
            opt.step()
            if adv_on:
                terms["d_loss"] = _disc_step(disc, disc_opt, x, recon.detach(), cfg)
            step += 1
            done_here += 1
            losses.append(total.item())
            clips_since += x.shape[0]
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                rate = clips_since / max(now - t_last, 1e-9)
                t_last, clips_since = now, 0
                bar.set_postfix(loss=f"{total.item():.4f}", l1=f"{terms['l1']:.4f}", clips_s=f"{rate:.2f}")
                if writer is not None:
                    writer.add_scalar("loss/total", total.item(), step)
                    for k, v in terms.items():
                        writer.add_scalar(f"loss/{k}", v, step)
                    writer.add_scalar("lr", opt.param_groups[0]["lr"], step)
                    writer.add_scalar("throughput/clips_per_s", rate, step)
            if step % cfg.sample_every == 0 or step == cfg.steps:
                save_side_by_side(vae, x, recon, run_dir / "samples" / f"step_{step:08d}.png")
            if step % cfg.save_every == 0 or step == cfg.steps:
                ckpt = _save(run_dir, step, modules, optimizers, cfg, reader)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if ckpt is None and done_here:
        ckpt = _save(run_dir, step, modules, optimizers, cfg, reader)
    model_dir = None
    if step >= cfg.steps:
        model_dir = export_model(vae, reader, cfg, run_dir / "model")
    skipped = [str(reader.clips[i].path) for i in sorted(reader.bad)]
    return VAETrainResult(step=step, losses=losses, run_dir=run_dir, model_dir=model_dir, skipped=skipped)


def _disc_step(disc, disc_opt, real, fake, cfg) -> float:
    with _autocast(cfg):
        loss = F.relu(1.0 - disc(real)).float().mean() + F.relu(1.0 + disc(fake)).float().mean()  # hinge
    disc_opt.zero_grad(set_to_none=True)
    loss.backward()
    disc_opt.step()
    return loss.item()


def _save(run_dir, step, modules, optimizers, cfg, reader) -> Path:
    extra = {"skipped_clips": [str(reader.clips[i].path) for i in sorted(reader.bad)]}
    return save_checkpoint(run_dir, step, modules=modules, optimizers=optimizers, config=config_to_dict(cfg), extra=extra, keep_last=cfg.keep_last)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
        log.warning("tensorboard is not importable; no TensorBoard logs")
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


@torch.no_grad()
def save_side_by_side(vae: VideoVAE, x: torch.Tensor, recon: torch.Tensor, path: Path, max_items: int = 4, max_frames: int = 5) -> Path:
    """PNG grid: for each clip a row of input frames above a row of its reconstruction."""
    from ..video import write_image

    path.parent.mkdir(parents=True, exist_ok=True)
    x, recon = x[:max_items, :, :max_frames].float(), recon[:max_items, :, :max_frames].float().clamp(-1, 1)
    rows = []
    for a, b in zip(x, recon):
        rows += [torch.cat(list(a.unbind(1)), dim=2), torch.cat(list(b.unbind(1)), dim=2)]  # (3, H, T*W) each
    grid = torch.cat(rows, dim=1)  # (3, 2*B*H, T*W)
    img = ((grid + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return write_image(path, img)


@torch.no_grad()
def measure_latent_stats(vae: VideoVAE, reader: ClipReader, cfg: TrainVAEConfig) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of posterior means over ``cfg.stats_batches`` batches."""
    zs = []
    for k in range(cfg.stats_batches):
        x = sample_batch(reader, cfg, 10_000_000 + k).to(cfg.device)
        with _autocast(cfg):
            zs.append(vae.encode(x, chunk_frames=None, tiled=False).mean.float())
    z = torch.cat([t.transpose(0, 1).flatten(1) for t in zs], dim=1)  # (C, N)
    return z.mean(1).tolist(), z.std(1).clamp_min(1e-4).tolist()


def export_model(vae: VideoVAE, reader: ClipReader, cfg: TrainVAEConfig, out: Path) -> Path:
    """Write the trained VAE as a model folder, with latent statistics measured on the data."""
    vae.eval()
    if cfg.stats_batches > 0 and not cfg.freeze_encoder:  # a frozen encoder keeps --init's statistics
        mean, std = measure_latent_stats(vae, reader, cfg)
        vae.config.latents_mean, vae.config.latents_std = [round(v, 5) for v in mean], [round(v, 5) for v in std]
    return vae.save_pretrained(out)
