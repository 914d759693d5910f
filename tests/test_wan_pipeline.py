"""A diffusers Wan pipeline folder (model_index.json) loads as a model and generates diffusers' frames.

The oracle is diffusers' own ``WanPipeline`` on a tiny random pipeline saved by diffusers: same seed,
same prompt, same steps; soraflow reads the folder (transformer/, vae/, text_encoder/, tokenizer/,
scheduler/) with Wan's text convention and the scheduler's times, and its uint8 frames equal diffusers'
float frames to the rounding to uint8.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT, NEGATIVE = "a red ball bouncing on grass", "blue"
SETTINGS = dict(height=32, width=32, num_frames=9, steps=4, guidance_scale=5.0, seed=7)


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory) -> Path:
    import transformers
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from test_text import _tiny_tokenizer

    root = tmp_path_factory.mktemp("wan")
    vocab = _tiny_tokenizer(root / "tok", model_max_length=512)
    torch.manual_seed(0)
    text_encoder = transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0))
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16,
        freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.05, 0.0],
                           latents_std=[1.5, 0.8, 1.2, 1.0])
    pipe = WanPipeline(tokenizer=transformers.AutoTokenizer.from_pretrained(root / "tok"), text_encoder=text_encoder,
                       transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.save_pretrained(root / "wan")
    return root / "wan"


@pytest.fixture(scope="module")
def wan_unipc_folder(wan_folder, tmp_path_factory) -> Path:
    """The same pipeline with the solver the released Wan folders ship (UniPC on flow sigmas, shift 3)."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    pipe = WanPipeline.from_pretrained(wan_folder)
    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    folder = tmp_path_factory.mktemp("wan-unipc") / "wan"
    pipe.save_pretrained(folder)
    return folder


def _diffusers_frames(folder: Path) -> np.ndarray:
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(folder)
    s = SETTINGS
    out = pipe(PROMPT, negative_prompt=NEGATIVE, height=s["height"], width=s["width"], num_frames=s["num_frames"],
               num_inference_steps=s["steps"], guidance_scale=s["guidance_scale"],
               generator=torch.Generator().manual_seed(s["seed"]), output_type="np")
    return out.frames[0]  # (T, H, W, 3) float in [0, 1]


