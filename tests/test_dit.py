"""DiT: equal to diffusers' WanTransformer3DModel on copied weights, any grid, per-token timesteps, masks, I/O."""

from __future__ import annotations

import json

import pytest
import torch

from soraflow.errors import CheckpointError, InputError
from soraflow.models.dit import DIT_PRESETS, DiT, DiTConfig, dit_config

diffusers = pytest.importorskip("diffusers")
from diffusers import WanTransformer3DModel  # noqa: E402

TINY = dit_config("tiny")


def _wan(cfg: DiTConfig) -> WanTransformer3DModel:
    kwargs = {k: v for k, v in cfg.to_diffusers_dict().items() if not k.startswith("_")}
    return WanTransformer3DModel(**kwargs)


@pytest.fixture(scope="module")
def pair():
    """diffusers' model with every parameter random (norm weights and tables too) and ours with its weights."""
    torch.manual_seed(0)
    ref = _wan(TINY).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.2)
    ours = DiT(TINY).eval()
    ours.load_state_dict(ref.state_dict())  # strict: identical key names and shapes
    return ref, ours


def _inputs(grid, batch=2, text_len=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, TINY.in_channels, *grid, generator=g)
    ctx = torch.randn(batch, text_len, TINY.text_dim, generator=g)
    return x, ctx, g


