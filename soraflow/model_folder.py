"""A model folder: what is in it, how it is read and written.

A soraflow model folder holds ``config.json`` (:class:`PipelineConfig`: how the model generates by
default), ``vae/`` and ``dit/`` (each config.json + safetensors). A diffusers Wan pipeline folder
(``model_index.json``: ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``)
reads as one too, with Wan's own defaults (:func:`diffusers_config`).

No torch at import: the CLI and the server check a request against a folder's config before they
load any weights.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import modes
from .errors import CheckpointError, InputError
from .validate import number
from .weights import read_json_object

CONFIG_NAME = "config.json"
VAE_FOLDER, DIT_FOLDER, LOW_NOISE_FOLDER = "vae", "dit", "dit_2"
SCHEDULES = ("shifted", "flow_match_euler", "unipc")  # unipc: diffusers' UniPC solver with its own times
SAMPLERS = ("euler", "heun")
DIFFUSERS_INDEX = "model_index.json"  # what makes a folder a diffusers pipeline


def check_sampling(*, steps, guidance_scale, shift, sampler) -> tuple[int, float, float | None, str]:
    """The sampling settings' bounds, in one place for a model's config and for a request."""
    steps = number("steps", steps, lo=1, hi=1000, integer=True)
    guidance_scale = float(number("guidance scale", guidance_scale, lo=0, hi=50))
    if shift is not None:
        shift = number("shift", shift, lo=0, lo_open=True, hi=100)
    if sampler not in SAMPLERS:
        raise InputError(f"sampler must be 'euler' or 'heun', got {sampler!r}")
    return steps, guidance_scale, shift, sampler


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
    # Two experts (Wan2.2 A14B): the DiT in low_noise_folder denoises the steps at model time t < boundary_ratio,
    # with guidance_scale_2 (None: guidance_scale); the one in dit_folder the steps above.
    low_noise_folder: str | None = None
    # How the DiT takes a given image: "frames" (given latents held at t = 0, soraflow's every mode) or
    # "channels" (Wan image-to-video: a mask and the image's latents concatenated to its input; i2v only).
    image_condition: str = "frames"
    boundary_ratio: float | None = None
    guidance_scale_2: float | None = None
    # Wan2.1 I2V / FLF2V: the CLIP vision encoder and its processor whose tokens the DiT's image branch reads
    # (folders, relative: inside the model folder)
    image_encoder: str | None = None
    image_processor: str | None = None
    last_frame: bool = False  # Wan FLF2V: the model takes a first and a last frame (mode connect, of two images)

    def __post_init__(self):
        modes.check_fps(self.fps)
        check_sampling(steps=self.steps, guidance_scale=self.guidance_scale, shift=self.shift, sampler=self.sampler)
        if self.max_seconds <= 0 or self.seconds <= 0 or self.size_multiple < 1:
            raise InputError("seconds, max_seconds and size_multiple must be positive")
        if not 0.0 <= self.guidance_min_t <= 1.0:
            raise InputError(f"guidance_min_t must be between 0 and 1, got {self.guidance_min_t}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        number("text_tokens", self.text_tokens, lo=0, hi=4096, integer=True)
        if self.image_condition not in ("frames", "channels"):
            raise InputError(f"image_condition must be 'frames' or 'channels', got {self.image_condition!r}")
        if (self.low_noise_folder is None) != (self.boundary_ratio is None):
            raise InputError("low_noise_folder and boundary_ratio go together: a second expert needs its boundary")
        if self.boundary_ratio is not None:
            number("boundary_ratio", self.boundary_ratio, lo=0, lo_open=True, hi=1)
        if self.guidance_scale_2 is not None:
            number("guidance_scale_2", self.guidance_scale_2, lo=0, hi=50)
        if (self.image_encoder is None) != (self.image_processor is None):
            raise InputError("image_encoder and image_processor go together (a CLIP encoder and its processor)")
        if self.last_frame and self.image_condition != "channels":
            raise InputError("last_frame (Wan FLF2V) needs image_condition 'channels'")
        if self.image_encoder is not None and self.image_condition != "channels":
            raise InputError("an image_encoder (Wan2.1 I2V's CLIP branch) needs image_condition 'channels'")
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


def diffusers_config(directory: Path) -> PipelineConfig:
    """The :class:`PipelineConfig` of a diffusers Wan pipeline folder (``model_index.json``): Wan's own
    defaults (16 fps, 832x480, 81 frames in one window, 50 steps, guidance 5), its text convention
    (512 zero-padded tokens, all attended), the scheduler's shift and schedule, and no world-grammar
    prompt expansion (Wan reads plain prompts)."""
    index = read_json_object(directory / DIFFUSERS_INDEX)
    kind = index.get("_class_name")
    if kind not in ("WanPipeline", "WanImageToVideoPipeline"):
        raise CheckpointError(f"{directory}: a {kind} folder; soraflow reads WanPipeline and WanImageToVideoPipeline folders")
    for part in ("transformer", "vae", "text_encoder", "tokenizer"):
        if not (directory / part).is_dir():
            raise CheckpointError(f"{directory} is a WanPipeline folder without its {part}/ folder")
    present = lambda k: isinstance(index.get(k), list) and bool(index[k]) and index[k][0] is not None  # noqa: E731
    clip = present("image_encoder")
    if clip and not ((directory / "image_encoder").is_dir() and (directory / "image_processor").is_dir()):
        raise CheckpointError(f"{directory}: model_index.json names an image_encoder, and its image_encoder/ or "
                              f"image_processor/ folder is missing")
    boundary = index.get("boundary_ratio")
    if boundary is not None and not (present("transformer_2") and (directory / "transformer_2").is_dir()):
        raise CheckpointError(f"{directory}: boundary_ratio {boundary} without its transformer_2/ folder")
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
    transformer = read_json_object(directory / "transformer" / "config.json")
    channels = transformer.get("in_channels")
    patch = transformer.get("patch_size") or [1, 2, 2]
    # Wan2.2 TI2V-5B (expand_timesteps) gives the image as latent frame 0 at timestep 0, per token: soraflow's
    # per-frame timesteps, in either pipeline class; the other image-to-video folders concatenate channels.
    condition = "channels" if kind == "WanImageToVideoPipeline" and not index.get("expand_timesteps") else "frames"
    want = 2 * vae.latent_channels + vae.temporal_factor if condition == "channels" else vae.latent_channels
    if channels != want:
        raise CheckpointError(f"{directory}: a {kind} whose transformer takes {channels} input channels; "
                              f"soraflow runs {want} (VAE latents{' + mask + image latents' if condition == 'channels' else ''})")
    # Wan's own defaults: 81 frames of 832x480 at 16 fps; TI2V-5B (16x VAE) 121 frames of 1280x704 at 24 fps
    fps, (height, width), frames = (24, (704, 1280), 121) if vae.spatial_factor == 16 else (16, (480, 832), 81)
    return PipelineConfig(
        fps=fps, height=height, width=width, seconds=frames / fps, max_seconds=60.0, latent_channels=vae.latent_channels,
        size_multiple=vae.spatial_factor * int(patch[1]),
        text_encoder=".", expander="none", negative_prompt="", steps=50, guidance_scale=5.0, shift=shift,
        sampler="euler", window_latent_frames=1 + (frames - 1) // vae.temporal_factor, overlap_latent_frames=2,
        dit_folder="transformer",
        text_tokens=512, schedule=schedules[solver],
        # As diffusers: without a boundary the second transformer never runs.
        low_noise_folder="transformer_2" if boundary is not None else None, boundary_ratio=boundary,
        image_condition=condition,
        image_encoder="image_encoder" if clip else None, image_processor="image_processor" if clip else None,
        last_frame=transformer.get("pos_embed_seq_len") is not None,  # FLF2V's two images' token positions
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


def write_model_folder(directory: str | os.PathLike, vae, dit, config: PipelineConfig, *,
                       text_encoder: str | None = None, low_noise_dit=None) -> Path:
    """Write a model folder (config.json, vae/, dit/) atomically: into a temporary folder beside it,
    renamed into place, so a folder is whole or absent. ``text_encoder`` overrides the config's
    reference (the text encoder is referenced, not copied)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        from .atomic import write_json

        vae.save_pretrained(tmp / VAE_FOLDER)
        dit.save_pretrained(tmp / DIT_FOLDER)
        values = {**config.to_dict(), "dit_folder": DIT_FOLDER}
        if low_noise_dit is not None:
            low_noise_dit.save_pretrained(tmp / LOW_NOISE_FOLDER)
            values["low_noise_folder"] = LOW_NOISE_FOLDER
        elif config.low_noise_folder is not None:
            raise InputError("the config names a low-noise expert; pass it as low_noise_dit")
        if text_encoder is not None:
            values["text_encoder"] = text_encoder
        write_json(tmp / CONFIG_NAME, {"_class_name": "SoraPipeline", **PipelineConfig(**values).to_dict()})
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


__all__ = ["PipelineConfig", "read_config", "diffusers_config", "write_model_folder", "CONFIG_NAME", "VAE_FOLDER",
           "DIT_FOLDER", "LOW_NOISE_FOLDER", "DIFFUSERS_INDEX", "SCHEDULES", "SAMPLERS"]
