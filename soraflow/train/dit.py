"""Training the diffusion transformer on a latent cache with rectified flow (``soraflow train dit``).

One step (see :meth:`DiTTrainer.train_step`):

1. a batch of one latent shape from the :class:`~soraflow.data.BucketSampler` (native sizes mixed
   across batches);
2. a timestep per sample (logit-normal, shifted by the grid size) and a conditioning mask per sample
   (:mod:`soraflow.train.masks`): given latent frames get t = 0;
3. ``x_t = (1 - t) x0 + t noise`` per frame, captions dropped to the null caption with
   ``caption_dropout`` (classifier-free guidance needs the unconditional model);
4. the DiT predicts the velocity under bf16 autocast; the loss is the squared error over the
   generated frames only (with ``object_weight``, latent cells that stand out from their
   surroundings weigh more: :func:`latent_salience`); AdamW with warmup + cosine, gradient
   clipping, EMA.

Resume is exact: a checkpoint holds weights, EMA, optimizer, every RNG (the trainer's own generator
included), the data position (epoch and batches consumed) and the resolved config, so 10 steps,
a hard kill and 10 resumed steps give the same weights as 20 steps straight (tested bitwise).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .. import flow
from ..data import STILL_SUFFIX, BucketSampler, LatentBatch, LatentDataset, collate_latents, latent_tokens
from ..latents import decode_latents
from ..errors import CheckpointError, DataError, InputError, SoraflowError
from ..atomic import check_output_dir
from ..validate import check_device
from ..models.dit import DiT, dit_config
from .checkpoint import latest_checkpoint, load_checkpoint, load_json, resolve_checkpoint, save_checkpoint
from .config import config_from_dict, config_to_dict, validate_config
from .dit_config import MaskConfig, TrainDiTConfig
from .ema import EMA
from .masks import frame_timesteps, sample_given_masks
from .optim import build_adamw, lr_multiplier, set_lr

log = logging.getLogger(__name__)


def latent_salience(z: torch.Tensor, window: int = 5, low: float = 3.0, high: float = 6.0, floor: float = 0.05) -> torch.Tensor:
    """Where a latent frame stands out from its surroundings: (B, 1, T, H, W) in [0, 1] for normalised
    latents z (B, C, T, H, W).

    A cell's distance from the median of its ``window`` x ``window`` neighbourhood in its frame (mean
    over channels; borders replicated), in units of the frame's median such distance (at least
    ``floor``): 0 up to ``low``, 1 from ``high``, a ramp between. The neighbourhood's median, unlike its
    mean, is the background's value even where an object fills part of the window; the frame's median
    distance is how textured the background is (SoraWorld's: 0.04 for flat colours to 0.26 for tiles, in
    normalised latent units), so texture does not count as objects. Objects cover a few percent of the
    cells (on the default model's training cache 7% of the cells reach the ramp, 1.4% its top), so a
    plain loss mostly trains the background: the model learns the scene and leaves the objects out
    (docs/default_model.md, "Objects").
    """
    b, c, t, h, w = z.shape
    k = max(1, min(window, 2 * (min(h, w) // 2) + 1))  # odd, and the replicate padding fits the frame
    frames = z.detach().float().transpose(1, 2).reshape(b * t, c, h, w)
    padded = torch.nn.functional.pad(frames, (k // 2,) * 4, mode="replicate")
    local = torch.nn.functional.unfold(padded, k).view(b * t, c, k * k, h * w).median(2).values.view(b * t, c, h, w)
    d = (frames - local).abs().mean(1).flatten(1)  # (B*T, H*W)
    r = d / d.median(1, keepdim=True).values.clamp_min(floor)
    s = ((r - low) / (high - low)).clamp(0.0, 1.0)
    return s.view(b, t, h, w)[:, None]


SALIENCE_MEMO_BYTES = 1 << 30  # 1 GiB of fp16 salience maps: 58,000 clips of 9 x 32 x 32 latent cells
SALIENCE_NAME = "salience.safetensors"  # the maps, in the run folder, keyed by clip id, with each clip's latent CRC
SALIENCE_GLOB = "salience*.safetensors"  # with a distributed run's salience.rankN.safetensors


class TrainingError(SoraflowError):
    """A run that cannot go on: a NaN or infinite loss, gradients that blew up."""


@dataclass
class TrainResult:
    """What :func:`soraflow.train.launch.train_dit` returns."""

    step: int  # optimizer steps done in total
    loss: float  # loss of the last step
    losses: list[float]  # loss of every step run in this process
    run_dir: Path
    checkpoint: Path | None  # the last checkpoint written
    stopped: bool = False  # SIGTERM ended the run early (after a checkpoint of the step it was at)


@contextlib.contextmanager
def sigterm_requests_stop():
    """While inside, SIGTERM does not kill the process: it appends to the yielded list, which the
    training loop checks after each step, so a stopped run saves the step it reached (a checkpoint is
    every ``checkpoint_every`` steps, which can be many minutes of work) and then exits."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield requested
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.append(signum))
    try:
        yield requested
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------------------------


