"""Generation: a prompt (and optionally an image or clips) in, a video out, in every prompting mode.

One model, one mechanism (Sora's report, DESIGN.md item 6): latent frames that are *given* are clean
(t = 0) and held exactly by the sampler, the rest start as noise. The modes differ only in which
latent frames are given (:mod:`soraflow.modes` has the plans and the frame arithmetic):

- ``t2v`` text-to-video; ``t2i`` text-to-image (a one-frame grid);
- ``i2v`` image-to-video: the image's latent is frame 0 and stays it;
- ``extend``: a clip's end given at the start (forward) or its start given at the end (backward);
- ``connect``: clip A's end at the start, clip B's start at the end;
- ``loop``: a main clip, then a bridge from its end back into its own start (the connect mechanism
  with the clip on both sides), so the last frame leads into the first like any other frame pair;
- ``edit`` (SDEdit): the clip's latents noised to ``strength``, then denoised with the new prompt.

Anything longer than one window (``PipelineConfig.window_latent_frames``) is generated as repeated
forward extension with ``overlap_latent_frames`` of context, window by window: :meth:`SoraPipeline.stream`
yields frames as each window is decoded, so a 60 s video is written with the memory of one window.

    pipe = SoraPipeline.from_pretrained("model/")
    result = pipe("a red ball bouncing on grass", seconds=4, seed=0)
    result.save("ball.mp4")
"""

from __future__ import annotations

import collections
import dataclasses
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from . import flow, modes
from . import video as video_io
from .errors import CheckpointError, InputError, SoraflowError
from .modes import WindowPlan
from .validate import check_text, number
from .weights import read_json_object

CONFIG_NAME = "config.json"
VAE_FOLDER, DIT_FOLDER = "vae", "dit"
SCHEDULES = ("shifted", "flow_match_euler", "unipc")  # unipc: diffusers' UniPC solver with its own times
DIFFUSERS_INDEX = "model_index.json"  # what makes a folder a diffusers pipeline


# ----------------------------------------------------------------------------------------------
# Configuration and results
# ----------------------------------------------------------------------------------------------