def _image(side: int) -> np.ndarray:
    """A square uint8 test image: a colour ramp with a red block in it."""
    yy, xx = np.mgrid[0:side, 0:side]
    image = np.stack([(256 // side) * xx, (256 // side) * yy, np.full_like(xx, 90)], -1).astype(np.uint8)
    image[side * 10 // 32: side * 20 // 32, side * 12 // 32: side * 22 // 32] = (230, 30, 30)
    return image


def _ours(pipe) -> np.ndarray:
    s = SETTINGS
    return pipe(PROMPT, negative_prompt=NEGATIVE, size=(s["height"], s["width"]), num_frames=s["num_frames"],
                steps=s["steps"], guidance_scale=s["guidance_scale"], seed=s["seed"], progress=False).frames


def test_a_wan_folder_generates_diffusers_frames(wan_folder):
    from soraflow.pipeline import SoraPipeline

    pipe = SoraPipeline.from_pretrained(wan_folder)
    c = pipe.config
    assert (c.fps, c.height, c.width, c.steps, c.expander, c.text_tokens, c.schedule, c.shift) == \
        (16, 480, 832, 50, "none", 512, "flow_match_euler", 3.0)
    assert c.window_latent_frames == 21  # Wan's 81 frames are one window, not three
    want = np.round(_diffusers_frames(wan_folder) * 255)
    got = _ours(pipe).astype(np.float32)
    assert got.shape == want.shape == (9, 32, 32, 3)
    assert np.abs(got - want).max() <= 1  # the same video up to rounding to uint8
    # A prompt as people paste them (entities, runs of spaces) is read as diffusers cleans it: the text
    # tokens the DiT sees are diffusers' (raw, they differ by ~3).
    from diffusers import WanPipeline

    messy = "  a red ball &amp;amp; a\n\n blue   cube "
    ref, _ = WanPipeline.from_pretrained(wan_folder).encode_prompt(messy, do_classifier_free_guidance=False,
                                                                  max_sequence_length=512)
    cond, _ = pipe._encode_text(messy, "", 1.0)
    assert torch.allclose(cond["context"], ref, atol=1e-5)
    # Both conventions matter: soraflow's masked text and its own schedule give another video.
    for change in (dict(text_tokens=0), dict(schedule="shifted")):
        import dataclasses

        other = SoraPipeline.from_pretrained(wan_folder)
        other.config = dataclasses.replace(other.config, **change)
        assert np.abs(_ours(other).astype(np.float32) - want).max() > 8, change


def test_the_unipc_solver_and_its_times_are_diffusers(wan_unipc_folder):
    import dataclasses

    from diffusers import UniPCMultistepScheduler

    from soraflow.flow import unipc_schedule
    from soraflow.pipeline import SoraPipeline

    for steps, shift in ((4, 3.0), (50, 5.0)):
        ref = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
        ref.set_timesteps(steps)
        times, model_times = unipc_schedule(steps, shift=shift)
        assert torch.equal(times.float(), ref.sigmas)
        assert torch.equal((model_times[:-1] * 1000).round().long(), ref.timesteps)
    pipe = SoraPipeline.from_pretrained(wan_unipc_folder)
    assert pipe.config.schedule == "unipc"
    want = np.round(_diffusers_frames(wan_unipc_folder) * 255)
    assert np.abs(_ours(pipe).astype(np.float32) - want).max() <= 1
    pipe.config = dataclasses.replace(pipe.config, schedule="flow_match_euler")  # another solver: another video
    assert np.abs(_ours(pipe).astype(np.float32) - want).max() > 8


@pytest.fixture(scope="module")
def wan_two_experts_folder(wan_folder, tmp_path_factory) -> Path:
    """Wan2.2 A14B's layout: a second, low-noise transformer (other random weights) and boundary_ratio."""
    from diffusers import WanPipeline, WanTransformer3DModel

    pipe = WanPipeline.from_pretrained(wan_folder)
    torch.manual_seed(1)
    second = WanTransformer3DModel.from_config(pipe.transformer.config)
    folder = tmp_path_factory.mktemp("wan-a14b") / "wan"
    WanPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, transformer=pipe.transformer,
                transformer_2=second, vae=pipe.vae, scheduler=pipe.scheduler, boundary_ratio=0.875).save_pretrained(folder)
    return folder


def test_two_experts_switch_at_the_boundary_as_diffusers(wan_two_experts_folder, tmp_path):
    from diffusers import WanPipeline

    from soraflow.pipeline import SoraPipeline

    pipe = SoraPipeline.from_pretrained(wan_two_experts_folder)
    assert (pipe.config.low_noise_folder, pipe.config.boundary_ratio) == ("transformer_2", 0.875)
    s = SETTINGS
    ref = WanPipeline.from_pretrained(wan_two_experts_folder)
    for scale_2 in (None, 2.0):  # None: the first expert's scale, as in diffusers
        want = ref(PROMPT, negative_prompt=NEGATIVE, height=s["height"], width=s["width"], num_frames=s["num_frames"],
                   num_inference_steps=s["steps"], guidance_scale=s["guidance_scale"], guidance_scale_2=scale_2,
                   generator=torch.Generator().manual_seed(s["seed"]), output_type="np").frames[0]
        pipe.config.guidance_scale_2 = scale_2
        got = _ours(pipe).astype(np.float32)
        assert np.abs(got - np.round(want * 255)).max() <= 1, scale_2
    # The second expert runs: without it (the first for every step) the video is another one.
    one = SoraPipeline.from_pretrained(wan_two_experts_folder)
    one.low_noise_dit, one.config.boundary_ratio, one.config.low_noise_folder = None, None, None
    assert np.abs(_ours(one).astype(np.float32) - got).max() > 8
    # Saved as a soraflow folder, both experts come back.
    pipe.save_pretrained(tmp_path / "saved")
    again = SoraPipeline.from_pretrained(tmp_path / "saved")
    assert again.config.low_noise_folder == "dit_2" and np.array_equal(_ours(again), got.astype(np.uint8))


@pytest.fixture(scope="module")
def wan_i2v_folder(wan_folder, tmp_path_factory) -> Path:
    """Wan2.2 I2V's layout: a WanImageToVideoPipeline without an image encoder, whose transformer reads
    the latents, a 4-channel mask and the image's latents (4 + 4 + 4 channels here), two experts."""
    from diffusers import WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel

    t2v = WanPipeline.from_pretrained(wan_folder)
    experts = []
    for seed in (2, 3):
        torch.manual_seed(seed)
        experts.append(WanTransformer3DModel.from_config({**t2v.transformer.config, "in_channels": 12}))
    folder = tmp_path_factory.mktemp("wan-i2v") / "wan"
    WanImageToVideoPipeline(tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder, vae=t2v.vae, scheduler=t2v.scheduler,
                            transformer=experts[0], transformer_2=experts[1], boundary_ratio=0.9).save_pretrained(folder)
    return folder


def test_wan_image_to_video_through_channels_is_diffusers(wan_i2v_folder, tmp_path):
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    from soraflow.errors import InputError
    from soraflow.pipeline import SoraPipeline

    s = SETTINGS
    image = _image(32)
    ref = WanImageToVideoPipeline.from_pretrained(wan_i2v_folder)
    want = ref(image=Image.fromarray(image), prompt=PROMPT, negative_prompt=NEGATIVE, height=s["height"],
               width=s["width"], num_frames=s["num_frames"], num_inference_steps=s["steps"],
               guidance_scale=s["guidance_scale"], generator=torch.Generator().manual_seed(s["seed"]),
               output_type="np").frames[0]
    pipe = SoraPipeline.from_pretrained(wan_i2v_folder)
    assert pipe.config.image_condition == "channels" and pipe.config.low_noise_folder == "transformer_2"
    got = pipe(PROMPT, negative_prompt=NEGATIVE, image=image, size=(s["height"], s["width"]),
               num_frames=s["num_frames"], steps=s["steps"], guidance_scale=s["guidance_scale"], seed=s["seed"],
               progress=False).frames
    assert got.shape == (9, 32, 32, 3)
    assert np.abs(got.astype(np.float32) - np.round(want * 255)).max() <= 1
    # What the model cannot do is refused in one line that names what it can.
    for bad in (dict(), dict(video=got, seconds=1)):
        with pytest.raises(InputError, match="runs mode i2v only"):
            pipe(PROMPT, size=(32, 32), num_frames=9, progress=False, **bad)
    with pytest.raises(InputError, match="in one window: at most 81 frames"):
        pipe(PROMPT, image=image, size=(32, 32), num_frames=85, progress=False)


def test_the_cli_runs_a_wan_folder_and_refuses_what_it_cannot_run(wan_folder, tmp_path, capsys):
    import shutil

    from soraflow.cli import main

    out = tmp_path / "wan.mp4"
    assert main(["generate", PROMPT, "--model", str(wan_folder), "--size", "32x32", "--frames", "9", "--steps", "2",
                 "-q", "-o", str(out)]) == 0
    meta = json.loads((tmp_path / "wan.mp4.json").read_text())
    assert meta["fps"] == 16 and meta["frames"] == 9 and meta["expanded_prompt"] == PROMPT  # no world grammar
    broken = tmp_path / "two-experts"  # a boundary, but no second transformer
    shutil.copytree(wan_folder, broken)
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({**index, "transformer_2": ["diffusers", "WanTransformer3DModel"],
                                                         "boundary_ratio": 0.875}))
    capsys.readouterr()
    assert main(["generate", PROMPT, "--model", str(broken), "-o", str(tmp_path / "x.mp4")]) == 2
    assert "without its transformer_2/ folder" in capsys.readouterr().err
    (broken / "model_index.json").write_text(json.dumps({**index, "image_encoder": ["transformers", "CLIPVisionModel"]}))
    assert main(["generate", PROMPT, "--model", str(broken), "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert "names an image_encoder, and its image_encoder/ or image_processor/ folder is missing" in err
    # --offload is for a GPU; on the CPU the weights are where it would put them
    assert main(["generate", PROMPT, "--model", str(wan_folder), "--offload", "model", "-o", str(tmp_path / "y.mp4")]) == 2
    assert "--offload model moves weights from CPU memory to a GPU" in capsys.readouterr().err


@pytest.fixture(scope="module")
def wan_ti2v_folder(wan_folder, tmp_path_factory) -> Path:
    """Wan2.2 TI2V-5B's layout: the residual VAE with a 2x2 pixel patch (16x spatial), a transformer on its
    latents alone, and expand_timesteps (per-token timesteps: the image as latent frame 0 at t = 0)."""
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

    t2v = WanPipeline.from_pretrained(wan_folder)
    torch.manual_seed(4)
    vae = AutoencoderKLWan(base_dim=8, decoder_base_dim=12, z_dim=6, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                           temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12,
                           out_channels=12, scale_factor_spatial=16, latents_mean=[0.1, -0.2, 0.05, 0.0, 0.3, -0.1],
                           latents_std=[1.5, 0.8, 1.2, 1.0, 0.9, 1.1])
    with torch.no_grad():
        for p in vae.parameters():  # a random VAE whose frames carry the latents' differences
            p.add_(torch.randn_like(p) * 0.05)
    transformer = WanTransformer3DModel.from_config({**t2v.transformer.config, "in_channels": 6, "out_channels": 6})
    folder = tmp_path_factory.mktemp("wan-ti2v") / "wan"
    WanPipeline(tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder, vae=vae, scheduler=t2v.scheduler,
                transformer=transformer, expand_timesteps=True).save_pretrained(folder)
    return folder


def test_wan22_ti2v_text_and_image_to_video_are_diffusers(wan_ti2v_folder):
    from diffusers import WanImageToVideoPipeline, WanPipeline
    from PIL import Image

    from soraflow.pipeline import SoraPipeline

    s = {**SETTINGS, "height": 64, "width": 64}
    pipe = SoraPipeline.from_pretrained(wan_ti2v_folder)
    c = pipe.config
    assert c.image_condition == "frames" and pipe.vae.spatial_factor == 16 and c.size_multiple == 32
    assert (c.fps, c.width, c.height, round(c.seconds * c.fps), c.window_latent_frames) == (24, 1280, 704, 121, 31)  # one window
    args = dict(negative_prompt=NEGATIVE, height=s["height"], width=s["width"], num_frames=s["num_frames"],
                num_inference_steps=s["steps"], guidance_scale=s["guidance_scale"], output_type="np")
    want = WanPipeline.from_pretrained(wan_ti2v_folder)(PROMPT, generator=torch.Generator().manual_seed(s["seed"]), **args).frames[0]
    mine = dict(negative_prompt=NEGATIVE, size=(s["height"], s["width"]), num_frames=s["num_frames"], steps=s["steps"],
                guidance_scale=s["guidance_scale"], seed=s["seed"], progress=False)
    got = pipe(PROMPT, **mine).frames
    assert got.shape == (9, 64, 64, 3) and np.abs(got.astype(np.float32) - np.round(want * 255)).max() <= 1
    # image-to-video: diffusers' WanImageToVideoPipeline with expand_timesteps on the same parts
    ref = WanPipeline.from_pretrained(wan_ti2v_folder)
    i2v = WanImageToVideoPipeline(tokenizer=ref.tokenizer, text_encoder=ref.text_encoder, vae=ref.vae, scheduler=ref.scheduler,
                                  transformer=ref.transformer, expand_timesteps=True)
    image = _image(64)
    want = i2v(image=Image.fromarray(image), prompt=PROMPT, generator=torch.Generator().manual_seed(s["seed"]), **args).frames[0]
    got = pipe(PROMPT, image=image, **mine).frames
    assert np.abs(got.astype(np.float32) - np.round(want * 255)).max() <= 1


@pytest.fixture(scope="module")
def wan21_i2v_folder(wan_folder, tmp_path_factory) -> Path:
    """Wan2.1 I2V-14B's layout: a CLIP vision encoder and its processor, a transformer with the image
    branch (image_dim) reading latents + mask + image latents, one expert."""
    import transformers
    from diffusers import WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel

    t2v = WanPipeline.from_pretrained(wan_folder)
    torch.manual_seed(5)
    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=20, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=16))
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = {**t2v.transformer.config, "in_channels": 12, "image_dim": 20, "added_kv_proj_dim": 24}
    transformer = WanTransformer3DModel.from_config(config)
    with torch.no_grad():
        for p in transformer.condition_embedder.image_embedder.parameters():
            p.normal_(0, 0.3)  # the image branch's path is zero nowhere
    folder = tmp_path_factory.mktemp("wan21-i2v") / "wan"
    WanImageToVideoPipeline(tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder, vae=t2v.vae, scheduler=t2v.scheduler,
                            transformer=transformer, image_encoder=clip, image_processor=processor).save_pretrained(folder)
    return folder


def test_wan21_image_to_video_with_its_clip_encoder_is_diffusers(wan21_i2v_folder, tmp_path):
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    from soraflow.pipeline import SoraPipeline

    s = SETTINGS
    image = _image(32)
    ref = WanImageToVideoPipeline.from_pretrained(wan21_i2v_folder)
    want = ref(image=Image.fromarray(image), prompt=PROMPT, negative_prompt=NEGATIVE, height=s["height"],
               width=s["width"], num_frames=s["num_frames"], num_inference_steps=s["steps"],
               guidance_scale=s["guidance_scale"], generator=torch.Generator().manual_seed(s["seed"]),
               output_type="np").frames[0]
    pipe = SoraPipeline.from_pretrained(wan21_i2v_folder)
    assert pipe.image_encoder is not None and pipe.config.image_condition == "channels"
    kw = dict(negative_prompt=NEGATIVE, size=(s["height"], s["width"]), num_frames=s["num_frames"], steps=s["steps"],
              guidance_scale=s["guidance_scale"], seed=s["seed"], progress=False)
    got = pipe(PROMPT, image=image, **kw).frames
    assert np.abs(got.astype(np.float32) - np.round(want * 255)).max() <= 1
    # the CLIP tokens matter: without them (zeros) it is another video
    real = pipe.image_encoder
    pipe.image_encoder = lambda images: torch.zeros_like(real(images))
    assert np.abs(pipe(PROMPT, image=image, **kw).frames.astype(np.float32) - got).max() > 8
    pipe.image_encoder = real
    # saved as a soraflow folder it references the CLIP encoder and gives the same frames
    pipe.save_pretrained(tmp_path / "saved")
    again = SoraPipeline.from_pretrained(tmp_path / "saved")
    assert np.array_equal(again(PROMPT, image=image, **kw).frames, got)


def test_wan21_first_last_frame_is_connect_of_two_images_and_is_diffusers(wan21_i2v_folder, tmp_path_factory):
    """FLF2V's layout (the image branch with a position table over both images' tokens): mode connect of
    two images gives diffusers' WanImageToVideoPipeline(image, last_image) frames."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from PIL import Image

    from soraflow.errors import InputError
    from soraflow.pipeline import SoraPipeline

    base = WanImageToVideoPipeline.from_pretrained(wan21_i2v_folder)
    torch.manual_seed(6)
    transformer = WanTransformer3DModel.from_config({**base.transformer.config, "pos_embed_seq_len": 2 * 5})
    with torch.no_grad():
        for p in transformer.condition_embedder.image_embedder.parameters():
            p.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("wan-flf2v") / "wan"
    WanImageToVideoPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae, scheduler=base.scheduler,
                            transformer=transformer, image_encoder=base.image_encoder,
                            image_processor=base.image_processor).save_pretrained(folder)
    s = SETTINGS
    yy, xx = np.mgrid[0:32, 0:32]
    first = np.stack([8 * xx, 8 * yy, np.full_like(xx, 90)], -1).astype(np.uint8)
    last = first[::-1, ::-1].copy()
    last[4:12, 4:12] = (20, 200, 40)
    ref = WanImageToVideoPipeline.from_pretrained(folder)
    want = ref(image=Image.fromarray(first), last_image=Image.fromarray(last), prompt=PROMPT, negative_prompt=NEGATIVE,
               height=32, width=32, num_frames=9, num_inference_steps=s["steps"], guidance_scale=s["guidance_scale"],
               generator=torch.Generator().manual_seed(s["seed"]), output_type="np").frames[0]
    pipe = SoraPipeline.from_pretrained(folder)
    assert pipe.config.last_frame
    kw = dict(negative_prompt=NEGATIVE, size=(32, 32), steps=s["steps"], guidance_scale=s["guidance_scale"],
              seed=s["seed"], progress=False)
    got = pipe(PROMPT, video=[first[None], last[None]], num_frames=7, **kw).frames  # 7 between: 9 in all
    assert got.shape == (9, 32, 32, 3)
    assert np.abs(got.astype(np.float32) - np.round(want * 255)).max() <= 1
    with pytest.raises(InputError, match="runs mode connect only"):
        pipe(PROMPT, image=first, num_frames=9, **kw)


def test_the_per_frame_timestep_modes_run_on_wan_text_to_video_weights(wan_folder):
    """Extend, loop and connect hold given latents at t = 0, which Wan's T2V weights never trained on:
    they run (an approximation, docs/generate.md), keep the given clip's frames and make the asked length."""
    from soraflow.pipeline import SoraPipeline

    pipe = SoraPipeline.from_pretrained(wan_folder)
    kw = dict(size=(32, 32), steps=2, guidance_scale=1.0, seed=0, progress=False)
    clip = pipe(PROMPT, num_frames=9, **kw).frames
    longer = pipe(PROMPT, video=clip, mode="extend", num_frames=8, **kw).frames
    assert longer.shape[0] == 17 and np.array_equal(longer[:9], clip)
    joined = pipe(PROMPT, video=[clip, clip[::-1].copy()], mode="connect", num_frames=7, **kw).frames
    assert joined.shape[0] == 9 + 7 + 9 and np.array_equal(joined[:9], clip) and np.array_equal(joined[-9:], clip[::-1])
    loop = pipe(PROMPT, mode="loop", num_frames=9, **kw).frames
    assert loop.shape == (8, 32, 32, 3)  # a loop is 4k frames: the last leads into the first


def _present(module) -> bool:
    """Whether a module's weights are all there: with ``check=True`` offload leaves meta tensors behind."""
    return all(p.device.type != "meta" for p in module.parameters())


def test_model_offload_moves_one_model_at_a_time_and_keeps_the_video(wan_two_experts_folder):
    """``check=True`` empties every model that is off the device, so a use the offload did not place
    fails; on a CPU the "device" is the CPU and the video must be the same to the bit."""
    from soraflow.pipeline import SoraPipeline

    pipe = SoraPipeline.from_pretrained(wan_two_experts_folder)
    want = _ours(pipe)
    pipe.enable_model_cpu_offload("cpu", check=True)
    models = {"text_encoder": pipe.text_encoder.model, "dit": pipe.dit, "low_noise_dit": pipe.low_noise_dit,
              "vae": pipe.vae}
    assert not any(_present(m) for m in models.values())
    seen = []
    # the VAE is used through encode/decode, not its forward: watch its decoder
    watched = {**models, "vae": pipe.vae.decoder}
    hooks = [m.register_forward_pre_hook(lambda _m, _a, n=n: seen.append(
        (n, [k for k, v in models.items() if _present(v)]))) for n, m in watched.items()]
    assert np.array_equal(_ours(pipe), want)
    for hook in hooks:
        hook.remove()
    assert all(present == [name] for name, present in seen), seen  # one model on the device at a time
    order = [name for i, (name, _) in enumerate(seen) if i == 0 or seen[i - 1][0] != name]
    assert order == ["text_encoder", "dit", "low_noise_dit", "vae"]  # each moved once: experts switch once
    assert pipe.offload.on_device() == [] and not any(_present(m) for m in models.values())  # empty afterwards
    sizes = {k: sum(p.numel() * p.element_size() for p in m.parameters()) + sum(
        b.numel() * b.element_size() for b in m.buffers()) for k, m in models.items()}
    assert pipe.offload.peak_bytes == max(sizes.values())
    pipe.disable_offload()
    assert all(p.device.type == "cpu" for m in models.values() for p in m.parameters())
    assert np.array_equal(_ours(pipe), want)


def test_sequential_offload_holds_one_block_and_keeps_the_video(wan21_i2v_folder):
    """Image-to-video with Wan2.1's CLIP encoder: five models, each streamed block by block."""
    from soraflow.pipeline import SoraPipeline

    pipe = SoraPipeline.from_pretrained(wan21_i2v_folder)
    image = _image(32)
    kw = dict(negative_prompt=NEGATIVE, size=(32, 32), num_frames=9, steps=2, guidance_scale=5.0, seed=3,
              progress=False)
    want = pipe(PROMPT, image=image, **kw).frames
    pipe.enable_model_cpu_offload("cpu", check=True)
    assert np.array_equal(pipe(PROMPT, image=image, **kw).frames, want)
    whole_model_peak = pipe.offload.peak_bytes
    pipe.enable_sequential_cpu_offload("cpu", check=True)
    blocks = list(pipe.dit.blocks) + list(pipe.text_encoder.model.encoder.block) + list(
        pipe.image_encoder.model.encoder.layers) + list(pipe.vae.decoder.up_blocks)
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, _a: seen.append((m, [x for x in blocks if _present(x)])))
             for b in blocks]
    assert np.array_equal(pipe(PROMPT, image=image, **kw).frames, want)
    for hook in hooks:
        hook.remove()
    assert {id(m) for m, _ in seen} == {id(b) for b in blocks}  # every block ran ...
    assert all([id(x) for x in present] == [id(m)] for m, present in seen)  # ... alone on the device
    assert 0 < pipe.offload.peak_bytes < whole_model_peak / 2
    with pytest.raises(Exception, match="disable_offload"):
        pipe.to("cpu")
    pipe.disable_offload()
    assert np.array_equal(pipe(PROMPT, image=image, **kw).frames, want)