def _tokens(grid) -> int:
    pt, ph, pw = TINY.patch_size
    return (grid[0] // pt) * (grid[1] // ph) * (grid[2] // pw)


@pytest.mark.parametrize("grid", [(3, 6, 8), (1, 4, 4), (2, 8, 4)], ids=["video", "single-frame", "portrait"])
@torch.no_grad()
def test_matches_diffusers_scalar_t(pair, grid):
    ref, ours = pair
    x, ctx, _ = _inputs(grid)
    # Distinct times per sample, and one time for the batch (our fused-modulation path).
    for t in (torch.tensor([0.25, 0.9]), torch.tensor([0.6, 0.6])):
        expected = ref(x, t * 1000, ctx, return_dict=False)[0]
        got = ours(x, t, ctx)
        assert got.shape == x.shape
        assert expected.abs().max() > 0.5  # a real signal, not zeros
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@torch.no_grad()
def test_matches_diffusers_per_frame_and_per_token_t(pair):
    ref, ours = pair
    grid = (3, 6, 8)
    x, ctx, g = _inputs(grid)
    n, per_frame_tokens = _tokens(grid), _tokens(grid) // grid[0]
    # Image-to-video style: the first latent frame is given (t = 0), the rest are noisy.
    t_frames = torch.tensor([[0.0, 0.7, 0.7], [0.0, 0.3, 0.95]])
    t_tokens = t_frames.repeat_interleave(per_frame_tokens, dim=1)  # (B, N), diffusers' TI2V layout
    expected = ref(x, t_tokens * 1000, ctx, return_dict=False)[0]
    torch.testing.assert_close(ours(x, t_frames, ctx), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours(x, t_tokens, ctx), expected, atol=1e-4, rtol=0)
    # Arbitrary per-token times.
    t_rand = torch.rand(2, n, generator=g)
    expected = ref(x, t_rand * 1000, ctx, return_dict=False)[0]
    torch.testing.assert_close(ours(x, t_rand, ctx), expected, atol=1e-4, rtol=0)
    # The per-frame times matter: a different given-frame time gives a different output.
    assert (ours(x, t_frames.flip(1), ctx) - ours(x, t_frames, ctx)).abs().max() > 1e-3


@torch.no_grad()
def test_constant_per_frame_t_equals_scalar_t(pair):
    _, ours = pair
    grid = (3, 4, 4)
    x, ctx, _ = _inputs(grid)
    t = torch.tensor([0.4, 0.6])
    scalar = ours(x, t, ctx)
    torch.testing.assert_close(ours(x, t[:, None].expand(2, 3), ctx), scalar, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours(x, t[:, None].expand(2, _tokens(grid)), ctx), scalar, atol=1e-6, rtol=0)


@torch.no_grad()
def test_context_mask_hides_padded_tokens(pair):
    _, ours = pair
    x, ctx, g = _inputs((2, 4, 4), text_len=6)
    t = torch.tensor([0.5, 0.5])
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    changed = ctx.clone()
    changed[0, 4:] = torch.randn(2, TINY.text_dim, generator=g) * 5
    out = ours(x, t, ctx, mask)
    torch.testing.assert_close(ours(x, t, changed, mask), out, atol=1e-6, rtol=0)
    # Without the mask the same change is visible, so the check above can fail.
    assert (ours(x, t, changed) - ours(x, t, ctx))[0].abs().max() > 1e-3
    # An all-true mask is the same as no mask; sample 1 (all valid) is unaffected by sample 0's mask.
    torch.testing.assert_close(ours(x, t, ctx, torch.ones(2, 6, dtype=torch.bool)), ours(x, t, ctx), atol=0, rtol=0)
    torch.testing.assert_close(out[1], ours(x, t, ctx)[1], atol=1e-6, rtol=0)
    # A sample with no valid token (a dropped caption) gives finite output, not softmax's 0/0.
    assert torch.isfinite(ours(x, t, ctx, torch.zeros(2, 6, dtype=torch.bool))).all()


def test_fresh_model_predicts_zero_then_learns():
    torch.manual_seed(0)
    model = DiT(TINY)
    x, ctx, g = _inputs((2, 4, 4))
    t = torch.tensor([0.3, 0.8])
    assert torch.count_nonzero(model(x, t, ctx)) == 0
    target = torch.randn(x.shape, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.mse_loss(model(x, t, ctx), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    # adaLN-zero opened up: blocks and the timestep modulation received gradient, not just the head.
    assert model.blocks[0].scale_shift_table.abs().max() > 0
    assert model.condition_embedder.time_proj.weight.abs().max() > 0


def test_backward_with_per_token_t_and_autocast(pair):
    ref, _ = pair
    model = DiT(TINY)
    model.load_state_dict(ref.state_dict())
    x, ctx, _ = _inputs((3, 4, 4))
    t = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.2, 0.9]])
    with torch.inference_mode():  # sampling first caches this grid's rotary table; training must still work
        model(x, t, ctx)
    with torch.autocast("cpu", torch.bfloat16):
        out = model(x, t, ctx)
    assert out.dtype == torch.float32
    out.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["blocks.0.attn1.to_q.weight"].abs().max() > 0  # through rotary and QK norm
    with torch.no_grad():
        full = model(x, t, ctx)
    assert (out - full).abs().max() / full.abs().max() < 0.05  # bf16 is close to fp32


@torch.no_grad()
def test_bf16_weights_path(pair):
    _, ours = pair
    x, ctx, _ = _inputs((2, 4, 4))
    t = torch.tensor([0.5, 0.1])
    full = ours(x, t, ctx)
    half = DiT(TINY)
    half.load_state_dict(ours.state_dict())
    out = half.to(torch.bfloat16)(x, t, ctx)
    assert out.dtype == torch.float32
    assert (out - full).abs().max() / full.abs().max() < 0.05


def test_flops_counts_every_matmul(pair):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    _, ours = pair
    grid, text_len = (3, 6, 8), 7
    x, ctx, _ = _inputs(grid, text_len=text_len)
    t = torch.tensor([0.2, 0.7])  # two distinct times: the time MLP runs once per sample
    counter = FlopCounterMode(display=False)
    # The math backend decomposes attention into matmuls the counter sees (the CPU flash kernel is opaque to it).
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        ours(x, t, ctx)
    assert ours.flops(grid, text_len, batch_size=2) == counter.get_total_flops()
    assert ours.flops_per_step(grid, text_len, batch_size=2) == 3 * counter.get_total_flops()


