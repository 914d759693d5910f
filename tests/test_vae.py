"""The causal 3D VAE: diffusers oracle, causality, chunked/tiled equivalence, frame policy, loading, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from soraflow.errors import CheckpointError, InputError
from soraflow.models.vae import VAEConfig, VideoVAE, vae_config

TINY = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[], temporal_downsample=[False, True, True])


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter (norm gains too), so the oracle test exercises all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> VideoVAE:
    torch.manual_seed(0)
    return _randomize(VideoVAE(VAEConfig(**TINY)))


def _video(t: int, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, t, h, w, generator=g) * 2 - 1


# ---- diffusers oracle ------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 9])
def test_matches_diffusers_autoencoder_kl_wan(frames):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    config = VAEConfig(**TINY)
    ref = _randomize(diffusers.AutoencoderKLWan(**{k: v for k, v in config.to_diffusers().items() if not k.startswith("_")}))
    ours = VideoVAE(config).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # same keys, no mapping
    x = _video(frames)
    with torch.no_grad():
        ref_post = ref.encode(x).latent_dist
        post = ours.encode(x)
        assert post.mean.shape == (1, 4, 1 + (frames - 1) // 4, 4, 4)
        assert (post.mean - ref_post.mean).abs().max() <= 1e-4
        assert (post.logvar - ref_post.logvar).abs().max() <= 1e-4
        ref_out = ref.decode(ref_post.mean).sample
        out = ours.decode(ref_post.mean)
    assert out.shape == x.shape
    assert (out - ref_out).abs().max() <= 1e-4
    assert out.std() > 1e-3  # a non-trivial output, so agreement means something


# Wan2.2's VAE layout (TI2V-5B's shape, shrunk): residual blocks with space/time-to-channel shortcuts and
# a 2x2 pixel patch, so 16x spatial compression.
TINY22 = dict(base_dim=8, decoder_base_dim=12, z_dim=6, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
              temporal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12, out_channels=12)


@pytest.mark.parametrize("frames", [1, 9, 13])
def test_wan22_residual_vae_matches_diffusers(frames):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    config = VAEConfig(**TINY22)
    assert (config.spatial_factor, config.temporal_factor, config.pixel_channels) == (16, 4, 3)
    ref = _randomize(diffusers.AutoencoderKLWan(**{k: v for k, v in config.to_diffusers().items() if not k.startswith("_")}))
    ours = VideoVAE(config).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # diffusers' module names, one for one
    x = _video(frames, 32, 48)
    with torch.no_grad():
        ref_post = ref.encode(x).latent_dist
        assert ref_post.mean.shape == (1, 6, 1 + (frames - 1) // 4, 2, 3)
        for chunk in (None, 4, 8):  # whole clip and causal chunks give diffusers' per-chunk result
            post = ours.encode(x, chunk_frames=chunk)
            assert (post.mean - ref_post.mean).abs().max() <= 1e-4, chunk
        ref_out = ref.decode(ref_post.mean).sample
        assert ref_out.abs().max() > 0.05
        for chunk in (None, 1, 2):
            out = ours.decode(ref_post.mean, chunk_latents=chunk)
            assert out.shape == x.shape and (out - ref_out).abs().max() <= 1e-4, chunk
        # the training forward (whole clip, no cache) decodes as diffusers does
        recon, posterior = ours(x)
        torch.testing.assert_close(recon.clamp(-1, 1), ref.decode(posterior.mode()).sample, atol=1e-4, rtol=0)  # unclamped for training


def test_wan22_vae_folder_loads_both_ways(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(1)
    ref = _randomize(diffusers.AutoencoderKLWan(**{k: v for k, v in VAEConfig(**TINY22).to_diffusers().items() if not k.startswith("_")}))
    ref.save_pretrained(tmp_path / "vae")
    ours = VideoVAE.from_pretrained(tmp_path / "vae")
    assert ours.config.is_residual and ours.config.patch_size == 2 and ours.spatial_factor == 16
    ours.save_pretrained(tmp_path / "again")
    back = diffusers.AutoencoderKLWan.from_pretrained(tmp_path / "again")
    assert back.config.is_residual and back.config.patch_size == 2
    x = _video(5, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x).latent_dist.mean, ref.encode(x).latent_dist.mean)


def test_wan21_preset_has_the_released_vae_layout():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):  # shapes only: no 127M-parameter allocation
        ref = diffusers.AutoencoderKLWan()  # diffusers' defaults are the released Wan2.1 VAE
        ours = VideoVAE(vae_config("wan2.1"))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.config.latents_mean == list(ref.config.latents_mean)
    assert ours.config.latents_std == list(ref.config.latents_std)


def test_saved_folder_loads_in_diffusers_and_back(tiny, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    tiny.save_pretrained(tmp_path / "vae")
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["_class_name"] == "AutoencoderKLWan"
    ref = diffusers.AutoencoderKLWan.from_pretrained(tmp_path / "vae").eval()
    again = VideoVAE.from_pretrained(tmp_path / "vae")
    x = _video(5, 16, 16)
    with torch.no_grad():
        assert (ref.encode(x).latent_dist.mean - tiny.encode(x).mean).abs().max() <= 1e-4
        assert torch.equal(again.encode(x).mean, tiny.encode(x).mean)
    ref.save_pretrained(tmp_path / "from_diffusers")  # diffusers' own folder loads unchanged
    assert torch.equal(VideoVAE.from_pretrained(tmp_path / "from_diffusers").decoder.conv_out.weight, tiny.decoder.conv_out.weight)


# ---- causality, chunking, tiling -------------------------------------------------------------


def test_first_frame_is_encoded_alone_and_decode_is_causal(tiny):
    x = _video(9, 16, 16)
    with torch.no_grad():
        video = tiny.encode(x).mean
        image = tiny.encode(x[:, :, :1]).mean
        later = x.clone()
        later[:, :, 5:] = 0.0  # change only the last latent frame's pixels
        assert torch.allclose(video[:, :, :1], image, atol=1e-6)
        changed = tiny.encode(later).mean
        assert torch.allclose(changed[:, :, :2], video[:, :, :2], atol=1e-6)
        assert not torch.allclose(changed[:, :, 2:], video[:, :, 2:], atol=1e-3)
        z2 = video.clone()
        z2[:, :, 2] += 1.0
        a, b = tiny.decode(video), tiny.decode(z2)
        assert torch.allclose(a[:, :, :5], b[:, :, :5], atol=1e-6)
        assert not torch.allclose(a[:, :, 5:], b[:, :, 5:], atol=1e-3)


def test_chunked_equals_whole_clip(tiny):
    x = _video(17, 16, 16)
    with torch.no_grad():
        whole = tiny.encode(x, chunk_frames=None).mean
        for chunk in (4, 12):
            assert (tiny.encode(x, chunk_frames=chunk).mean - whole).abs().max() <= 1e-5
        z = torch.randn(1, 4, 5, 2, 2, generator=torch.Generator().manual_seed(3))
        whole = tiny.decode(z, chunk_latents=None)
        for chunk in (1, 4):
            assert (tiny.decode(z, chunk_latents=chunk) - whole).abs().max() <= 1e-5
        streamed = list(tiny.decode_iter(z, chunk_latents=2))
    assert [f.shape[2] for f in streamed] == [1, 8, 8]
    assert (torch.cat(streamed, 2) - whole).abs().max() <= 1e-5


def test_auto_chunks_follow_the_pixel_budget(tiny, monkeypatch):
    import soraflow.models.vae as vae_module

    z = torch.randn(1, 4, 9, 4, 4, generator=torch.Generator().manual_seed(5))  # 33 frames of 32x32
    with torch.no_grad():
        whole = tiny.decode(z, chunk_latents=None)
        # the default budget: 4 latent frames (16 pixel frames) a chunk at this size
        assert [f.shape[2] for f in tiny.decode_iter(z)] == [1, 16, 16]
        # a budget of two latent frames' pixels (2 x 4 x 32 x 32): chunks of 2, the same frames
        monkeypatch.setattr(vae_module, "CHUNK_PIXELS", 2 * 4 * 32 * 32)
        streamed = list(tiny.decode_iter(z))
        assert [f.shape[2] for f in streamed] == [1, 8, 8, 8, 8]
        assert (torch.cat(streamed, 2) - whole).abs().max() <= 1e-5
        # below one latent frame's pixels: 1 (diffusers' granularity), never 0
        monkeypatch.setattr(vae_module, "CHUNK_PIXELS", 100)
        assert [f.shape[2] for f in tiny.decode_iter(z)] == [1] + [4] * 8
        x = _video(17, 32, 32)
        ref = tiny.encode(x, chunk_frames=4).mean
        assert torch.equal(tiny.encode(x).mean, ref)  # encode follows the same budget: 4-frame chunks
    with pytest.raises(InputError, match="chunk_latents"):
        tiny.decode_iter(z, chunk_latents="4")
    with pytest.raises(InputError, match="chunk_frames"):
        tiny.encode(x, chunk_frames="many")


def test_frames_up_to_720p_are_not_tiled_unless_asked(tiny):
    # tiled=None tiles by pixels per frame (diffusers never tiles unless asked, and tiles change the
    # frames at the seams); lower the threshold to see the same call tile.
    z = torch.randn(1, 4, 1, 16, 16, generator=torch.Generator().manual_seed(6))  # 128x128 frames
    tiny.tiling.tile, tiny.tiling.overlap = 8, 2
    try:
        with torch.no_grad():
            whole, tiled = tiny.decode(z, tiled=False), tiny.decode(z, tiled=True)
            assert (whole - tiled).abs().max() > 1e-3  # the seams differ
            assert torch.equal(tiny.decode(z), whole)  # 128x128 <= 720p: whole frames
            tiny.tiling.max_pixels = 64 * 64
            assert torch.equal(tiny.decode(z), tiled)
    finally:
        tiny.tiling.tile, tiny.tiling.overlap, tiny.tiling.max_pixels = 32, 8, 1280 * 720


def test_tile_blending_is_exact_for_a_pointwise_map(tiny):
    # With a per-pixel map (no receptive field across tiles) tiles + blend must reproduce the whole.
    z = torch.randn(1, 4, 2, 20, 28)
    tiny.tiling.tile, tiny.tiling.overlap = 8, 3
    try:
        up = lambda t, key=None: t.repeat_interleave(8, -1).repeat_interleave(8, -2) * 2.0  # noqa: E731
        out = tiny._tiled(z, 1, up, down=False, sf=8)
        assert torch.allclose(out, up(z), atol=1e-5)
        x = torch.randn(1, 3, 1, 64, 48)
        down = lambda t: t[..., ::8, ::8] + 1.0  # noqa: E731
        assert torch.allclose(tiny._tiled(x, 8, down, down=True), down(x), atol=1e-5)
    finally:
        tiny.tiling.tile, tiny.tiling.overlap = 32, 8


def test_tiled_decode_close_to_untiled_on_smooth_latents(tiny):
    # A random decoder has global (per-frame) attention, so tiles cannot match exactly; what must
    # hold: one tile covering the frame is exact, and blended overlaps shrink the seams.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    z = torch.stack([torch.sin(2 * xx), torch.cos(2 * yy), xx * yy, xx + yy])[None, :, None]  # (1, 4, 1, 16, 16)
    errors = {}
    try:
        with torch.no_grad():
            whole = tiny.decode(z, tiled=False)
            for tile, overlap in [(16, 0), (8, 0), (8, 4)]:
                tiny.tiling.tile, tiny.tiling.overlap = tile, overlap
                tiled = tiny.decode(z, tiled=True)
                assert tiled.shape == whole.shape == (1, 3, 1, 128, 128)
                err = (tiled - whole).abs()
                errors[tile, overlap] = (err.mean().item(), err[..., 56:72, :].mean().item())  # seam rows at 64 px
    finally:
        tiny.tiling.tile, tiny.tiling.overlap = 32, 8
    assert errors[16, 0] == (0.0, 0.0)
    assert errors[8, 4][1] < 0.75 * errors[8, 0][1]
    assert errors[8, 4][0] < 0.3 * whole.std()


# ---- frame-count policy ----------------------------------------------------------------------


def test_frame_policy_pad_trim_error(tiny):
    x = _video(7, 16, 16)
    with torch.no_grad():
        padded = tiny.encode(x).mean  # 7 -> 9 frames by repeating the last
        explicit = tiny.encode(torch.cat([x, x[:, :, -1:], x[:, :, -1:]], 2)).mean
        assert padded.shape[2] == 3 == tiny.latent_frames(7)
        assert torch.allclose(padded, explicit, atol=1e-6)
        assert tiny.decode(padded, num_frames=7).shape[2] == 7
        assert tiny.encode(x, frame_policy="trim").mean.shape[2] == 2 == tiny.latent_frames(7, "trim")
    with pytest.raises(InputError, match="not 1 \\+ 4k"):
        tiny.encode(x, frame_policy="error")


# ---- normalisation, presets ------------------------------------------------------------------


def test_normalize_roundtrip_and_presets():
    cfg = vae_config("wan2.1")
    assert (cfg.base_dim, cfg.z_dim, cfg.temporal_factor, cfg.spatial_factor) == (96, 16, 4, 8)
    vae = VideoVAE(VAEConfig(**TINY, latents_mean=[1.0, 2.0, 3.0, 4.0], latents_std=[2.0] * 4))
    z = torch.randn(2, 4, 3, 4, 4)
    n = vae.normalize(z)
    assert torch.allclose(n[:, 1], (z[:, 1] - 2.0) / 2.0)
    assert torch.allclose(vae.denormalize(n), z, atol=1e-6)
    with pytest.raises(InputError):
        vae_config("huge")


# ---- bad input -------------------------------------------------------------------------------


def test_bad_pixels_raise_input_error(tiny):
    with pytest.raises(InputError, match="dtype torch.uint8"):
        tiny.encode(torch.zeros(1, 3, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(InputError, match="expected 3 channels"):
        tiny.encode(torch.zeros(1, 4, 1, 32, 32))
    with pytest.raises(InputError, match="multiples of 8"):
        tiny.encode(torch.zeros(1, 3, 1, 30, 32))
    with pytest.raises(InputError, match="latent channels"):
        tiny.decode(torch.zeros(1, 5, 1, 4, 4))
    with pytest.raises(InputError, match="latent channels"):
        tiny.decode_iter(torch.zeros(1, 5, 1, 4, 4))  # at the call, before any frame is asked for


def test_bad_checkpoints_raise_checkpoint_error(tiny, tmp_path):
    from safetensors.torch import save_file

    folder = tiny.save_pretrained(tmp_path / "vae")
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    del state["decoder.conv_out.bias"]
    state["decoder.extra.weight"] = torch.zeros(1)
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match="missing key.*decoder.conv_out.bias.*unexpected key.*decoder.extra.weight"):
        VideoVAE.from_pretrained(folder)
    data = (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        VideoVAE.from_pretrained(folder)
    (folder / "config.json").write_text('{"base_dim": 8, "bogus": 1}')
    with pytest.raises(CheckpointError, match="bogus"):
        VideoVAE.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="config.json missing"):
        VideoVAE.from_pretrained(tmp_path / "nowhere")


def test_fast_path_matches_fp32_within_bf16_tolerance():
    torch.manual_seed(0)
    ref = _randomize(VideoVAE(VAEConfig(**TINY)))
    fast = VideoVAE(VAEConfig(**TINY)).eval()
    fast.load_state_dict(ref.state_dict())
    fast.to_fast()
    assert fast.decoder.conv_in.weight.dtype == torch.bfloat16
    assert fast.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = _video(5, 16, 16)
    with torch.no_grad():
        mean = ref.encode(x).mean
        fast_mean = fast.encode(x).mean
        assert fast_mean.dtype == torch.bfloat16
        assert (fast_mean.float() - mean).abs().max() <= 0.05 * mean.abs().max()
        out, fast_out = ref.decode(mean), fast.decode(mean).float()
    assert (fast_out - out).abs().max() <= 0.1  # pixels in [-1, 1]; bf16 keeps ~3 significant digits


def test_tiled_streaming_keeps_a_causal_cache_per_tile(tiny):
    z = torch.randn(1, 4, 2, 10, 10, generator=torch.Generator().manual_seed(5))
    x = _video(5, 80, 80, seed=2)
    tiny.tiling.tile, tiny.tiling.overlap = 6, 2  # 2 x 2 tiles
    try:
        with torch.no_grad():
            whole = tiny.decode(z, tiled=True, chunk_latents=None)
            streamed = tiny.decode(z, tiled=True, chunk_latents=1)
            enc_whole = tiny.encode(x, tiled=True, chunk_frames=None).mean
            enc_chunked = tiny.encode(x, tiled=True, chunk_frames=4).mean
    finally:
        tiny.tiling.tile, tiny.tiling.overlap = 32, 8
    assert (streamed - whole).abs().max() <= 1e-5
    assert enc_chunked.shape == (1, 4, 2, 10, 10)
    assert (enc_chunked - enc_whole).abs().max() <= 1e-5


def test_from_scratch_init_carries_the_input_to_the_latents_and_back():
    """With PyTorch's default init the latents of different flat colours differed by ~10% of their
    size and the reconstruction by 0.2%: training started from a hue-less grey. Ours passes the signal."""
    torch.manual_seed(0)
    vae = VideoVAE(vae_config("small"))
    colours = torch.rand(8, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x = colours[:, :, None, None, None].expand(-1, 3, 1, 32, 32).contiguous()
    with torch.no_grad():
        recon, posterior = vae(x)
    latent = posterior.mean.mean(dim=(2, 3, 4))  # (8, z)
    assert (latent.std(0).mean() / latent.abs().mean()).item() > 0.5
    assert recon.mean(dim=(2, 3, 4)).std(0).mean().item() > 0.03
    assert abs(posterior.logvar.mean().item() + 6.0) < 0.5 and posterior.logvar.max().item() < -3.0  # narrow posterior


def test_frame_psnr_script_inverting_the_decoder_beats_the_encoders_latents():
    # scripts/vae_frame_psnr.py --invert: latents optimised through the frozen decoder must draw the clip better
    # (in the box-weighted error they minimise) than the encoder's, or the encoder/decoder split it reports is wrong.
    import importlib.util
    from pathlib import Path

    import numpy as np

    path = Path(__file__).resolve().parents[1] / "scripts" / "vae_frame_psnr.py"
    spec = importlib.util.spec_from_file_location("vae_frame_psnr", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(0)
    vae = VideoVAE(vae_config("tiny")).eval().requires_grad_(False)
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    frames[..., 2] = np.linspace(60, 200, 32, dtype=np.uint8)  # a blue gradient
    box = np.zeros((5, 32, 32), bool)
    for t in range(5):  # a red square moving right
        frames[t, 10:18, 4 + 3 * t:12 + 3 * t] = (230, 20, 20)
        box[t, 10:18, 4 + 3 * t:12 + 3 * t] = True

    def weighted(rec):
        return float(((1 + 10 * box) * ((rec - frames.astype(np.float32)) ** 2).mean(-1)).mean())

    encoded = script.reconstruct(vae, frames, box, 0, 0.05)
    inverted = script.reconstruct(vae, frames, box, 20, 0.05)
    assert encoded.shape == inverted.shape == frames.shape
    assert weighted(inverted) < 0.8 * weighted(encoded)
    assert not any(p.grad is not None for p in vae.parameters())  # the decoder stayed frozen


@torch.no_grad()
def test_frame_wise_latents_are_per_frame_images_stacked():
    # frame_pack 4: each frame encoded alone, four stacked per latent frame; decode unstacks them.
    from soraflow.models.vae import VideoVAE, vae_config
    from soraflow.models.vae_blocks import CausalCache

    torch.manual_seed(0)
    vae = VideoVAE(vae_config("tiny", frame_pack=4)).eval()
    assert (vae.temporal_factor, vae.config.latent_channels) == (4, 16)
    x = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    mean = vae.encode(x).mean
    assert mean.shape == (2, 16, 3, 4, 4)
    one = lambda b, t: vae._encode_moments(x[b:b + 1, :, t:t + 1], None)[0, :4, 0]  # noqa: E731
    for slot in range(4):
        torch.testing.assert_close(mean[1, 4 * slot:4 * slot + 4, 0], one(1, 0))  # frame 0, four copies
        torch.testing.assert_close(mean[0, 4 * slot:4 * slot + 4, 2], one(0, 5 + slot))  # frames 5-8
    out = vae.decode(mean)
    ref = vae._decode_chunk(mean[:1, 0:4, 2:3], CausalCache()).clamp(-1, 1)[:, :, 0]
    torch.testing.assert_close(out[:1, :, 5], ref)
    recon, _ = vae(x)
    torch.testing.assert_close(recon.clamp(-1, 1), out)
    assert vae.decode(mean, num_frames=7).shape[2] == 7


def test_causal_conv_caches_only_real_frames_and_chunks_equal_the_whole():
    from soraflow.models.vae_blocks import CausalCache, WanCausalConv3d, WanRMS_norm

    torch.manual_seed(0)
    conv = WanCausalConv3d(3, 5, 3, padding=1).eval()
    x = torch.randn(1, 3, 9, 6, 6)
    with torch.no_grad():
        whole = conv(x)
        cache = CausalCache()
        parts = [conv(x[:, :, :1], cache)]
        assert cache.get(conv).shape[2] == 1  # frame 0 alone: its padding zero is not kept
        parts.append(conv(x[:, :, 1:5], cache))
        assert cache.get(conv).shape[2] == 2
        parts.append(conv(x[:, :, 5:], cache))
    assert (torch.cat(parts, 2) - whole).abs().max() <= 1e-6
    # The norm written into a given view (a conv's padded input) gives the same numbers.
    norm = WanRMS_norm(3, images=False)
    buf = torch.zeros(1, 3, 11, 6, 6)
    with torch.no_grad():
        out = norm(x, out=buf[:, :, 2:])
        assert out.data_ptr() == buf[:, :, 2:].data_ptr() and torch.equal(out, norm(x))
    assert torch.equal(buf[:, :, :2], torch.zeros(1, 3, 2, 6, 6))


def test_residual_block_inference_path_equals_the_autograd_one_chunk_by_chunk():
    from soraflow.models.vae_blocks import CausalCache, WanResidualBlock

    torch.manual_seed(0)
    block = WanResidualBlock(4, 6)
    x = torch.randn(1, 4, 9, 5, 5, requires_grad=True)
    ref = torch.cat([block(x[:, :, :1], c := CausalCache()), block(x[:, :, 1:5], c), block(x[:, :, 5:], c)], 2)
    with torch.no_grad():  # norms written straight into the convs' padded inputs
        c = CausalCache()
        out = torch.cat([block(x[:, :, :1], c), block(x[:, :, 1:5], c), block(x[:, :, 5:], c)], 2)
    assert (out - ref.detach()).abs().max() <= 1e-5
    assert (out - block(x).detach()).abs().max() <= 1e-5  # and chunked equals whole
