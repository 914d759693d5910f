"""Generation: a prompt (and optionally an image or clips) in, a video out, in every prompting mode.

One model, one mechanism (Sora's report; docs/generate.md): latent frames that are *given* are clean
(t = 0) and held exactly by the sampler, the rest start as noise. The modes differ only in which latent
frames are given and how windows chain: :mod:`soraflow.modes` holds one plan object per mode.

A generation, in order (this file unless named):

1. :func:`prepare_request` checks every argument against the model folder's config (no weights
   needed: the CLI checks before it loads the model), reads the image or clips, and asks the mode for
   its DiT passes.
2. :meth:`SoraPipeline.generate` expands the prompt (:mod:`soraflow.prompts`) and encodes it
   (:mod:`soraflow.models.text`).
3. Iterating the :class:`Generation` runs the mode (:meth:`soraflow.modes.Mode.run`), which asks for
   one window at a time; :meth:`SoraPipeline.window` makes each: encode the given frames, noise,
   sample (:func:`soraflow.flow.sample` with the DiT), decode.
4. :meth:`Generation.save` streams the frames into the file (:mod:`soraflow.video`) with a sidecar.

Anything longer than one window (``PipelineConfig.window_latent_frames``) is generated as repeated
forward extension with ``overlap_latent_frames`` of context, so a 60 s video is written with the
memory of one window.

    pipe = SoraPipeline.from_pretrained("model/")
    result = pipe("a red ball bouncing on grass", seconds=4, seed=0)
    result.save("ball.mp4")
"""

from __future__ import annotations

import dataclasses
import collections
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from . import flow, latents, modes
from . import video as video_io
from .errors import CheckpointError, InputError, SoraflowError
from .model_folder import VAE_FOLDER, PipelineConfig, check_sampling, read_config, write_model_folder
from .modes import WindowPlan
from .offload import MODES as OFFLOAD_MODES
from .offload import Offload
from .validate import check_text, number


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclass
class StepInfo:
    """What a per-step callback receives."""

    window: int  # DiT pass index (0-based) in this generation
    windows: int  # passes in this generation
    step: int  # step index (0-based) within the pass
    steps: int  # steps per pass
    t: float  # flow time after this step (0 = clean)
    latents: torch.Tensor  # (1, C, T, h, w) current state of the pass (normalized latents)


@dataclass
class GenerationResult:
    """A finished generation: the frames and everything needed to reproduce them."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: int
    prompt: str  # as the user wrote it
    expanded_prompt: str  # what the text encoder saw (the prompt itself with expand=False)
    seed: int
    mode: str
    settings: dict = field(default_factory=dict)  # size, steps, guidance, shift, windows, ...
    timings: dict = field(default_factory=dict)  # seconds per stage
    stats: dict = field(default_factory=dict)  # max latent / pixel frames held at once

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def metadata(self) -> dict:
        return _metadata(self.prompt, self.expanded_prompt, self.seed, self.mode, self.fps, self.num_frames,
                         self.settings, self.timings)

    def save(self, path: str | os.PathLike, *, sidecar: bool = True, **write_kwargs) -> Path:
        """Write MP4 / WebM / GIF / PNG (by suffix, via :func:`soraflow.video.write_video`) and, with
        ``sidecar``, ``<path>.json`` holding the prompt, expanded prompt, seed and settings."""
        return _save_outputs(path, self.frames, self.fps, self.metadata if sidecar else None, write_kwargs)


def _metadata(prompt, expanded, seed, mode, fps, frames, settings, timings) -> dict:
    from . import __version__

    return {
        "soraflow_version": __version__, "prompt": prompt, "expanded_prompt": expanded, "seed": seed,
        "mode": mode, "fps": fps, "frames": frames, "settings": settings,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }


def sidecar_path(path: str | os.PathLike) -> Path:
    """``out.mp4`` -> ``out.mp4.json``: the generation's metadata beside the video."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _save_outputs(path, frames, fps, metadata: Callable[[], dict] | None, write_kwargs: dict) -> Path:
    """The video and (with ``metadata``) its sidecar, both or neither: both locations are checked
    before the first frame is encoded, and a sidecar that fails after all removes the new video."""
    from .atomic import check_writable, write_json

    if metadata is not None:  # the video's own place is checked by write_video before it encodes
        check_writable(sidecar_path(path))
    written = video_io.write_video(path, frames, fps, **write_kwargs)
    if metadata is not None:
        try:
            write_json(sidecar_path(path), metadata())
        except BaseException:
            for made in video_io.written_files(path, written):
                made.unlink(missing_ok=True)
            raise
    return written


# ----------------------------------------------------------------------------------------------
# A checked request (step 1)
# ----------------------------------------------------------------------------------------------


@dataclass
class Request:
    """Everything a generation needs, checked: sizes, lengths, the inputs read, and the DiT passes."""

    prompt: str
    negative_prompt: str
    mode: str
    direction: str
    size: tuple[int, int]  # (H, W)
    fps: int
    steps: int
    guidance_scale: float
    shift: float | None
    sampler: str
    seed: int
    strength: float | None
    given: modes.Given  # the image and clips, read at the output size and rate
    new_latents: int  # latents generated (modes.Mode.generated_latents); edit: the clip's
    num_frames: int  # frames of the output
    chains: list[list[WindowPlan]]  # DiT passes, grouped by chain (a loop has two: main, bridge)
    extra: dict = field(default_factory=dict)  # recorded with the output: model folder, expander

    @property
    def windows(self) -> int:
        return sum(len(c) for c in self.chains)

    def settings(self) -> dict:
        h, w = self.size
        return {
            "mode": self.mode, "direction": self.direction if self.mode == "extend" else None,
            "size": f"{w}x{h}", "fps": self.fps, "frames": self.num_frames, "steps": self.steps,
            "guidance_scale": self.guidance_scale, "shift": self.shift, "sampler": self.sampler,
            "strength": self.strength, "negative_prompt": self.negative_prompt, "windows": self.windows,
            **self.extra,
        }