def test_bad_inputs_raise_input_error(pair):
    _, ours = pair
    x, ctx, _ = _inputs((2, 4, 4))
    t = torch.tensor([0.5, 0.5])
    with pytest.raises(InputError, match="not a multiple of the patch size"):
        ours(torch.randn(2, TINY.in_channels, 2, 5, 4), t, ctx)
    with pytest.raises(InputError, match="latents"):
        ours(torch.randn(2, TINY.in_channels + 1, 2, 4, 4), t, ctx)
    with pytest.raises(InputError, match="text_dim"):
        ours(x, t, torch.randn(2, 3, TINY.text_dim + 1))
    with pytest.raises(InputError, match="per latent frame"):
        ours(x, torch.rand(2, 5), ctx)
    with pytest.raises(InputError, match="context_mask"):
        ours(x, t, ctx, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(InputError, match="unknown DiT preset"):
        dit_config("huge")


def test_save_load_roundtrip_both_ways(pair, tmp_path):
    ref, ours = pair
    x, ctx, _ = _inputs((2, 4, 4))
    t = torch.tensor([0.5, 0.2])
    with torch.no_grad():
        want = ours(x, t, ctx)
        # Ours -> our loader and diffusers' loader.
        ours.save_pretrained(tmp_path / "ours")
        torch.testing.assert_close(DiT.from_pretrained(tmp_path / "ours")(x, t, ctx), want, atol=0, rtol=0)
        theirs = WanTransformer3DModel.from_pretrained(tmp_path / "ours").eval()
        torch.testing.assert_close(theirs(x, t * 1000, ctx, return_dict=False)[0], want, atol=1e-4, rtol=0)
        # diffusers' sharded folder (index + shards) inside a pipeline folder -> ours.
        ref.save_pretrained(tmp_path / "pipe" / "transformer", max_shard_size="20KB")
        assert (tmp_path / "pipe" / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
        loaded = DiT.from_pretrained(tmp_path / "pipe", dtype=torch.bfloat16)
        # One of our pipeline folders: its config.json is the pipeline's, the DiT is in dit/.
        ours.save_pretrained(tmp_path / "sora" / "dit")
        (tmp_path / "sora" / "config.json").write_text(json.dumps({"_class_name": "SoraPipeline"}))
        torch.testing.assert_close(DiT.from_pretrained(tmp_path / "sora")(x, t, ctx), want, atol=0, rtol=0)
        assert loaded.config == TINY and loaded.proj_out.weight.dtype == torch.bfloat16


def test_from_pretrained_errors(pair, tmp_path):
    _, ours = pair
    with pytest.raises(CheckpointError, match="no config.json"):
        DiT.from_pretrained(tmp_path)
    ours.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "num_layers": 3}))
    with pytest.raises(CheckpointError, match="missing"):
        DiT.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "image_dim": 1280}))
    with pytest.raises(CheckpointError, match="I2V"):
        DiT.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "m" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="cannot read"):
        DiT.from_pretrained(tmp_path / "m")


def test_presets_have_wan_shapes():
    small = DiT(DIT_PRESETS["small"])
    assert 20e6 <= small.num_parameters() <= 40e6
    assert small.config.text_dim == 384 and small.config.in_channels == 16
    for name, billions in (("wan-1.3b", (1.3, 1.6)), ("wan-14b", (13.5, 15.0))):
        cfg = DIT_PRESETS[name]
        with torch.device("meta"):
            ours, theirs = DiT(cfg), _wan(cfg)
        n = ours.num_parameters() / 1e9
        assert billions[0] <= n <= billions[1], (name, n)
        ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert ours_shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


@torch.no_grad()
def test_rotary_forms_agree(pair, monkeypatch):
    """The real-valued rotary used under torch.compile equals the eager complex multiply."""
    _, ours = pair
    x, ctx, _ = _inputs((3, 4, 6))
    t = torch.tensor([0.3, 0.6])
    eager = ours(x, t, ctx)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.testing.assert_close(ours(x, t, ctx), eager, atol=1e-5, rtol=0)