def _generator_state(g: torch.Generator) -> str:
    return base64.b64encode(g.get_state().numpy().tobytes()).decode()


def _set_generator_state(g: torch.Generator, state: str) -> None:
    g.set_state(torch.from_numpy(np.frombuffer(base64.b64decode(state), dtype=np.uint8).copy()))


class DiTTrainer:
    """Builds everything from a :class:`TrainDiTConfig` and runs the loop; see :func:`soraflow.train.launch.train_dit`.

    ``on_step(trainer, step, loss)`` runs after every step and ``on_checkpoint(trainer, step, path)``
    after every checkpoint (hooks for tests and notebooks).
    """

    def __init__(
        self,
        cfg: TrainDiTConfig,
        *,
        progress: bool = True,
        on_step: Callable | None = None,
        on_checkpoint: Callable | None = None,
    ):
        validate_config(cfg)
        self.cfg = cfg
        self.progress = progress
        self.on_step = on_step
        self.on_checkpoint = on_checkpoint
        self.run_dir = check_output_dir(cfg.out, "--out")
        self.device = check_device(cfg.device)

        # 1. Data (an empty or missing cache is a DataError here, before anything is built).
        self.dataset = LatentDataset(cfg.data, caption=cfg.caption, short_caption_prob=cfg.short_caption_prob, seed=cfg.seed,
                                     still_views=cfg.still_views)
        null = self.dataset.null_text()
        if null is None:  # a cache without a null caption: an empty context with one masked-out token
            null = torch.zeros(1, self.dataset.text_dim)
            self.null_mask = torch.zeros(1, 1, dtype=torch.bool)
        else:
            self.null_mask = torch.ones(1, null.shape[0], dtype=torch.bool)
        self.null_context = null[None]  # (1, L0, D)

        # 2. Model, EMA, optimizer. The weights are initialised from the seed alone (not from the
        # global RNG state at call time) so a run is reproducible from its config.
        latent_channels = self.dataset.latent_channels
        if cfg.lora:  # the adapter's base is --init's DiT as it is: its own shape, not a preset's
            self.model = DiT.from_pretrained(cfg.init, dtype=torch.float32)
            self.model_config = self.model.config
            got = (self.model_config.in_channels, self.model_config.text_dim)
            if got != (latent_channels, self.dataset.text_dim):
                raise InputError(f"--init {cfg.init} takes {got[0]} latent channels and {got[1]}-wide text; the cache "
                                 f"{cfg.data} has {latent_channels} and {self.dataset.text_dim} (another VAE or text encoder?)")
        else:
            self.model_config = dit_config(
                cfg.preset, **cfg.model_overrides(), in_channels=latent_channels, out_channels=latent_channels,
                text_dim=self.dataset.text_dim,
            )
            from ..memory import TRAIN_BYTES_PER_PARAM, check_fits, count_parameters

            params = count_parameters(DiT, self.model_config.num_layers, self.model_config)
            check_fits(f"training this DiT ({params / 1e6:,.0f} M parameters: weights, gradients, AdamW moments, EMA)",
                       params * TRAIN_BYTES_PER_PARAM, self.device)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.model = DiT(self.model_config)
            if cfg.init is not None:
                self._load_init(cfg.init)
        self.model.gradient_checkpointing = cfg.gradient_checkpointing
        # batches sized by the model's own tokens: a sample's tokens depend on the patch size
        self.sampler = BucketSampler(
            self.dataset.shapes, tokens_per_batch=cfg.batch_tokens, patch_size=self.model_config.patch_size,
            max_batch_size=cfg.max_batch_size, seed=cfg.seed,
        )
        # What the optimizer trains and a checkpoint holds: the whole DiT, or with --lora only the
        # adapters (the frozen base comes from --init again on resume). A LoRA run keeps no EMA: it
        # is short, and an average over it would mostly be the zero start.
        self.trained, self.module_name = self.model, "dit"
        if cfg.lora:
            from ..lora import LoRAParameters, add_lora

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                add_lora(self.model, cfg.lora, alpha=cfg.lora_alpha, targets=cfg.lora_targets.split(","))
            self.trained, self.module_name = LoRAParameters(self.model), "lora"
        self.model.to(self.device).train()
        self.ema = EMA(self.model, cfg.ema_decay, warmup_steps=cfg.ema_warmup_steps) if not cfg.lora else None
        self.optimizer = build_adamw(
            self.trained, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2)
        )
        # All training randomness comes from self.generator (its state is saved in every checkpoint):
        # small draws (timesteps, masks, caption dropout) directly; the noise too on a CPU, and on an
        # accelerator from a device generator re-seeded from it every step (noise is drawn where it is
        # used, and one CPU state still defines the whole stream).
        self.generator = torch.Generator().manual_seed(cfg.seed)
        on_cpu = self.device.type == "cpu"
        self.noise_generator = self.generator if on_cpu else torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self.step = 0
        self.epoch = 0
        self.consumed = 0  # batches of the current epoch consumed (the data position)
        self.last_checkpoint: Path | None = None
        self.vae = None
        self._salience: dict[str, torch.Tensor] = {}  # clip id -> latent_salience, fp16 on the CPU
        self._salience_bytes = 0
        self._salience_saved = 0  # maps in the run folder's SALIENCE_NAME
        if cfg.object_weight > 0:
            self._load_salience()

    # ------------------------------------------------------------------------------------------

    def _modules(self) -> dict:
        return {self.module_name: self.trained, **({"ema": self.ema} if self.ema is not None else {})}

    def _load_init(self, path: Path) -> None:
        from .checkpoint import load_state_dict_checked

        src = DiT.from_pretrained(path)
        state = src.state_dict()
        added = [k for k in self.model.state_dict() if k.startswith("condition_embedder.text_pooler.") and k not in state]
        if added:  # --pooled-text on weights trained without it: the new path starts at zero (outputs unchanged)
            print(f"--init {path}: no text pooler there; it starts from its zero init", flush=True)
            state.update({k: v for k, v in self.model.state_dict().items() if k in added})
        load_state_dict_checked(self.model, state, source=f"--init {path}")

    def resume(self) -> bool:
        """Restore the latest checkpoint of the run folder, if any. Returns whether one was loaded."""
        latest = latest_checkpoint(self.run_dir)
        if latest is None:
            return False
        loaded = load_checkpoint(latest, modules=self._modules(), optimizers={"adamw": self.optimizer})
        extra = loaded.extra
        self.step = loaded.step
        self.epoch = int(extra.get("epoch", 0))
        self.consumed = int(extra.get("consumed", 0))
        if "generator" in extra:
            _set_generator_state(self.generator, extra["generator"])
        if extra.get("dataset_size", len(self.dataset)) != len(self.dataset):
            log.warning(
                "the latent cache has %d usable entries, the run had %d when it was saved: the data order changes",
                len(self.dataset), extra["dataset_size"],
            )
        if self.ema is not None:
            self.ema.load_state(extra.get("ema", {}))
        self.last_checkpoint = latest
        saved = loaded.config
        for key in ("seed", "batch_tokens", "max_batch_size"):
            if key in saved and saved[key] != getattr(self.cfg, key):
                log.warning("resuming with --%s %s (the run started with %s): the data order changes", key.replace("_", "-"), getattr(self.cfg, key), saved[key])
        return True

    def save(self) -> Path:
        path = save_checkpoint(
            self.run_dir,
            self.step,
            modules=self._modules(),
            optimizers={"adamw": self.optimizer},
            config=config_to_dict(self.cfg),
            extra={
                "epoch": self.epoch,
                "consumed": self.consumed,
                "generator": _generator_state(self.generator),
                "dataset_size": len(self.dataset),
                "ema": self.ema.state() if self.ema is not None else {},
                "model_config": self.model_config.to_dict(),
                "text": self.dataset.index.get("text", {}),
                "vae": self.dataset.index.get("vae", {}),
            },
            keep_last=self.cfg.keep_last,
        )
        self.last_checkpoint = path
        self._save_salience()
        if self.on_checkpoint is not None:
            self.on_checkpoint(self, self.step, path)
        return path

    # ------------------------------------------------------------------------------------------

    def shift_for(self, batch: LatentBatch) -> float:
        if self.cfg.timestep_shift is not None:
            return self.cfg.timestep_shift
        return flow.shift_for(latent_tokens(batch.latents.shape[2:], self.model_config.patch_size))

    def autocast(self):
        from ..hardware import autocast_dtype

        enabled = autocast_dtype(self.cfg.precision, self.device, model="dit") == torch.bfloat16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self, batch: LatentBatch) -> tuple[float, float]:
        """One optimizer step on ``batch``; returns (loss, gradient norm before clipping)."""
        cfg, g = self.cfg, self.generator
        x0 = batch.latents.to(self.device)  # (B, C, T, H, W)
        B, _, T = x0.shape[:3]
        set_lr(self.optimizer, cfg.lr * lr_multiplier(self.step, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, min_ratio=cfg.min_lr_ratio))

        # Timesteps, conditioning masks, the noisy path, caption dropout: all from the trainer's generator.
        t = flow.sample_timesteps(B, shift=self.shift_for(batch), mean=cfg.logit_mean, std=cfg.logit_std,
                                  terminal=cfg.terminal_prob, generator=g)  # (B,)
        given, _ = sample_given_masks(B, T, cfg.mask, g)  # (B, T) bool
        given = given.to(self.device)
        t_frames = frame_timesteps(t.to(self.device), given)  # (B, T), 0 on given frames
        if self.noise_generator is not g:
            self.noise_generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
        path = flow.sample_path(x0, t_frames, generator=self.noise_generator)  # xt equals x0 exactly on given frames
        context, context_mask, _ = flow.drop_condition(
            batch.context.to(self.device), batch.context_mask.to(self.device),
            self.null_context.to(self.device), self.null_mask.to(self.device), cfg.caption_dropout, g,
        )

        with self.autocast():
            pred = self.model(path.xt, t_frames, context, context_mask)  # (B, C, T, H, W)
        weight = 1.0 + cfg.object_weight * self.salience(batch) if cfg.object_weight > 0 else None
        loss = flow.flow_loss(pred, path.target, frame_mask=~given, weight=weight)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise self._diverged(f"the loss is {loss_value}", batch)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_([p for p in self.trained.parameters() if p.requires_grad], max_norm))
        if not math.isfinite(grad_norm):
            raise self._diverged(f"the gradient norm is {grad_norm}", batch)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss_value, grad_norm

    def salience(self, batch: LatentBatch) -> torch.Tensor:
        """:func:`latent_salience` of the batch's clean latents (B, 1, T, H, W), each clip's computed once.

        A clip's latent is the same every epoch (the cache holds no augmentation), and its salience (a
        median over 25 neighbours in every channel) costs more than the step itself on 64-channel
        latents (1.1 s a 576-token clip on one thread against 0.25 s a step), so it is kept, in fp16 on
        the CPU, up to SALIENCE_MEMO_BYTES in all, and saved with every checkpoint (SALIENCE_NAME in the
        run folder) for the runs that resume from it."""
        out = []
        for i, clip in enumerate(batch.ids):
            s = self._salience.get(clip)
            if s is None:
                s = latent_salience(batch.latents[i : i + 1]).to("cpu", torch.float16)
                self._remember_salience(clip, s)
            out.append(s)
        return torch.cat(out).to(self.device, torch.float32)

    def _remember_salience(self, clip: str, s: torch.Tensor) -> None:
        if self._salience_bytes + s.nbytes <= SALIENCE_MEMO_BYTES:
            self._salience[clip] = s
            self._salience_bytes += s.nbytes

    def _salience_crcs(self) -> dict[str, int]:
        return {e.id: e.crc32 for e in self.dataset.entries if e.crc32}

    def _load_salience(self) -> None:
        """The maps a run folder keeps from before (a resumed run does not compute them again); a map
        whose clip's latent changed (its CRC in the cache) is left out."""
        import json

        from safetensors import SafetensorError, safe_open

        crcs = self._salience_crcs()
        for path in sorted(self.run_dir.glob(SALIENCE_GLOB)):  # one file per rank of a distributed run
            try:
                with safe_open(str(path), framework="pt") as f:
                    saved = json.loads((f.metadata() or {}).get("crc", "{}"))
                    for clip in f.keys():
                        crc = crcs.get(clip.removesuffix(STILL_SUFFIX))
                        if crc and saved.get(clip) == crc and clip not in self._salience:
                            self._remember_salience(clip, f.get_tensor(clip))
            except (SafetensorError, OSError, ValueError) as err:
                log.warning("%s is unreadable (%s); its salience maps are computed again", path, " ".join(str(err).split()))
        self._salience_saved = len(self._salience)

    def _salience_path(self) -> Path:
        return self.run_dir / SALIENCE_NAME

    def _save_salience(self) -> None:
        import json

        from safetensors.torch import save_file

        from ..atomic import atomic_path

        if len(self._salience) == self._salience_saved:
            return
        crcs = self._salience_crcs()
        maps = {k: v.contiguous() for k, v in self._salience.items() if crcs.get(k.removesuffix(STILL_SUFFIX))}
        meta = {"crc": json.dumps({k: crcs[k.removesuffix(STILL_SUFFIX)] for k in maps})}
        with atomic_path(self._salience_path()) as tmp:
            save_file(maps, str(tmp), metadata=meta)
        self._salience_saved = len(self._salience)

    def _diverged(self, what: str, batch: LatentBatch) -> TrainingError:
        keep = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written yet"
        ids = ", ".join(batch.ids[:3])
        return TrainingError(
            f"{what} at step {self.step + 1} (batch {ids}); training stopped without saving, {keep}. "
            "Lower --lr, raise --warmup-steps or check the latent cache"
        )

    # ------------------------------------------------------------------------------------------

    def batches(self) -> Iterator[LatentBatch]:
        """Batches from the saved data position on, epoch after epoch (endless).

        Keeps ``self.epoch`` / ``self.consumed`` (batches of the epoch taken so far) current: they
        are what a checkpoint saves, so a resumed run continues with the next batch.
        """
        while True:
            self.sampler.set_epoch(self.epoch)
            self.dataset.set_epoch(self.epoch)
            self.sampler.load_state_dict({"seed": self.cfg.seed, "epoch": self.epoch, "start": self.consumed})
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=self.sampler, collate_fn=collate_latents, num_workers=self.cfg.num_workers,
            )
            resumed_mid_epoch, yielded = self.consumed > 0, False
            for batch in loader:
                self.consumed += 1
                if batch is not None:  # None: every entry of it was corrupt (already reported)
                    yielded = True
                    yield batch
            if not yielded and not resumed_mid_epoch:
                raise DataError(f"a whole epoch of {self.cfg.data} gave no usable batch (every entry corrupt?)")
            self.epoch += 1
            self.consumed = 0

    def run(self) -> TrainResult:
        """Resume if configured, train to ``--steps`` (or ``--stop-at-step``), checkpoint, return."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        old_threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if cfg.resume:
                self.resume()
            elif latest_checkpoint(self.run_dir) is not None:
                # Starting over here would interleave new checkpoints with the old run's.
                raise InputError(
                    f"{self.run_dir} already holds checkpoints (latest {latest_checkpoint(self.run_dir).name}); "
                    "resume it (drop --no-resume) or choose a new --out"
                )
            if cfg.vae is not None and cfg.sample_every:
                self._load_vae()
            stop = min(cfg.steps, cfg.stop_at_step or cfg.steps)
            losses: list[float] = []
            writer = self._tensorboard()
            bar = tqdm(total=stop, initial=self.step, desc="training DiT", unit="step", disable=not self.progress, dynamic_ncols=True)
            smooth = None
            with contextlib.ExitStack() as stack:
                stop_requested = stack.enter_context(sigterm_requests_stop())
                stack.callback(bar.close)
                if writer is not None:
                    stack.callback(writer.close)
                for batch in self.batches() if self.step < stop else ():
                    t0 = time.perf_counter()
                    loss, grad_norm = self.train_step(batch)
                    dt = time.perf_counter() - t0
                    self.step += 1
                    losses.append(loss)
                    smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
                    lr = self.optimizer.param_groups[0]["lr"]
                    bar.update(1)
                    bar.set_postfix(loss=f"{smooth:.4f}", samples_s=f"{len(batch) / dt:.1f}", lr=f"{lr:.2e}")
                    if writer is not None and (self.step % cfg.log_every == 0 or self.step == stop):
                        self._log_scalars(writer, batch, loss=loss, grad_norm=grad_norm, lr=lr, seconds=dt)
                    if self.on_step is not None:
                        self.on_step(self, self.step, loss)
                    if self.step % cfg.checkpoint_every == 0 or self.step == stop:
                        self.save()
                    if cfg.sample_every and self.vae is not None and self.step % cfg.sample_every == 0:
                        self.write_samples(writer)
                    if self.step >= stop:
                        break
                    if stop_requested:
                        log.warning("SIGTERM at step %d: saving a checkpoint, then stopping", self.step)
                        break
            if self.last_checkpoint is None or self.last_checkpoint.name != f"step_{self.step:08d}":
                self.save()
            if cfg.lora:
                from ..lora import save_lora

                save_lora(self.model, self.run_dir / "lora", metadata={"step": self.step, "rank": cfg.lora, "init": cfg.init})
            return TrainResult(
                step=self.step, loss=losses[-1] if losses else float("nan"), losses=losses,
                run_dir=self.run_dir, checkpoint=self.last_checkpoint, stopped=bool(stop_requested),
            )
        finally:
            torch.set_num_threads(old_threads)

    def _log_scalars(self, writer, batch: LatentBatch, *, loss: float, grad_norm: float, lr: float, seconds: float) -> None:
        tokens = len(batch) * latent_tokens(batch.latents.shape[2:], self.model_config.patch_size)
        for name, value in (
            ("loss", loss), ("lr", lr), ("grad_norm", grad_norm), ("samples_per_s", len(batch) / seconds),
            ("tokens_per_s", tokens / seconds), ("batch_size", len(batch)), ("epoch", self.epoch),
        ):
            writer.add_scalar(f"train/{name}", value, self.step)

    def _tensorboard(self):
        if not self.cfg.tensorboard:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=self.step + 1 if self.step else None)

    # ------------------------------------------------------------------------------------------
    # Sample videos

    def _load_vae(self) -> None:
        from ..models.vae import VideoVAE

        self.vae = VideoVAE.from_pretrained(self.cfg.vae).to(self.device).eval()
        if self.vae.config.latent_channels != self.dataset.latent_channels:
            raise InputError(
                f"--vae {self.cfg.vae} has {self.vae.config.latent_channels} latent channels, the cache has {self.dataset.latent_channels}"
            )

    @torch.no_grad()
    def write_samples(self, writer=None) -> list[Path]:
        """Sample with the EMA weights from the captions and shapes of the first cache entries, decode
        with the VAE and write MP4s to OUT/samples/. Uses its own seeded noise: training RNG untouched."""
        from .. import video

        cfg = self.cfg
        out_dir = self.run_dir / "samples"
        out_dir.mkdir(parents=True, exist_ok=True)
        model = self.ema.module if self.ema is not None else self.model  # a LoRA run: the current adapter
        paths = []
        for i in range(min(cfg.sample_count, len(self.dataset))):
            item = self.dataset[i]
            if item is None:
                continue
            g = torch.Generator(device=self.device).manual_seed(cfg.seed + i)
            noise = torch.randn((1, *item.latent.shape), generator=g, device=self.device)
            cond = {"context": item.text[None].to(self.device), "context_mask": torch.ones(1, item.text.shape[0], dtype=torch.bool, device=self.device)}
            if item.text.shape[0] == 0:
                cond = {"context": self.null_context.to(self.device), "context_mask": self.null_mask.to(self.device)}
            uncond = {"context": self.null_context.to(self.device), "context_mask": self.null_mask.to(self.device)}

            def model_fn(x, t, context, context_mask):
                with self.autocast():
                    return model(x, t, context, context_mask)

            shift = cfg.timestep_shift or flow.shift_for(latent_tokens(item.latent.shape[1:], self.model_config.patch_size))
            z = flow.sample(model_fn, noise, steps=cfg.sample_steps, shift=shift, guidance_scale=cfg.sample_guidance, cond=cond, uncond=uncond, progress=False)
            frames = decode_latents(self.vae, z.float())  # the pipeline's decode: uint8 (T, H, W, 3)
            suffix = ".png" if frames.shape[0] == 1 else ".mp4"
            path = out_dir / f"step_{self.step:08d}_{i}{suffix}"
            if suffix == ".png":
                video.write_image(path, frames[0])
            else:
                video.write_video(path, frames, fps=item.fps or 8)
            path.with_suffix(".txt").write_text(item.caption + "\n")
            paths.append(path)
            if writer is not None:
                writer.add_image(f"samples/{i}", frames[0], self.step, dataformats="HWC")
        return paths


def checkpoint_config(run_or_checkpoint: str | os.PathLike) -> TrainDiTConfig | None:
    """The resolved config saved with a run's latest checkpoint (None if the run has none)."""
    path = Path(run_or_checkpoint)
    if not (path / "checkpoint.json").is_file() and latest_checkpoint(path) is None:
        return None
    ckpt = resolve_checkpoint(path)
    saved = load_json(ckpt / "config.json")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{ckpt / 'config.json'} is not a JSON object")
    return config_from_dict(TrainDiTConfig, saved, strict=False, where=str(ckpt / "config.json"))