def prepare_request(config: PipelineConfig, prompt, negative_prompt=None, *, size=None, seconds=None,
                    num_frames=None, fps=None, steps=None, guidance_scale=None, shift=None, sampler=None, seed=None,
                    image=None, video=None, mode=None, direction="forward", strength=None) -> Request:
    """Check every argument of a generation against ``config``, read the image / clips, plan the windows.

    Raises :class:`InputError` (or :class:`VideoError` for an unreadable file) with one line naming
    the value and the limit.
    """
    prompt = modes.check_prompt(prompt)
    negative = check_text("negative prompt", config.negative_prompt if negative_prompt is None else negative_prompt,
                          empty_ok=True)
    size = modes.check_size(size if size is not None else (config.height, config.width), config.size_multiple,
                            config.max_side)
    fps = modes.check_fps(config.fps if fps is None else fps)
    pick = lambda value, default: default if value is None else value  # noqa: E731
    steps, guidance_scale, shift, sampler = check_sampling(
        steps=pick(steps, config.steps), guidance_scale=pick(guidance_scale, config.guidance_scale),
        shift=pick(shift, config.shift), sampler=pick(sampler, config.sampler))
    seed = number("seed", secrets.randbelow(2**31) if seed is None else seed, lo=0, hi=2**63 - 1, integer=True)
    if direction not in modes.DIRECTIONS:
        raise InputError(f"direction must be 'forward' or 'backward', got {direction!r}")

    videos = [] if video is None else list(video) if isinstance(video, (list, tuple)) else [video]
    mode = modes.resolve_mode(mode, has_image=image is not None, videos=len(videos),
                              strength_given=strength is not None, frames=num_frames)
    plan = modes.MODES[mode]
    if config.image_condition == "channels" and config.last_frame and mode != "connect":
        raise InputError(f"this model (Wan first-last-frame: both frames enter through the DiT's input channels) runs "
                         f"mode connect only, not {mode}; give it the first and the last frame (two images or clips)")
    if config.image_condition == "channels" and not config.last_frame and mode != "i2v":
        raise InputError(f"this model (Wan image-to-video: the image enters through the DiT's input channels) runs "
                         f"mode i2v only, not {mode}; give it an image")
    if plan.strength:
        strength = modes.check_strength(config.edit_strength if strength is None else strength)
    if plan.keeps_length and (seconds is not None or num_frames is not None):
        raise InputError(f"an {mode} keeps the clip's length; do not give seconds or num_frames")

    max_frames = int(config.max_seconds * fps)
    names = ["video"] if len(videos) == 1 else ["clip A", "clip B"]
    given = modes.Given(image=_load_image(image, size) if image is not None else None,
                        clips=tuple(_load_clip(v, size, fps, max_frames, name) for v, name in zip(videos, names)),
                        direction=direction, image_condition=config.image_condition)
    if plan.keeps_length:
        new = plan.clip_latents(given)
    else:
        requested = modes.requested_frames(seconds, num_frames, fps, config.seconds)
        if plan.duration_checked:
            modes.check_duration(requested, fps, config.max_seconds)
        new = plan.generated_latents(requested)
        while plan.made_frames(new) > max_frames and new > 1:  # rounding to the VAE's lengths must not cross the limit
            new -= 1
    chains = plan.chains(new, given, window=config.window_latent_frames, overlap=config.overlap_latent_frames)
    return Request(
        prompt=prompt, negative_prompt=negative, mode=mode, direction=direction, size=size, fps=fps, steps=steps,
        guidance_scale=guidance_scale, shift=shift, sampler=sampler, seed=seed, strength=strength, given=given,
        new_latents=new, num_frames=plan.output_frames(new, given), chains=chains,
    )


def _load_image(image, size: tuple[int, int]) -> np.ndarray:
    """A path, PIL image or uint8 (H, W, 3) array -> uint8 (H, W, 3) at ``size`` (centre crop)."""
    if isinstance(image, (str, os.PathLike)):
        return video_io.read_image(image, size=size, crop="center")
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise InputError(f"image must be a path, a PIL image or uint8 (H, W, 3); got {array.dtype} {array.shape}")
    return video_io._resize(array, size, "center")


def _load_clip(clip, size: tuple[int, int], fps: int, max_frames: int, name: str) -> np.ndarray:
    """A path or uint8 (T, H, W, 3) array -> uint8 (T, H, W, 3) at ``size`` and ``fps``."""
    if isinstance(clip, (str, os.PathLike)) and Path(clip).suffix.lower() in video_io.IMAGE_SUFFIXES:
        frames, where = video_io.read_image(clip, size=size, crop="center")[None], str(clip)  # a still: a one-frame clip
    elif isinstance(clip, (str, os.PathLike)):
        frames = video_io.read_video(clip, fps=fps, size=size, crop="center", max_frames=max_frames + 1)
        where = str(clip)
    else:
        frames = np.asarray(clip)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
            raise InputError(f"{name} must be a path or uint8 (T, H, W, 3); got {frames.dtype} {frames.shape}")
        if frames.shape[1:3] != size:
            frames = np.stack([video_io._resize(f, size, "center") for f in frames])
        where = name
    if len(frames) > max_frames:
        raise InputError(
            f"{where} is longer than the limit of {max_frames / fps:g} s ({max_frames} frames at {fps} fps)")
    return frames