def _original_wan_names(cfg: DiTConfig) -> dict[str, str]:
    """Our key -> the original Wan repository's name for it (written from Wan's WanModel definition)."""
    names = {
        "patch_embedding.weight": "patch_embedding.weight", "patch_embedding.bias": "patch_embedding.bias",
        "proj_out.weight": "head.head.weight", "proj_out.bias": "head.head.bias",
        "scale_shift_table": "head.modulation",
    }
    for ours, theirs in (("time_embedder.linear_1", "time_embedding.0"), ("time_embedder.linear_2", "time_embedding.2"),
                         ("text_embedder.linear_1", "text_embedding.0"), ("text_embedder.linear_2", "text_embedding.2"),
                         ("time_proj", "time_projection.1")):
        for leaf in ("weight", "bias"):
            names[f"condition_embedder.{ours}.{leaf}"] = f"{theirs}.{leaf}"
    for i in range(cfg.num_layers):
        b = f"blocks.{i}"
        names[f"{b}.scale_shift_table"] = f"{b}.modulation"
        for ours_attn, theirs_attn in (("attn1", "self_attn"), ("attn2", "cross_attn")):
            for ours_p, theirs_p in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o")):
                for leaf in ("weight", "bias"):
                    names[f"{b}.{ours_attn}.{ours_p}.{leaf}"] = f"{b}.{theirs_attn}.{theirs_p}.{leaf}"
            for n in ("norm_q", "norm_k"):
                names[f"{b}.{ours_attn}.{n}.weight"] = f"{b}.{theirs_attn}.{n}.weight"
        for leaf in ("weight", "bias"):
            names[f"{b}.norm2.{leaf}"] = f"{b}.norm3.{leaf}"
            names[f"{b}.ffn.net.0.proj.{leaf}"] = f"{b}.ffn.0.{leaf}"
            names[f"{b}.ffn.net.2.{leaf}"] = f"{b}.ffn.2.{leaf}"
    return names


def test_original_wan_checkpoint_loads(pair, tmp_path):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from safetensors.torch import save_file

    from soraflow.models.convert_dit import original_wan_to_ours

    _, ours = pair
    state = ours.state_dict()
    names = _original_wan_names(TINY)
    assert set(names) == set(state)
    original = {names[k]: v.clone() for k, v in state.items()}
    # Our renaming agrees with diffusers' single-file converter on every key.
    converted = original_wan_to_ours(dict(original))
    assert converted.keys() == convert_wan_transformer_to_diffusers(dict(original)).keys() == state.keys()
    # A folder in the original layout (WanModel config keys) loads and computes the same function.
    folder = tmp_path / "wan-original"
    folder.mkdir()
    save_file(original, str(folder / "diffusion_pytorch_model.safetensors"))
    cfg = {"_class_name": "WanModel", "model_type": "t2v", "dim": TINY.dim, "ffn_dim": TINY.ffn_dim,
           "freq_dim": TINY.freq_dim, "in_dim": TINY.in_channels, "out_dim": TINY.out_channels,
           "num_heads": TINY.num_attention_heads, "num_layers": TINY.num_layers, "text_dim": TINY.text_dim, "eps": 1e-6}
    (folder / "config.json").write_text(json.dumps(cfg))
    loaded = DiT.from_pretrained(folder)
    x, ctx, _ = _inputs((2, 4, 4))
    t = torch.tensor([0.5, 0.2])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, ctx), ours(x, t, ctx), atol=0, rtol=0)
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "i2v"}))
    with pytest.raises(CheckpointError, match="i2v"):
        DiT.from_pretrained(folder)