@dataclass
class PipelineConfig:
    """How a model generates by default; saved as config.json beside the vae/ and dit/ folders."""

    fps: int = 8  # frames per second of the training clips, the default output rate
    height: int = 128  # default output height (pixels); any multiple of size_multiple works
    width: int = 128  # default output width
    seconds: float = 4.0  # default duration (extend: added; connect: the transition)
    max_seconds: float = 60.0  # longest generation or input clip accepted
    max_side: int = 2048  # largest height or width accepted
    size_multiple: int = 16  # sides must be multiples of this: the VAE's spatial factor x the DiT patch
    latent_channels: int = 16  # VAE latent channels = DiT input channels (checked when loading)
    text_encoder: str = "minilm"  # load_text_encoder reference, or a folder (relative: inside the model folder)
    expander: str = "world"  # prompt expander (soraflow.prompts.get_expander kind) used when expand=True
    negative_prompt: str = ""  # unconditional prompt of classifier-free guidance (training drops captions to "")
    steps: int = 30  # sampler steps
    guidance_scale: float = 5.0  # classifier-free guidance scale (1: off, half the cost)
    guidance_min_t: float = 0.0  # steps at noise level t below this run unguided (cheaper; 0: guide every step)
    shift: float | None = None  # timestep shift; None: flow.shift_for(tokens of the window)
    sampler: str = "euler"  # "euler" or "heun"
    edit_strength: float = 0.6  # default SDEdit strength
    window_latent_frames: int = 9  # latent frames per DiT pass (9 = 33 frames); longer videos go in windows
    overlap_latent_frames: int = 2  # latent frames of context a window is given (head and tail)
    dit_folder: str = DIT_FOLDER  # the DiT's subfolder: dit/ (soraflow) or transformer/ (a diffusers folder)
    # Text as the DiT was trained to read it. 0: prompts padded to the longest and the padding masked
    # (soraflow's models); N: every prompt zero-padded to N tokens and all N attended (Wan: 512; the
    # zero rows pass through the text projection's biases, so masking them changes the output).
    text_tokens: int = 0
    schedule: str = "shifted"  # sampler times: "shifted" (flow.timestep_schedule) or "flow_match_euler" (diffusers')

    def __post_init__(self):
        modes.check_fps(self.fps)
        if self.sampler not in ("euler", "heun"):
            raise InputError(f"sampler must be 'euler' or 'heun', got {self.sampler!r}")
        if self.steps < 1 or self.max_seconds <= 0 or self.seconds <= 0 or self.size_multiple < 1:
            raise InputError("steps, seconds, max_seconds and size_multiple must be positive")
        if not 0.0 <= self.guidance_min_t <= 1.0:
            raise InputError(f"guidance_min_t must be between 0 and 1, got {self.guidance_min_t}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        number("text_tokens", self.text_tokens, lo=0, hi=4096, integer=True)
        modes.check_size((self.height, self.width), self.size_multiple, self.max_side)
        modes.plan_windows(1, first_head=0, tail=0, window=self.window_latent_frames,
                           overlap=self.overlap_latent_frames)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "PipelineConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"_class_name", "soraflow_version"})
        if unknown:
            raise CheckpointError(f"{source}: unknown pipeline config keys {', '.join(unknown)}")
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except (TypeError, InputError) as err:
            raise CheckpointError(f"{source}: invalid pipeline config: {err}") from None


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
# A resolved request (step 1's output)
# ----------------------------------------------------------------------------------------------


@dataclass
class Request:
    """Everything a generation needs, checked: sizes, lengths, loaded inputs and the window plans."""

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
    image: np.ndarray | None  # (H, W, 3) uint8
    clips: list[np.ndarray]  # each (T, H, W, 3) uint8
    new_latents: int  # latents generated (per mode, see modes.generated_latents); edit: the clip's
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
    if isinstance(clip, (str, os.PathLike)):
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


# ----------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------


class SoraPipeline:
    """VAE + DiT + text encoder (+ prompt expander): ``pipe(prompt, ...) -> GenerationResult``."""

    def __init__(self, vae, dit, text_encoder, config: PipelineConfig | None = None, *, expander=None):
        self.vae = vae.eval().requires_grad_(False)
        self.dit = dit.eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.config = config or PipelineConfig()
        self._expander = expander  # built lazily from config.expander
        self.name_or_path: str | None = None  # the folder it was loaded from (stored with every output)
        self._check_models()

    def _check_models(self) -> None:
        cfg, dcfg = self.config, self.dit.config
        z = self.vae.config.z_dim
        if not (z == dcfg.in_channels == dcfg.out_channels == cfg.latent_channels):
            raise CheckpointError(
                f"latent channels disagree: VAE {z}, DiT in/out {dcfg.in_channels}/{dcfg.out_channels}, "
                f"pipeline config {cfg.latent_channels}"
            )
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
                        dtype: torch.dtype | str = torch.float32, expander=None) -> "SoraPipeline":
        """Load a folder: config.json (:class:`PipelineConfig`), vae/ and dit/ (each config.json + safetensors).
        Without ``directory``, the default model shipped in the package (MODEL_CARD.md).

        ``dtype=torch.bfloat16`` (or the name ``"bfloat16"``) runs the VAE, DiT and text encoder in bf16
        (on AMX CPUs and GPUs several times faster than fp32; the sampler state stays fp32). ``dtype="int8"`` (CPU only)
        keeps fp32 but runs most of the DiT blocks' linear layers in dynamic int8 (:meth:`DiT.quantize_int8`)
        and the VAE as ``"auto"`` would. ``dtype="auto"`` picks the fastest precision per model for
        ``device`` (:func:`auto_dtypes`; int8 for the DiT on CPUs without AMX, :func:`auto_int8`).
        """
        from .models.dit import DiT
        from .models.text import load_text_encoder
        from .models.vae import VideoVAE

        if directory is None:
            from .default_model import require_default_model

            directory = require_default_model()
        directory = Path(directory)
        dtype = resolve_dtype(dtype)
        config = read_config(directory)
        vae = VideoVAE.from_pretrained(directory / VAE_FOLDER)
        dit = DiT.from_pretrained(directory / config.dit_folder)
        reference = config.text_encoder
        if reference != "minilm" and not Path(reference).is_absolute() and (directory / reference).is_dir():
            reference = str(directory / reference)
        int8 = dtype == "int8" or (dtype == "auto" and auto_int8(device))
        if int8 and torch.device(device).type != "cpu":
            raise InputError(f"dtype='int8' runs on the CPU only, not on {device}")
        if dtype in ("auto", "int8"):
            dtype, vae_dtype = auto_dtypes(device)
            if int8:
                dtype = torch.float32  # the text encoder and the DiT's small layers; its blocks go int8 below
        else:
            vae_dtype = dtype
        text_encoder = load_text_encoder(reference, device=device, dtype=dtype)
        text_encoder.reference = config.text_encoder  # keep the portable reference for save_pretrained
        pipe = cls(vae, dit, text_encoder, config, expander=expander)
        pipe.name_or_path = str(directory)
        pipe.to(device=device, dtype=dtype)
        if vae_dtype != dtype:
            pipe.vae.to_fast(vae_dtype) if pipe.device.type == "cpu" else pipe.vae.to(dtype=vae_dtype)
        if int8:
            pipe.dit.quantize_int8()
        return pipe

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json, vae/ and dit/ (the text encoder is referenced, not copied)."""
        from .atomic import write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(directory / VAE_FOLDER)
        self.dit.save_pretrained(directory / DIT_FOLDER)
        config = {**self.config.to_dict(), "dit_folder": DIT_FOLDER}
        reference = config["text_encoder"]
        if reference != "minilm" and not Path(reference).is_absolute() and self.name_or_path:
            config["text_encoder"] = str((Path(self.name_or_path) / reference).resolve())  # not copied: point at it
        write_json(directory / CONFIG_NAME, {"_class_name": "SoraPipeline", **config})
        return directory

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "SoraPipeline":
        if self.dit.is_quantized and ((device is not None and torch.device(device).type != "cpu")
                                      or dtype not in (None, torch.float32)):
            raise InputError("the DiT runs int8 blocks (CPU, float32 around them); load the model again with "
                             "from_pretrained(dtype=...) for another device or precision")
        if device is not None:
            self.vae.to(device)
            self.dit.to(device)
            self.text_encoder.to(device)
        if dtype is not None:
            self.dit.to(dtype=dtype)
            self.text_encoder.to(dtype=dtype)
            if dtype == torch.bfloat16 and self.device.type == "cpu":
                self.vae.to_fast(dtype)  # bf16 + channels_last_3d: the fast AMX path
            else:
                self.vae.to(dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.dit.proj_out.weight.device

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
        """Steps 2-6 for a request from :meth:`prepare` (the CLI checks the request before loading weights)."""
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
        timings["expand"] = time.perf_counter() - tick
        tick = time.perf_counter()
        text = self._encode_text(expanded, request.negative_prompt, request.guidance_scale)
        timings["encode_text"] = time.perf_counter() - tick
        # 3-6 run window by window as the Generation is iterated.
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

    # ------------------------------------------------------------------ steps 2-6

    def _encode_text(self, prompt: str, negative: str, guidance_scale: float) -> tuple[dict, dict | None]:
        """(cond, uncond) keyword arguments of the DiT; no unconditional pass without guidance."""
        prompts = [prompt] if guidance_scale == 1.0 else [prompt, negative]
        emb = self.text_encoder.encode(prompts).to(self.device, self.dit.proj_out.weight.dtype)
        if self.config.text_tokens:  # Wan's convention: a fixed length of zero rows, none of them masked
            emb = emb.pad_to(max(self.config.text_tokens, emb.tokens.shape[1]))
            emb.mask = torch.ones_like(emb.mask)
        cond = emb[0].as_cond()
        return cond, (emb[1].as_cond() if len(prompts) == 2 else None)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (1 + 4k, H, W, 3) -> normalized latents (1, C, 1 + k, H/8, W/8), the posterior mean."""
        x = video_io.to_tensor(frames)[None].to(self.device)  # (1, 3, T, H, W) in [-1, 1]
        z = self.vae.encode(x, frame_policy="error").mode()
        return self.vae.normalize(z.float())

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> np.ndarray:
        """Normalized latents (1, C, T', h, w) -> uint8 (1 + 4 (T'-1), H, W, 3)."""
        x = self.vae.decode(self.vae.denormalize(z))  # (1, 3, T, H, W) in [-1, 1]
        return video_io.from_tensor(x)

    @torch.no_grad()
    def _window(self, run: "Generation", plan: WindowPlan, *, head: np.ndarray | None, tail: np.ndarray | None,
                source: np.ndarray | None, keep_head: bool) -> np.ndarray:
        """One DiT pass (steps 3-6): given latents from ``head`` / ``tail`` pixels, noise (or the SDEdit-noised
        ``source``) elsewhere, sample, decode; returns the pass's new pixel frames (modes docstring)."""
        req, timings = run.request, run.timings
        H, W = req.size
        sf = self.vae.spatial_factor
        C, T, h, w = self.config.latent_channels, plan.latents, H // sf, W // sf
        run.note_latents(T)

        # 3. Conditioning latents: head frames encoded as their own clip (latent 0 an image latent, as at
        #    any window start); tail frames likewise with latent 0 dropped (see soraflow.modes).
        tick = time.perf_counter()
        given = torch.zeros(1, C, T, h, w, device=self.device)
        given_mask = torch.zeros(1, T, dtype=torch.bool, device=self.device)
        if plan.head:
            given[:, :, : plan.head] = self.encode_frames(head)
            given_mask[:, : plan.head] = True
        if plan.tail:
            given[:, :, T - plan.tail :] = self.encode_frames(tail)[:, :, 1:]
            given_mask[:, T - plan.tail :] = True
        timings["encode_video"] += time.perf_counter() - tick

        # 4. Noise, drawn on the CPU from the seeded generator so a seed means the same video everywhere.
        noise = torch.randn((1, C, T, h, w), generator=run.generator).to(self.device)
        t_start = 1.0
        if source is not None:  # SDEdit: the source's latents under the new frames, noised to strength
            tick = time.perf_counter()
            src = torch.zeros_like(noise)
            src[:, :, plan.head : plan.head + plan.new] = self.encode_frames(source)[:, :, plan.head :]
            timings["encode_video"] += time.perf_counter() - tick
            t_start = req.strength
            noise = flow.sample_path(src, t_start, noise=noise).xt

        # 5. Denoise.
        tick = time.perf_counter()
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
        if t_start == 1.0:  # SDEdit keeps the shifted schedule and the model's sampler
            if self.config.schedule == "flow_match_euler":
                timesteps = flow.flow_match_euler_schedule(req.steps, shift=shift)
            elif self.config.schedule == "unipc":
                timesteps, model_times = flow.unipc_schedule(req.steps, shift=shift)
                method = "unipc"
        x0 = flow.sample(
            self.dit, noise, steps=req.steps, shift=shift, method=method, guidance_scale=req.guidance_scale,
            timesteps=timesteps, model_times=model_times,
            cond=run.text[0], uncond=run.text[1], given=given if any_given else None,
            given_mask=given_mask if any_given else None, t_start=t_start, callback=on_step, progress=False,
            cfg_batch=self.device.type != "cpu",  # one 2B call: faster on a GPU, no gain on a CPU
            guidance_min_t=self.config.guidance_min_t,
        )
        timings["denoise"] += time.perf_counter() - tick

        # 6. Decode. The decoder is causal, so the tail latents cannot change the frames before them:
        #    decode up to the last new latent only.
        tick = time.perf_counter()
        frames = self.decode_latents(x0[:, :, : plan.head + plan.new])
        start = 0 if keep_head or not plan.head else modes.head_frames(plan.head)
        end = len(frames) - (1 if plan.tail else 0)
        run.note_frames(len(frames))
        timings["decode"] += time.perf_counter() - tick
        run.windows_done += 1
        return frames[start:end]

    # ------------------------------------------------------------------ modes as chains of windows

    def _chain(self, run: "Generation", plans: list[WindowPlan], *, head: np.ndarray | None, keep_head: bool = False,
               tail: np.ndarray | None = None, source: np.ndarray | None = None,
               history: collections.deque | None = None) -> Iterator[np.ndarray]:
        """Forward windows: each later pass is given the last ``overlap`` latents' worth of frames so far
        (``history`` keeps just those). ``source``: SDEdit frames aligned with the chain's output."""
        overlap = self.config.overlap_latent_frames
        if history is None:
            history = collections.deque(maxlen=modes.head_frames(overlap))
        if head is not None:
            history.extend(head[-history.maxlen:])
        emitted = 0
        for i, plan in enumerate(plans):
            hf = modes.head_frames(plan.head)
            head_px = None
            if plan.head:
                if len(history) < hf:
                    raise SoraflowError(f"internal: {len(history)} frames of context for a head of {plan.head} latents")
                head_px = np.stack(list(history)[len(history) - hf :])
            tail_px = tail[: modes.tail_frames(plan.tail)] if plan.tail else None
            src = None
            if source is not None:  # the source frames under this pass's head and new latents
                offset = 0 if keep_head else hf
                src = source[emitted - offset : emitted - offset + modes.frames_for(plan.head + plan.new)]
            frames = self._window(run, plan, head=head_px, tail=tail_px, source=src, keep_head=keep_head and i == 0)
            history.extend(frames)
            emitted += len(frames)
            yield frames

    def _backward(self, run: "Generation", plans: list[WindowPlan], clip: np.ndarray) -> Iterator[np.ndarray]:
        """Backward extension: passes from the clip's start back in time, each given the start of what
        follows it as its tail. The segments come out in reverse, so they are held until the first is done
        (pixels only; the memory grows with the added length, unlike forward modes)."""
        segments: list[np.ndarray] = []
        following = clip[: modes.tail_frames(self.config.overlap_latent_frames)]
        for plan in plans:
            frames = self._window(run, plan, head=None, tail=following[: modes.tail_frames(plan.tail)], source=None,
                                  keep_head=False)
            segments.append(frames)
            following = np.concatenate([frames, following])[: modes.tail_frames(self.config.overlap_latent_frames)]
        yield from reversed(segments)
        yield clip

    def _frames(self, run: "Generation") -> Iterator[np.ndarray]:
        """Frame chunks of a request, in order (steps 3-6 run inside, window by window)."""
        req = run.request
        chains = req.chains
        if req.mode in ("t2v", "t2i"):
            yield from self._chain(run, chains[0], head=None)
        elif req.mode == "i2v":
            yield from self._chain(run, chains[0], head=req.image[None], keep_head=True)
        elif req.mode == "extend" and req.direction == "forward":
            yield req.clips[0]
            yield from self._chain(run, chains[0], head=req.clips[0])
        elif req.mode == "extend":
            yield from self._backward(run, chains[0], req.clips[0])
        elif req.mode == "connect":
            a, b = req.clips
            yield a
            yield from self._chain(run, chains[0], head=a, tail=b)
            yield b
        elif req.mode == "loop":
            # Main clip, then a bridge from its end into its own first frames (held as the bridge's tail).
            history = collections.deque(maxlen=modes.head_frames(self.config.overlap_latent_frames))
            want = modes.tail_frames(chains[1][-1].tail)
            first: list[np.ndarray] = []
            head = None if req.image is None else req.image[None]
            for frames in self._chain(run, chains[0], head=head, keep_head=head is not None, history=history):
                if sum(len(f) for f in first) < want:
                    first.append(frames[:want])
                yield frames
            start = np.concatenate(first)[:want]
            yield from self._chain(run, chains[1], head=np.stack(list(history)), tail=start)
        elif req.mode == "edit":
            clip = req.clips[0]
            padded = _pad_to_vae_length(clip)
            left = len(clip)
            for frames in self._chain(run, chains[0], head=None, source=padded):
                frames = frames[:left]  # drop the padding again
                left -= len(frames)
                if len(frames):
                    yield frames
        else:  # resolve_mode guarantees one of the above
            raise SoraflowError(f"internal: unhandled mode {req.mode!r}")