class SoraPipeline:
    """VAE + DiT + text encoder (+ prompt expander): ``pipe(prompt, ...) -> GenerationResult``."""

    def __init__(self, vae, dit, text_encoder, config: PipelineConfig | None = None, *, expander=None,
                 low_noise_dit=None, image_encoder=None):
        self.vae = vae.eval().requires_grad_(False)
        self.dit = dit.eval().requires_grad_(False)
        # Wan2.2 A14B's second expert: it denoises the steps below config.boundary_ratio.
        self.low_noise_dit = None if low_noise_dit is None else low_noise_dit.eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder  # Wan2.1 I2V: CLIP tokens for the DiT's image branch (soraflow.models.image)
        self.config = config or PipelineConfig()
        self._expander = expander  # built lazily from config.expander
        self.name_or_path: str | None = None  # the folder it was loaded from (stored with every output)
        self._offload = None  # soraflow.offload.Offload while CPU offload is on
        self._check_models()

    def _check_models(self) -> None:
        cfg, dcfg = self.config, self.dit.config
        if (cfg.boundary_ratio is None) != (self.low_noise_dit is None):
            raise CheckpointError("a second (low-noise) DiT and the config's boundary_ratio go together; give both or neither")
        if self.low_noise_dit is not None:
            other = self.low_noise_dit.config
            pairs = [(k, getattr(dcfg, k), getattr(other, k)) for k in ("in_channels", "out_channels", "text_dim", "patch_size")]
            if any(a != b for _, a, b in pairs):
                raise CheckpointError("the two experts disagree: " + ", ".join(f"{k} {a} vs {b}" for k, a, b in pairs if a != b))
        z = self.vae.config.latent_channels
        # Wan image-to-video's DiT also reads a mask (one channel per frame of a latent) and the image's latents.
        extra = z + self.vae.temporal_factor if cfg.image_condition == "channels" else 0
        if not (z == dcfg.in_channels - extra == dcfg.out_channels == cfg.latent_channels):
            raise CheckpointError(
                f"latent channels disagree: VAE {z}, DiT in/out {dcfg.in_channels}/{dcfg.out_channels}, "
                f"pipeline config {cfg.latent_channels}" + (f", image condition +{extra}" if extra else "")
            )
        if (dcfg.image_dim is None) != (self.image_encoder is None):
            raise CheckpointError("the DiT's image branch (image_dim) and a CLIP image encoder go together; give both or neither")
        if self.image_encoder is not None and self.image_encoder.dim != dcfg.image_dim:
            raise CheckpointError(f"the image encoder gives {self.image_encoder.dim}-d tokens, the DiT's image branch "
                                  f"expects {dcfg.image_dim}")
        if self.image_encoder is not None and cfg.image_condition != "channels":
            raise CheckpointError("a CLIP image branch needs image_condition 'channels' (Wan2.1 image-to-video)")
        if self.text_encoder.dim != dcfg.text_dim:
            raise CheckpointError(
                f"text encoder {self.text_encoder.reference!r} gives {self.text_encoder.dim}-d tokens, "
                f"the DiT expects {dcfg.text_dim}"
            )
        if dcfg.patch_size[0] != 1:
            raise CheckpointError(
                f"temporal patch size {dcfg.patch_size[0]} is not supported (per-frame conditioning needs 1)")
        multiple = self.vae.spatial_factor * max(dcfg.patch_size[1:])
        if cfg.size_multiple != multiple or self.vae.temporal_factor != modes.TEMPORAL_FACTOR:
            raise CheckpointError(
                f"pipeline config size_multiple={cfg.size_multiple} but the models need {multiple} "
                f"(VAE x{self.vae.spatial_factor}, patch {dcfg.patch_size}); temporal factor {self.vae.temporal_factor}"
            )

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | str = torch.float32, expander=None, loras=(),
                        offload: str | None = None) -> "SoraPipeline":
        """Load a folder: config.json (:class:`PipelineConfig`), vae/ and dit/ (each config.json + safetensors).
        Without ``directory``, the default model shipped in the package (MODEL_CARD.md).

        ``dtype=torch.bfloat16`` (or the name ``"bfloat16"``) runs the VAE, DiT and text encoder in bf16
        (on AMX CPUs and GPUs several times faster than fp32; the sampler state stays fp32). ``dtype="int8"`` (CPU only)
        keeps fp32 but runs most of the DiT blocks' linear layers in dynamic int8 (:meth:`DiT.quantize_int8`)
        and the VAE as ``"auto"`` would. ``dtype="auto"`` picks the fastest precision per model for
        ``device`` (:func:`auto_dtypes`; int8 for the DiT on CPUs without AMX, :func:`auto_int8`).

        ``loras``: (path, scale) pairs of LoRA adapters (:mod:`soraflow.lora`) merged into the DiT's
        weights in float32 before any precision change, so they cost nothing per step. For two-expert
        folders they go into the high-noise expert, as diffusers' ``load_lora_weights`` does.

        ``offload="model"`` or ``"sequential"`` keeps the weights in CPU memory, in the precision chosen for
        ``device``, and moves them to ``device`` only while they run (:meth:`enable_model_cpu_offload`,
        :meth:`enable_sequential_cpu_offload`): for models larger than the GPU's memory.
        """
        from .models.dit import DiT
        from .models.text import load_text_encoder
        from .models.vae import VideoVAE

        if directory is None:
            from .default_model import require_default_model

            directory = require_default_model()
        directory = Path(directory)
        dtype = resolve_dtype(dtype)
        if offload is not None and offload not in OFFLOAD_MODES:
            raise InputError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
        config = read_config(directory)
        vae = VideoVAE.from_pretrained(directory / VAE_FOLDER)
        dit = DiT.from_pretrained(directory / config.dit_folder)
        if loras:
            from .lora import merge_loras

            merge_loras(dit, loras)
        low_noise = DiT.from_pretrained(directory / config.low_noise_folder) if config.low_noise_folder else None
        reference = config.text_encoder
        if reference != "minilm" and not Path(reference).is_absolute() and (directory / reference).is_dir():
            reference = str(directory / reference)
        int8 = dtype == "int8" or (dtype == "auto" and auto_int8(device) and offload is None)
        if int8 and (torch.device(device).type != "cpu" or offload):
            raise InputError(f"dtype='int8' runs on the CPU only, without offload (device {device})")
        if dtype in ("auto", "int8"):
            dtype, vae_dtype = auto_dtypes(device)
            if int8:
                dtype = torch.float32  # the text encoder and the DiT's small layers; its blocks go int8 below
        else:
            vae_dtype = dtype
        home = "cpu" if offload else device  # offload: the weights live in CPU memory
        text_encoder = load_text_encoder(reference, device=home, dtype=dtype)
        text_encoder.reference = config.text_encoder  # keep the portable reference for save_pretrained
        image_encoder = None
        if config.image_encoder:
            from .models.image import load_image_encoder

            image_encoder = load_image_encoder(*(Path(f) if Path(f).is_absolute() else directory / f
                                                 for f in (config.image_encoder, config.image_processor)), device=home)
        pipe = cls(vae, dit, text_encoder, config, expander=expander, low_noise_dit=low_noise, image_encoder=image_encoder)
        pipe.name_or_path = str(directory)
        pipe.to(device=home, dtype=dtype, cpu_layout=not offload)
        if vae_dtype != dtype:
            pipe.vae.to_fast(vae_dtype) if pipe.device.type == "cpu" and not offload else pipe.vae.to(dtype=vae_dtype)
        if offload:
            pipe._enable_offload(device, offload)
        if int8:
            for model in pipe.dits:
                model.quantize_int8()
        return pipe

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json, vae/ and dit/ (the text encoder is referenced, not copied)."""
        reference = self.config.text_encoder
        if reference != "minilm" and not Path(reference).is_absolute() and self.name_or_path:
            reference = str((Path(self.name_or_path) / reference).resolve())  # not copied: point at it
        config = self.config
        if config.image_encoder and self.name_or_path:  # the CLIP encoder too is referenced, not copied
            config = dataclasses.replace(config, **{k: str((Path(self.name_or_path) / getattr(config, k)).resolve())
                                                    for k in ("image_encoder", "image_processor")})
        return write_model_folder(directory, self.vae, self.dit, config, text_encoder=reference,
                                  low_noise_dit=self.low_noise_dit)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None, *,
           cpu_layout: bool = True) -> "SoraPipeline":
        """Move and/or cast every model. A bf16 VAE on the CPU also takes the channels-last layout its
        fast kernels want, unless ``cpu_layout=False`` (weights that will run elsewhere: offload)."""
        if self._offload is not None:
            raise InputError(f"{self._offload.mode} CPU offload is on; call disable_offload() before moving the pipeline")
        if self.dit.is_quantized and ((device is not None and torch.device(device).type != "cpu")
                                      or dtype not in (None, torch.float32)):
            raise InputError("the DiT runs int8 blocks (CPU, float32 around them); load the model again with "
                             "from_pretrained(dtype=...) for another device or precision")
        if device is not None:
            self.vae.to(device)
            for model in self.dits:
                model.to(device)
            self.text_encoder.to(device)
            if self.image_encoder is not None:
                self.image_encoder.to(device)
        if dtype is not None:
            for model in self.dits:
                model.to(dtype=dtype)
            self.text_encoder.to(dtype=dtype)
            if dtype == torch.bfloat16 and self.device.type == "cpu" and cpu_layout:
                self.vae.to_fast(dtype)  # bf16 + channels_last_3d: the fast AMX path
            else:
                self.vae.to(dtype=dtype)
        return self

    @property
    def dits(self) -> list:
        """The DiT, and the low-noise expert when there is one."""
        return [self.dit] + ([self.low_noise_dit] if self.low_noise_dit is not None else [])

    @property
    def device(self) -> torch.device:
        """Where generation computes (with offload on: the device the weights visit)."""
        return self._offload.device if self._offload is not None else self.dit.proj_out.weight.device

    # ------------------------------------------------------------------ CPU offload

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda", *, check: bool = False) -> "SoraPipeline":
        """Keep every model in CPU memory and move each whole to ``device`` while the pipeline uses it
        (text encoder, image encoder, DiT or expert, VAE), one at a time: ``device`` holds the largest
        model. ``check=True`` leaves the models off the device without weights (meta tensors), so any use
        the offload did not place fails at once (how the tests check it on a CPU)."""
        return self._enable_offload(device, "model", check=check)

    def enable_sequential_cpu_offload(self, device: str | torch.device = "cuda", *, check: bool = False) -> "SoraPipeline":
        """Move each model's blocks to ``device`` only for their own forward; the rest of the model in use
        (embeddings, norms, heads) stays there meanwhile. The least device memory, and several times
        slower than :meth:`enable_model_cpu_offload`: every block crosses the bus at every call."""
        return self._enable_offload(device, "sequential", check=check)

    def disable_offload(self) -> "SoraPipeline":
        """Back to plain models, in CPU memory."""
        if self._offload is not None:
            self._offload.remove()
            self._offload = None
        return self

    @property
    def offload(self):
        """The :class:`soraflow.offload.Offload` while CPU offload is on (its ``peak_bytes``, ``on_device()``), else None."""
        return self._offload

    def _enable_offload(self, device, mode: str, *, check: bool = False) -> "SoraPipeline":
        if self.dit.is_quantized:
            raise InputError("the DiT runs int8 blocks, a CPU-only path; load it in another dtype to offload it")
        self.disable_offload()
        self.to("cpu")
        models = {"text_encoder": self.text_encoder, "image_encoder": self.image_encoder, "dit": self.dit,
                  "low_noise_dit": self.low_noise_dit, "vae": self.vae}
        self._offload = Offload({k: v for k, v in models.items() if v is not None}, device, mode, check=check)
        return self

    def _use(self, name: str) -> None:
        """Before a model is used by a method other than its forward (the VAE's encode and decode)."""
        if self._offload is not None:
            self._offload.use(name)

    @property
    def expander(self):
        """The expander the model folder names; only a local one (``LOCAL_EXPANDERS``). A folder from
        someone else must not be able to send the user's prompts, and their API key, over the
        network: that happens only when the caller passes such an expander itself."""
        if self._expander is None:
            from .prompts import LOCAL_EXPANDERS, get_expander

            if (self.config.expander or "none").lower() not in LOCAL_EXPANDERS:
                raise InputError(
                    f"the model folder {self.name_or_path} names the {self.config.expander!r} prompt expander, which sends "
                    f"prompts over the network; soraflow does that only when you ask: pass --expander "
                    f"{self.config.expander} (expander=get_expander(...) in Python), or --no-expand")
            self._expander = get_expander(self.config.expander)
        return self._expander

    # ------------------------------------------------------------------ the call

    def __call__(self, prompt: str, negative_prompt: str | None = None, **kwargs) -> GenerationResult:
        """Generate a video and return it whole. Arguments as :meth:`stream`."""
        return self.stream(prompt, negative_prompt, **kwargs).result()

    def stream(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        size: tuple[int, int] | None = None,
        seconds: float | None = None,
        num_frames: int | None = None,
        fps: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        shift: float | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        image=None,
        video=None,
        mode: str | None = None,
        direction: str = "forward",
        strength: float | None = None,
        callback: Callable[[StepInfo], Any] | None = None,
        expand: bool = True,
        expander=None,
        progress: bool = True,
    ) -> "Generation":
        """Check the request and encode the prompt now; generate the frames window by window as the
        returned :class:`Generation` is iterated (or saved), in memory bounded by one window.

        Args:
            prompt: what to generate (or, for edit, what the clip should become).
            negative_prompt: the unconditional prompt of guidance (default: the config's, "").
            size: (height, width), multiples of ``config.size_multiple``; default the config's.
            seconds / num_frames: duration (t2v, i2v, loop: the whole video; extend: added; connect:
                the transition); snapped as in :mod:`soraflow.modes`. Not for edit.
            fps: frame rate of the output and of clips read from files.
            steps, guidance_scale, shift, sampler: sampling settings (defaults from the config).
            seed: makes the result reproducible; None draws one (reported in the result).
            image: path / PIL / uint8 (H, W, 3): image-to-video (or the start and end of a loop).
            video: path or uint8 (T, H, W, 3): the clip to extend or edit; a pair (A, B) to connect.
            mode: t2v, t2i, i2v, extend, loop, connect, edit (None: inferred from the inputs).
            direction: "forward" or "backward" for extend.
            strength: SDEdit noise level in (0, 1] for edit (default ``config.edit_strength``).
            callback: called with a :class:`StepInfo` after every sampler step.
            expand, expander: rewrite the prompt into the caption style the model was trained on
                (``expander`` overrides the config's); expand=False passes it as written.
            progress: show a tqdm progress bar over all steps of all windows.
        """
        start = time.perf_counter()
        # 1. Check inputs (and read the image / clips).
        request = self.prepare(
            prompt, negative_prompt, size=size, seconds=seconds, num_frames=num_frames, fps=fps, steps=steps,
            guidance_scale=guidance_scale, shift=shift, sampler=sampler, seed=seed, image=image, video=video,
            mode=mode, direction=direction, strength=strength,
        )
        return self.generate(request, callback=callback, expand=expand, expander=expander, progress=progress,
                             started=start)

    def generate(self, request: Request, *, callback: Callable[[StepInfo], Any] | None = None, expand: bool = True,
                 expander=None, progress: bool = True, started: float | None = None) -> "Generation":
        """Steps 2-3 for a request from :meth:`prepare` (the CLI checks the request before loading weights)."""
        timings: dict[str, float] = collections.defaultdict(float)
        start = time.perf_counter() if started is None else started
        timings["check"] = time.perf_counter() - start
        # 2. Expand and encode the prompt.
        tick = time.perf_counter()
        expanded, expander_name = request.prompt, "none"
        if expand:
            expander = expander or self.expander
            expanded = expander.expand(request.prompt, seed=request.seed).caption
            expander_name = getattr(expander, "name", type(expander).__name__)
        request.extra.update(model=self.name_or_path, expander=expander_name, guidance_min_t=self.config.guidance_min_t)
        if self.low_noise_dit is not None:
            request.extra.update(boundary_ratio=self.config.boundary_ratio, guidance_scale_2=self._low_noise(request)[2])
        timings["expand"] = time.perf_counter() - tick
        tick = time.perf_counter()
        text = self._encode_text(expanded, request.negative_prompt, request.guidance_scale)
        timings["encode_text"] = time.perf_counter() - tick
        # 3. runs window by window as the Generation is iterated.
        return Generation(self, request, expanded, text, timings, callback=callback, progress=progress, started=start)

    def prepare(self, prompt, negative_prompt=None, *, size=None, seconds=None, num_frames=None, fps=None,
                steps=None, guidance_scale=None, shift=None, sampler=None, seed=None, image=None, video=None,
                mode=None, direction="forward", strength=None) -> Request:
        """Step 1 alone: check a request against this pipeline's config and read its inputs."""
        return prepare_request(
            self.config, prompt, negative_prompt, size=size, seconds=seconds, num_frames=num_frames, fps=fps,
            steps=steps, guidance_scale=guidance_scale, shift=shift, sampler=sampler, seed=seed, image=image,
            video=video, mode=mode, direction=direction, strength=strength,
        )

    # ------------------------------------------------------------------ one window

    def _encode_text(self, prompt: str, negative: str, guidance_scale: float) -> tuple[dict, dict | None]:
        """(cond, uncond) keyword arguments of the DiT; no unconditional pass without guidance."""
        prompts = [prompt] if guidance_scale == 1.0 else [prompt, negative]
        if self.config.text_tokens:  # Wan's weights read prompts as diffusers' Wan pipelines clean them
            prompts = [wan_prompt_clean(p) for p in prompts]
        emb = self.text_encoder.encode(prompts).to(self.device, self.dit.proj_out.weight.dtype)
        if self.config.text_tokens:  # Wan's convention: a fixed length of zero rows, none of them masked
            emb = emb.pad_to(max(self.config.text_tokens, emb.tokens.shape[1]))
            emb.mask = torch.ones_like(emb.mask)
        cond = emb[0].as_cond()
        return cond, (emb[1].as_cond() if len(prompts) == 2 else None)

    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (1 + 4k, H, W, 3) -> normalized latents (1, C, 1 + k, H/8, W/8), the posterior mean."""
        self._use("vae")
        return latents.encode_frames(self.vae, frames, frame_policy="error")

    def decode_latents(self, z: torch.Tensor) -> np.ndarray:
        """Normalized latents (1, C, T', h, w) -> uint8 (1 + 4 (T'-1), H, W, 3)."""
        self._use("vae")
        return latents.decode_latents(self.vae, z)

    @torch.no_grad()
    def window(self, run: "Generation", window: modes.Window) -> np.ndarray:
        """One DiT pass: latents given from ``window.head`` / ``window.tail`` pixels, noise (or the edit's
        noised ``source``) elsewhere, sampled and decoded. Returns the pass's new pixel frames (see the
        :mod:`soraflow.modes` docstring for which those are)."""
        req, timings, plan = run.request, run.timings, window.plan
        H, W = req.size
        sf = self.vae.spatial_factor
        C, T, h, w = self.config.latent_channels, plan.latents, H // sf, W // sf
        run.note_latents(T)

        # 1. Given latents: head frames encoded as their own clip (latent 0 an image latent, as at any
        #    window start); tail frames likewise with latent 0 dropped.
        tick = time.perf_counter()
        given = torch.zeros(1, C, T, h, w, device=self.device)
        given_mask = torch.zeros(1, T, dtype=torch.bool, device=self.device)
        if plan.head:
            given[:, :, : plan.head] = self.encode_frames(window.head)
            given_mask[:, : plan.head] = True
        if plan.tail:
            given[:, :, T - plan.tail :] = self.encode_frames(window.tail)[:, :, 1:]
            given_mask[:, T - plan.tail :] = True
        timings["encode_video"] += time.perf_counter() - tick

        # 2. Noise, drawn on the CPU from the seeded generator so a seed means the same video everywhere.
        noise = torch.randn((1, C, T, h, w), generator=run.generator).to(self.device)
        t_start = 1.0
        if window.source is not None:  # edit: the source's latents under the new frames, noised to strength
            tick = time.perf_counter()
            src = torch.zeros_like(noise)
            src[:, :, plan.head : plan.head + plan.new] = self.encode_frames(window.source)[:, :, plan.head :]
            timings["encode_video"] += time.perf_counter() - tick
            t_start = req.strength
            noise = flow.sample_path(src, t_start, noise=noise).xt

        # 3. Sample.
        tick = time.perf_counter()
        model, low_noise = self.dit, self._low_noise(req)
        if window.image is not None:  # Wan image-to-video: the image's condition beside the latents, every call
            model, low_noise = self._image_conditioned(window.image, T, low_noise, last=window.last_image)
        shift = req.shift if req.shift is not None else flow.shift_for(
            flow.latent_tokens((T, h, w), self.dit.config.patch_size))
        window_index = run.windows_done

        def on_step(step: int, t: float, x: torch.Tensor) -> None:
            run.bar.update(1)
            if run.callback is not None:
                run.callback(StepInfo(window_index, req.windows, step, req.steps, t, x))

        any_given = bool(plan.head or plan.tail)
        timesteps = model_times = None
        method = req.sampler
        if t_start == 1.0:  # an edit keeps the shifted schedule and the model's sampler
            if self.config.schedule == "flow_match_euler":
                timesteps = flow.flow_match_euler_schedule(req.steps, shift=shift)
            elif self.config.schedule == "unipc":
                timesteps, model_times = flow.unipc_schedule(req.steps, shift=shift)
                method = "unipc"
        x0 = flow.sample(
            model, noise, steps=req.steps, shift=shift, method=method, guidance_scale=req.guidance_scale,
            timesteps=timesteps, model_times=model_times,
            cond=run.text[0], uncond=run.text[1], given=given if any_given else None,
            given_mask=given_mask if any_given else None, t_start=t_start, callback=on_step, progress=False,
            cfg_batch=self.device.type != "cpu",  # one 2B call: faster on a GPU, no gain on a CPU
            guidance_min_t=self.config.guidance_min_t, low_noise=low_noise,
        )
        timings["denoise"] += time.perf_counter() - tick

        # 4. Decode. The decoder is causal, so the tail latents cannot change the frames before them:
        #    decode up to the last new latent only.
        tick = time.perf_counter()
        frames = self.decode_latents(x0[:, :, : plan.head + plan.new])
        start = 0 if window.keep_head or not plan.head else modes.head_frames(plan.head)
        end = len(frames) - (1 if plan.tail else 0)
        run.note_frames(len(frames))
        timings["decode"] += time.perf_counter() - tick
        run.windows_done += 1
        return frames[start:end]

    def _image_conditioned(self, image: np.ndarray, latent_frames: int, low_noise, last: np.ndarray | None = None):
        """The DiT (and the low-noise expert) with Wan image-to-video's condition concatenated to their input:
        a mask (1 on the given pixel frames, one channel per pixel frame of a latent) and the latents of the
        image followed by zero frames (and the last frame, FLF2V), as diffusers' ``WanImageToVideoPipeline``
        builds it; with a CLIP encoder, the images' CLIP tokens for the DiT's image branch."""
        tf, frames = self.vae.temporal_factor, modes.frames_for(latent_frames)
        given = [video_io.to_tensor(im[None])[None] for im in ([image] if last is None else [image, last])]  # (1, 3, 1, H, W)
        pixels = torch.cat([given[0], given[0].new_zeros(1, 3, frames - len(given), *given[0].shape[3:]), *given[1:]], dim=2)
        self._use("vae")
        z = latents.encode_pixels(self.vae, pixels, frame_policy="error")
        known = torch.zeros(frames)
        known[0] = 1.0
        if last is not None:
            known[-1] = 1.0
        known = torch.cat([known[:1].repeat(tf), known[1:]])  # frame 0 fills all tf channels of latent 0
        mask = known.view(latent_frames, tf).T[None, :, :, None, None].expand(1, tf, latent_frames, *z.shape[3:])
        condition = torch.cat([mask.to(z), z], dim=1)
        tokens = None
        if self.image_encoder is not None:  # (1, L, D); FLF2V: both images' tokens as one sequence
            tokens = self.image_encoder([image] if last is None else [image, last]).to(self.device)
            tokens = tokens.reshape(1, -1, tokens.shape[-1])

        def conditioned(dit):
            def model(x, t, **kw):
                if tokens is not None:
                    kw["image_context"] = tokens.to(x).expand(x.shape[0], -1, -1)
                return dit(torch.cat([x, condition.to(x).expand(x.shape[0], -1, -1, -1, -1)], dim=1), t, **kw)
            return model

        if low_noise is not None:
            low_noise = (low_noise[0], conditioned(low_noise[1]), low_noise[2])
        return conditioned(self.dit), low_noise

    def _low_noise(self, req: Request):
        """The second expert's part of the sampling, as :func:`soraflow.flow.sample` takes it (or None)."""
        if self.low_noise_dit is None:
            return None
        scale = self.config.guidance_scale_2
        return self.config.boundary_ratio, self.low_noise_dit, req.guidance_scale if scale is None else scale

    def _frames(self, run: "Generation") -> Iterator[np.ndarray]:
        """Output chunks of a request, in order: drives the mode's run, making each window it asks for."""
        req = run.request
        steps = modes.MODES[req.mode].run(req.chains, req.given, self.config.overlap_latent_frames)
        reply = None
        try:
            while True:
                try:
                    item = steps.send(reply)
                except StopIteration:
                    return
                if isinstance(item, modes.Window):
                    reply = self.window(run, item)
                else:
                    reply = None
                    yield item
        finally:  # offload: the device is left empty between generations
            if self._offload is not None:
                self._offload.release()