@torch.no_grad()
def test_pooled_text_path(pair, tmp_path):
    """The pooled-prompt extension: starts as the model without it, then steers the output by the
    masked mean of the prompt, round-trips through save/load, and is not offered to diffusers as Wan."""
    _, ours = pair
    cfg = dit_config("tiny", pooled_text=True)
    pooled = DiT(cfg).eval()
    state = ours.state_dict()
    missing = set(pooled.state_dict()) - set(state)
    assert missing and all(k.startswith("condition_embedder.text_pooler.") for k in missing)
    pooled.load_state_dict({**pooled.state_dict(), **state})
    x, ctx, g = _inputs((2, 4, 4), text_len=6)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    # Zero-initialised output layer: the same velocities as without the path, per-frame times included.
    for t in (torch.tensor([0.5, 0.5]), torch.tensor([[0.0, 0.7], [0.3, 0.3]])):
        torch.testing.assert_close(pooled(x, t, ctx, mask), ours(x, t, ctx, mask), atol=1e-5, rtol=0)

    pooler = pooled.condition_embedder.text_pooler
    pooler.linear_2.weight.normal_(0, 0.5)
    t = torch.tensor([0.5, 0.5])
    out = pooled(x, t, ctx, mask)
    assert (out - ours(x, t, ctx, mask)).abs().max() > 1e-2  # the path now acts
    # A prompt whose token features are all shifted by the same vector keeps cross-attention's
    # softmax weights nearly the same but moves the mean: the pooled path sees it.
    embed = pooled.condition_embedder
    shifted = ctx + torch.randn(TINY.text_dim, generator=g)
    assert (embed.pooled(shifted, mask) - embed.pooled(ctx, mask)).abs().max() > 1e-3
    # Padding behind the mask changes nothing (the mean is over real tokens only).
    changed = ctx.clone()
    changed[0, 4:] = 5 * torch.randn(2, TINY.text_dim, generator=g)
    torch.testing.assert_close(pooled(x, t, changed, mask), out, atol=1e-6, rtol=0)
    torch.testing.assert_close(embed.pooled(ctx[:1, :4], None), embed.pooled(ctx, mask)[:1], atol=1e-6, rtol=0)

    pooled.save_pretrained(tmp_path / "pooled")
    config = json.loads((tmp_path / "pooled" / "config.json").read_text())
    assert config["_class_name"] == "DiT" and config["pooled_text"] is True
    loaded = DiT.from_pretrained(tmp_path / "pooled")
    assert loaded.config == cfg
    for key, value in pooled.state_dict().items():  # the bytes round-trip exactly...
        assert torch.equal(loaded.state_dict()[key], value), key
    # ...but the same weights in other buffers may take another GEMM blocking (and summation order):
    # fp32 rounding of sums of ~100 O(1) terms, a few ulps of the outputs' magnitude.
    torch.testing.assert_close(loaded(x, t, ctx, mask), out, atol=1e-5, rtol=1e-5)
    # Without the extension the config stays a plain Wan one.
    ours.save_pretrained(tmp_path / "plain")
    assert "pooled_text" not in json.loads((tmp_path / "plain" / "config.json").read_text())


@torch.no_grad()
def test_int8_blocks_stay_close_to_fp32(pair):
    """quantize_int8: the block linears become dynamic int8 except the self-attention output and the
    text-side k/v, the rest stays fp32, outputs within ~2%."""
    _, ours = pair
    model = DiT(TINY).eval()
    model.load_state_dict(ours.state_dict())
    x, ctx, _ = _inputs((2, 4, 4))
    t = torch.tensor([[0.0, 0.6], [0.3, 0.3]])  # per-frame times too
    want = ours(x, t, ctx)
    assert not model.is_quantized
    converted = model.quantize_int8()
    assert converted == 7 * TINY.num_layers  # self-attention q, k, v; cross-attention q, out; the two FFN layers
    assert model.is_quantized and model.proj_out.weight.dtype == torch.float32
    block = model.blocks[0]
    kept = [block.attn1.to_out[0], block.attn2.to_k, block.attn2.to_v]
    assert all(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32 for m in kept)
    converted = (block.attn1.to_q, block.attn2.to_q, block.attn2.to_out[0], block.ffn.net[2])
    assert all(type(m) is not torch.nn.Linear for m in converted)
    got = model(x, t, ctx)
    rel = ((got - want).norm() / want.norm()).item()
    assert 0 < rel < 0.03, rel  # int8 rounding: small but not zero
    with pytest.raises(InputError, match="CPU in float32"):
        DiT(TINY).to(torch.bfloat16).quantize_int8()