def _pad_to_vae_length(clip: np.ndarray) -> np.ndarray:
    """Repeat the last frame up to 1 + 4k frames (the VAE's lengths); the output is trimmed back."""
    extra = (len(clip) - 1) % modes.TEMPORAL_FACTOR
    if not extra:
        return clip
    return np.concatenate([clip, np.repeat(clip[-1:], modes.TEMPORAL_FACTOR - extra, axis=0)])


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


# ----------------------------------------------------------------------------------------------
# Step 1: checking a request (no model needed, so the CLI checks before loading weights)
# ----------------------------------------------------------------------------------------------


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


def diffusers_config(directory: Path) -> PipelineConfig:
    """The :class:`PipelineConfig` of a diffusers Wan pipeline folder (``model_index.json``): Wan's own
    defaults (16 fps, 832x480, 81 frames in one window, 50 steps, guidance 5), its text convention
    (512 zero-padded tokens, all attended), the scheduler's shift and schedule, and no world-grammar
    prompt expansion (Wan reads plain prompts)."""
    index = read_json_object(directory / DIFFUSERS_INDEX)
    kind = index.get("_class_name")
    if kind != "WanPipeline":
        raise CheckpointError(f"{directory}: a {kind} folder; soraflow reads WanPipeline folders (text-to-video)")
    for part in ("transformer", "vae", "text_encoder", "tokenizer"):
        if not (directory / part).is_dir():
            raise CheckpointError(f"{directory} is a WanPipeline folder without its {part}/ folder")
    extra = [k for k in ("transformer_2", "image_encoder")
             if isinstance(index.get(k), list) and index[k] and index[k][0] is not None]
    if extra or index.get("boundary_ratio") is not None:
        raise CheckpointError(f"{directory}: {', '.join(extra) or 'boundary_ratio'} is not supported yet (one transformer only)")
    sched_path = directory / "scheduler" / "scheduler_config.json"
    scheduler = read_json_object(sched_path) if sched_path.is_file() else {}
    solver = scheduler.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    schedules = {"FlowMatchEulerDiscreteScheduler": "flow_match_euler", "UniPCMultistepScheduler": "unipc"}
    unipc_ok = (scheduler.get("prediction_type") == "flow_prediction" and scheduler.get("use_flow_sigmas")
                and scheduler.get("solver_order", 2) == 2 and scheduler.get("solver_type", "bh2") == "bh2"
                and scheduler.get("predict_x0", True) and not scheduler.get("disable_corrector")
                and scheduler.get("lower_order_final", True) and not scheduler.get("use_dynamic_shifting"))
    if solver not in schedules or (solver == "UniPCMultistepScheduler" and not unipc_ok):
        import warnings

        warnings.warn(f"{directory}: its scheduler ({solver} with these settings) is not one soraflow implements; it "
                      f"samples with flow-matching Euler at the same shift (other frames than diffusers' for a seed)",
                      stacklevel=3)
        solver = "FlowMatchEulerDiscreteScheduler"
    shift = float(scheduler.get("flow_shift", scheduler.get("shift", 3.0)) or 3.0)
    from .models.vae import VideoVAE

    vae = VideoVAE.config_from_pretrained(directory / "vae")  # CheckpointError for a broken one
    return PipelineConfig(
        fps=16, height=480, width=832, seconds=81 / 16, max_seconds=60.0, latent_channels=vae.z_dim,
        text_encoder=".", expander="none", negative_prompt="", steps=50, guidance_scale=5.0, shift=shift,
        sampler="euler", window_latent_frames=21, overlap_latent_frames=2, dit_folder="transformer",
        text_tokens=512, schedule=schedules[solver],
    )