def _checkpoint_dit(ckpt: Path, ema: bool) -> tuple[DiT, dict]:
    """The (EMA) DiT of a training checkpoint, and the checkpoint's extra.json."""
    from ..models.dit import DiTConfig

    extra = load_json(ckpt / "extra.json")
    if not isinstance(extra, dict) or "model_config" not in extra:
        raise InputError(f"{ckpt} is not a DiT training checkpoint (no model_config in extra.json)")
    model = DiT(DiTConfig.from_dict(extra["model_config"], source=str(ckpt / "extra.json")))
    load_checkpoint(ckpt, modules={"ema" if ema else "dit": model}, restore_rng=False)
    return model, extra


def export_dit(
    run_or_checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, ema: bool = True
) -> Path:
    """Write the (EMA) weights of a training checkpoint as a standalone DiT folder for inference
    (config.json + safetensors, loadable with ``DiT.from_pretrained``)."""
    from ..atomic import write_json

    ckpt = resolve_checkpoint(run_or_checkpoint)
    if (ckpt / "lora.safetensors").is_file():
        return export_lora(ckpt, out_dir)
    model, extra = _checkpoint_dit(ckpt, ema)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    # Which text encoder and VAE the weights were trained with, for a pipeline to load them.
    write_json(
        out_dir / "training.json",
        {"checkpoint": str(ckpt), "weights": "ema" if ema else "dit", "text": extra.get("text", {}),
         "vae": extra.get("vae", {})},
    )
    return out_dir