@pytest.mark.parametrize("flf2v", [False, True], ids=["i2v", "flf2v"])
@torch.no_grad()
def test_the_clip_image_branch_matches_diffusers(flf2v):
    """Wan2.1 I2V / FLF2V: CLIP tokens embedded and attended beside the text in every cross-attention."""
    cfg = dit_config("tiny", in_channels=12, image_dim=20, added_kv_proj_dim=TINY.dim,
                     pos_embed_seq_len=2 * 5 if flf2v else None)
    torch.manual_seed(3)
    ref = _wan(cfg).eval()
    for p in ref.parameters():
        p.normal_(0.0, 0.2)
    ours = DiT(cfg).eval()
    ours.load_state_dict(ref.state_dict())  # add_k_proj, add_v_proj, norm_added_k, image_embedder.*: diffusers' keys
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 12, 3, 6, 8, generator=g)
    ctx = torch.randn(1, 512, cfg.text_dim, generator=g)  # diffusers splits the image tokens off at len - 512
    images = torch.randn(2 if flf2v else 1, 5, 20, generator=g)  # FLF2V: first and last frame, 5 tokens each
    t = torch.tensor([0.4])
    expected = ref(x, t * 1000, ctx, encoder_hidden_states_image=images, return_dict=False)[0]
    got = ours(x, t, ctx, image_context=images.reshape(1, -1, 20) if flf2v else images)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    other = ours(x, t, ctx, image_context=(images.reshape(1, -1, 20) if flf2v else images) * -1)
    assert (other - got).abs().max() > 1e-3  # the image tokens matter
    with pytest.raises(InputError, match="needs the CLIP image tokens"):
        ours(x, t, ctx)
    with pytest.raises(InputError, match="no image branch"):
        DiT(TINY)(torch.randn(1, 4, 1, 4, 4), t, torch.randn(1, 3, 16), image_context=images)


@torch.no_grad()
def test_temporal_patch_pads_frame_zero_in_front():
    # A 1 + k pt clip: frame 0 repeated pt - 1 times fills its own patch; the repeats leave the output.
    import dataclasses

    torch.manual_seed(0)
    dit = DiT(dataclasses.replace(TINY, patch_size=(2, 2, 2))).eval()
    x, ctx, g = _inputs((5, 4, 4), batch=1)
    padded = torch.cat([x[:, :, :1], x], dim=2)
    out = dit(x, torch.tensor([0.4]), ctx)
    assert out.shape == x.shape
    torch.testing.assert_close(out, dit(padded, torch.tensor([0.4]), ctx)[:, :, 1:], rtol=0, atol=0)
    # Per-frame times: frame 0's (a given image, t = 0) goes to its repeat; within a patch they must agree.
    t = torch.tensor([[0.0, 0.7, 0.7, 0.3, 0.3]])
    torch.testing.assert_close(dit(x, t, ctx), dit(padded, torch.cat([t[:, :1], t], 1), ctx)[:, :, 1:], rtol=0, atol=0)
    with pytest.raises(InputError, match="equal within each temporal patch"):
        dit(x, torch.tensor([[0.0, 0.7, 0.6, 0.3, 0.3]]), ctx)
    assert dit.flops((5, 4, 4), 7) == dit.flops((6, 4, 4), 7)