def test_bf16_text_encoder_and_vae_on_the_cpu_and_offload_at_load(wan_folder):
    from soraflow.errors import InputError
    from soraflow.pipeline import SoraPipeline

    want = _ours(SoraPipeline.from_pretrained(wan_folder)).astype(np.float32)
    pipe = SoraPipeline.from_pretrained(wan_folder, dtype="bfloat16")
    assert pipe.text_encoder.dtype == pipe.vae.quant_conv.weight.dtype == pipe.dit.proj_out.weight.dtype == torch.bfloat16
    got = _ours(pipe).astype(np.float32)

    def psnr(a, b):
        return 10 * np.log10(255**2 / max(float(np.mean((a - b) ** 2)), 1e-9))

    assert psnr(got, want) > 30  # bf16 rounding, not another video
    # offload at load: the same bf16 weights, kept in CPU memory and placed per model (the VAE in its
    # plain layout, not the CPU's channels-last one: other bf16 rounding)
    off = SoraPipeline.from_pretrained(wan_folder, dtype="bfloat16", offload="model")
    assert off.offload.mode == "model" and off.text_encoder.dtype == torch.bfloat16 and not off.vae.channels_last
    assert psnr(_ours(off).astype(np.float32), got) > 40
    with pytest.raises(InputError, match="offload must be one of model, sequential, got 'gpu'"):
        SoraPipeline.from_pretrained(wan_folder, offload="gpu")