def wan_prompt_clean(text: str) -> str:
    """A prompt as diffusers' Wan pipelines hand it to the tokenizer: mojibake fixed (with ftfy, where it
    is installed, as there), HTML entities unescaped twice, runs of whitespace made one space."""
    import html
    import re

    try:
        import ftfy
    except ImportError:
        ftfy = None
    if ftfy is not None:
        text = ftfy.fix_text(text)
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


# ----------------------------------------------------------------------------------------------
# A generation in progress
# ----------------------------------------------------------------------------------------------


class Generation:
    """A checked request with its prompt encoded; frames are made window by window as it is iterated.

    Iterate it (once) for uint8 (t, H, W, 3) chunks, call :meth:`save` to stream them into a file, or
    :meth:`result` to collect them. ``stats`` records the most latent and pixel frames one pass held,
    which stays the same however long the video is.
    """

    def __init__(self, pipe: SoraPipeline, request: Request, expanded_prompt: str, text, timings: dict, *,
                 callback=None, progress: bool = True, started: float | None = None):
        self.pipe, self.request, self.expanded_prompt, self.text = pipe, request, expanded_prompt, text
        self.timings = timings
        self.callback = callback
        self.progress = progress
        self.generator = torch.Generator().manual_seed(request.seed)
        self.stats = {"max_latent_frames": 0, "max_pixel_frames": 0}
        self.windows_done = 0
        self.bar = None
        self._started = started if started is not None else time.perf_counter()
        self._consumed = False

    # metadata known before any frame exists
    prompt = property(lambda self: self.request.prompt)
    seed = property(lambda self: self.request.seed)
    mode = property(lambda self: self.request.mode)
    fps = property(lambda self: self.request.fps)
    size = property(lambda self: self.request.size)
    num_frames = property(lambda self: self.request.num_frames)

    def note_latents(self, n: int) -> None:
        self.stats["max_latent_frames"] = max(self.stats["max_latent_frames"], n)

    def note_frames(self, n: int) -> None:
        self.stats["max_pixel_frames"] = max(self.stats["max_pixel_frames"], n)

    def __iter__(self) -> Iterator[np.ndarray]:
        from tqdm.auto import tqdm

        if self._consumed:
            raise SoraflowError("a Generation can be iterated only once; call pipe.stream(...) again")
        self._consumed = True
        req = self.request
        self.bar = tqdm(total=req.windows * req.steps, desc=f"generating ({req.mode})", unit="step",
                        disable=not self.progress, leave=False)
        try:
            yield from self.pipe._frames(self)
        finally:
            self.bar.close()
            self.timings["total"] = time.perf_counter() - self._started

    def frames(self) -> Iterator[np.ndarray]:
        """Single (H, W, 3) frames, for writers that take an iterable."""
        for chunk in self:
            yield from chunk

    def metadata(self) -> dict:
        return _metadata(self.prompt, self.expanded_prompt, self.seed, self.mode, self.fps, self.num_frames,
                         self.request.settings(), dict(self.timings))

    def save(self, path: str | os.PathLike, *, sidecar: bool = True, **write_kwargs) -> Path:
        """Stream the frames into ``path`` (MP4/WebM: bounded memory; GIF is assembled in memory) and write
        the ``<path>.json`` sidecar. Nothing is left behind if generation fails midway."""
        return _save_outputs(path, self.frames(), self.fps, self.metadata if sidecar else None, write_kwargs)

    def result(self) -> GenerationResult:
        frames = np.concatenate(list(self))
        if len(frames) != self.num_frames:
            raise SoraflowError(f"internal: made {len(frames)} frames, planned {self.num_frames}")
        return GenerationResult(
            frames=frames, fps=self.fps, prompt=self.prompt, expanded_prompt=self.expanded_prompt, seed=self.seed,
            mode=self.mode, settings=self.request.settings(), timings=dict(self.timings), stats=dict(self.stats),
        )


MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")  # the names from_pretrained takes


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype | str:
    """A dtype name ("float32", "bfloat16", "float16") -> the torch dtype; "auto" and "int8" stay names."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in MODEL_DTYPES:
        raise InputError(f"dtype must be one of {', '.join(MODEL_DTYPES)} or a torch dtype, got {dtype!r}")
    return dtype if dtype in ("auto", "int8") else getattr(torch, dtype)


def auto_dtypes(device: str | torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(DiT and text encoder dtype, VAE dtype) that generate fastest on ``device``.

    GPU: bf16 for all. CPU: what :func:`soraflow.hardware.cpu_choice` measured fastest on this CPU
    (a DiT-sized GEMM, a VAE-sized conv3d; once per machine, cached). Where the DiT is fastest in int8
    this returns float32 for it: :func:`auto_int8` says so and its blocks are quantized after loading.
    BENCHMARKS.md lists what it picks on which CPU.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return (torch.bfloat16,) * 2 if torch.cuda.is_bf16_supported() else (torch.float32,) * 2
    if device.type != "cpu":
        return torch.float32, torch.float32
    from . import hardware

    choice = hardware.cpu_choice()
    return (torch.bfloat16 if choice.dit == "bfloat16" else torch.float32,
            torch.bfloat16 if choice.vae == "bfloat16" else torch.float32)


def auto_int8(device: str | torch.device) -> bool:
    """Whether ``dtype="auto"`` runs the DiT blocks in dynamic int8: on a CPU where the measured int8
    GEMM clearly beats both fp32 and bf16 (:func:`soraflow.hardware.choose`)."""
    if torch.device(device).type != "cpu":
        return False
    from . import hardware

    return hardware.cpu_choice().dit == "int8"


__all__ = ["PipelineConfig", "SoraPipeline", "auto_dtypes", "auto_int8", "Generation", "GenerationResult", "StepInfo", "Request",
           "prepare_request", "read_config", "sidecar_path"]