def read_config(directory: str | os.PathLike) -> PipelineConfig:
    """The :class:`PipelineConfig` of a model folder."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise CheckpointError(f"model folder {directory} does not exist")
    if not path.is_file() and (directory / DIFFUSERS_INDEX).is_file():
        return diffusers_config(directory)
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a soraflow model folder: {CONFIG_NAME} missing")
    return PipelineConfig.from_dict(read_json_object(path), source=str(path))


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
    steps = number("steps", config.steps if steps is None else steps, lo=1, hi=1000, integer=True)
    guidance_scale = float(number("guidance scale", config.guidance_scale if guidance_scale is None else guidance_scale,
                                  lo=0, hi=50))
    shift = config.shift if shift is None else shift
    if shift is not None:
        shift = number("shift", shift, lo=0, lo_open=True, hi=100)
    sampler = config.sampler if sampler is None else sampler
    if sampler not in ("euler", "heun"):
        raise InputError(f"sampler must be 'euler' or 'heun', got {sampler!r}")
    if seed is None:
        seed = secrets.randbelow(2**31)
    seed = number("seed", seed, lo=0, hi=2**63 - 1, integer=True)
    if direction not in modes.DIRECTIONS:
        raise InputError(f"direction must be 'forward' or 'backward', got {direction!r}")

    videos = [] if video is None else list(video) if isinstance(video, (list, tuple)) else [video]
    mode = modes.resolve_mode(mode, has_image=image is not None, videos=len(videos),
                              strength_given=strength is not None, frames=num_frames)
    if mode == "edit":
        strength = modes.check_strength(config.edit_strength if strength is None else strength)
        if seconds is not None or num_frames is not None:
            raise InputError("an edit keeps the clip's length; do not give seconds or num_frames")

    max_frames = int(config.max_seconds * fps)
    image_array = _load_image(image, size) if image is not None else None
    names = ["video"] if len(videos) == 1 else ["clip A", "clip B"]
    clips = [_load_clip(v, size, fps, max_frames, name) for v, name in zip(videos, names)]

    window, overlap = config.window_latent_frames, config.overlap_latent_frames
    plan = lambda new, head=0, tail=0: modes.plan_windows(new, first_head=head, tail=tail, window=window,  # noqa: E731
                                                          overlap=overlap)
    if mode == "edit":
        num_frames_out = len(clips[0])
        new = modes.latents_for(len(_pad_to_vae_length(clips[0])))
        chains = [plan(new)]
    else:
        requested = modes.requested_frames(seconds, num_frames, fps, config.seconds)
        if mode != "t2i":
            modes.check_duration(requested, fps, config.max_seconds)
        new = modes.generated_latents(mode, requested)
        made = modes.output_frames(mode, new)
        while made > max_frames and new > 1:  # rounding to the VAE's lengths must not cross the limit
            new -= 1
            made = modes.output_frames(mode, new)
        if mode in ("t2v", "t2i"):
            chains = [plan(new)]
            num_frames_out = made
        elif mode == "i2v":
            chains = [plan(new - 1, head=1)]
            num_frames_out = made
        elif mode == "extend" and direction == "forward":
            chains = [plan(new, head=modes.context_latents(len(clips[0]), overlap))]
            num_frames_out = len(clips[0]) + made
        elif mode == "extend":
            chains = [_backward_plans(new, len(clips[0]), window, overlap)]
            num_frames_out = len(clips[0]) + made
        elif mode == "connect":
            a, b = clips
            tail = modes.tail_latents(len(b), overlap)
            if not tail:
                raise InputError(f"clip B has {len(b)} frames at {fps} fps; connecting needs at least "
                                 f"{modes.tail_frames(1)} to give the model its start")
            chains = [plan(new, head=modes.context_latents(len(a), overlap), tail=tail)]
            num_frames_out = len(a) + made + len(b)
        else:  # loop: new = groups of 4 frames
            main, bridge = modes.loop_split(new)
            first = 1 if image_array is not None else 0
            if image_array is not None and main < 2:
                raise InputError("a loop from an image needs at least 8 frames")
            main_frames = modes.frames_for(main)
            chains = [plan(main - first, head=first),
                      plan(bridge, head=modes.context_latents(main_frames, overlap),
                           tail=modes.tail_latents(main_frames, overlap))]
            num_frames_out = made
    return Request(
        prompt=prompt, negative_prompt=negative, mode=mode, direction=direction, size=size, fps=fps, steps=steps,
        guidance_scale=guidance_scale, shift=shift, sampler=sampler, seed=seed, strength=strength,
        image=image_array, clips=clips, new_latents=new, num_frames=num_frames_out, chains=chains,
    )


def _backward_plans(groups: int, clip_frames: int, window: int, overlap: int) -> list[WindowPlan]:
    """Passes of a backward extension by ``groups`` 4-frame groups: each has no head, ``g + 1`` new latents
    (the first an image latent; its ``4 g`` frames are kept) and the start of what follows as its tail."""
    available = min(clip_frames, modes.tail_frames(overlap))  # frames of what follows the next pass
    if not modes.tail_latents(available, overlap):
        raise InputError(
            f"extending backward needs a clip of at least {modes.tail_frames(1)} frames, got {clip_frames}")
    plans, left = [], groups
    while left:
        tail = modes.tail_latents(available, overlap)
        g = min(left, window - tail - 1)
        plans.append(WindowPlan(0, g + 1, tail))
        left -= g
        available = min(modes.tail_frames(overlap), modes.TEMPORAL_FACTOR * g + available)
    return plans


__all__ = ["PipelineConfig", "SoraPipeline", "auto_dtypes", "auto_int8", "Generation", "GenerationResult", "StepInfo", "Request",
           "prepare_request", "read_config", "sidecar_path"]