def export_lora(run_or_checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the adapter of a ``--lora`` run's checkpoint as OUT/pytorch_lora_weights.safetensors
    (diffusers' Wan keys, the alpha / rank scaling folded in). Returns the folder."""
    from safetensors.torch import load_file, save_file

    from ..atomic import atomic_path
    from ..lora import WEIGHTS_NAME

    ckpt = resolve_checkpoint(run_or_checkpoint)
    saved = load_json(ckpt / "config.json")
    rank = int(saved.get("lora") or 0) if isinstance(saved, dict) else 0
    if not rank:
        raise InputError(f"{ckpt} is not a checkpoint of a --lora run")
    scaling = float(saved.get("lora_alpha") or rank) / rank
    out = {}
    for key, value in load_file(str(ckpt / "lora.safetensors")).items():
        name, _, which = key.removeprefix("layers.").rpartition(".")  # blocks__0__attn1__to_q, lora_A
        value = value.float() * (scaling if which == "lora_B" else 1.0)
        out[f"transformer.{name.replace('__', '.')}.{which}.weight"] = value.contiguous()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        save_file(out, str(tmp), metadata={"format": "pt", "checkpoint": str(ckpt), "rank": str(rank)})
    return out_dir


def export_pipeline(
    run_or_checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    vae: str | os.PathLike | None = None,
    ema: bool = True,
    **pipeline_config,
) -> Path:
    """Write a complete model folder for :class:`~soraflow.pipeline.SoraPipeline` (config.json, vae/,
    dit/ with the EMA weights) from a training checkpoint.

    The VAE defaults to the one the latent cache was built with; the text encoder reference, latent
    channels, fps and default size come from the cache (the most common clip size). Other
    ``PipelineConfig`` fields can be given as keyword arguments. Written to a temporary folder first
    and renamed into place.
    """
    import json
    from collections import Counter

    from ..model_folder import PipelineConfig, write_model_folder
    from ..models.vae import VideoVAE

    ckpt = resolve_checkpoint(run_or_checkpoint)
    dit, extra = _checkpoint_dit(ckpt, ema)
    vae_path = vae or extra.get("vae", {}).get("path")
    if not vae_path or vae_path == "<in-memory>" or not Path(vae_path).is_dir():
        raise InputError(f"no VAE folder for the pipeline (cache recorded {vae_path!r}); pass --vae DIR")
    vae_model = VideoVAE.from_pretrained(vae_path)
    values = {
        "latent_channels": dit.config.in_channels,
        "text_encoder": extra.get("text", {}).get("reference", "minilm"),
        "size_multiple": vae_model.spatial_factor * max(dit.config.patch_size[1:]),
    }
    cfg_path = ckpt / "config.json"
    data = json.loads(cfg_path.read_text()).get("data") if cfg_path.is_file() else None
    if data and (Path(data) / "index.json").is_file():
        entries = json.loads((Path(data) / "index.json").read_text())["entries"]
        clips = [e for e in entries if e.get("frames", 0) > 1] or entries
        if clips:
            (h, w), _ = Counter((e["height"], e["width"]) for e in clips).most_common(1)[0]
            fps = Counter(round(e["fps"]) for e in clips).most_common(1)[0][0]
            frames = Counter(e["frames"] for e in clips).most_common(1)[0][0]
            if h and w and fps:
                values.update(height=h, width=w, fps=int(fps), seconds=round(frames / fps, 3))
    values.update(pipeline_config)
    out_dir = write_model_folder(out_dir, vae_model, dit, PipelineConfig(**values))
    return out_dir


__all__ = ["DiTTrainer", "export_lora", "export_pipeline", "MaskConfig", "TrainDiTConfig", "TrainResult", "TrainingError", "checkpoint_config", "export_dit"]
