"""LoRA: the formats people share read as diffusers + peft read them, a trained adapter loads in
diffusers with the same output, training lowers the loss and resumes bit-exactly, generation and merge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from soraflow.cli import main as cli_main
from soraflow.errors import InputError
from soraflow.lora import (
    WEIGHTS_NAME, LoRALinear, add_lora, merge_into_folder, merge_lora, parse_lora, parse_lora_arg, read_lora, save_lora,
)
from soraflow.models.dit import DiT, dit_config

sys.path.insert(0, str(Path(__file__).parent))
from test_train_dit import make_cache, tiny_config  # noqa: E402

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")
from diffusers import WanTransformer3DModel  # noqa: E402
from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dit_config("tiny")
RANK = 4
# Original Wan names -> ours, for the formats below.
ORIGINAL = {"self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v", "self_attn.o": "attn1.to_out.0",
            "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
            "cross_attn.o": "attn2.to_out.0", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}


def _random_dit(seed=0) -> DiT:
    torch.manual_seed(seed)
    model = DiT(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def _matrices(seed=1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random (down, up) for every adapted linear of the tiny DiT, by our module name."""
    g = torch.Generator().manual_seed(seed)
    model = DiT(TINY)
    out = {}
    for i in range(TINY.num_layers):
        for ours in ORIGINAL.values():
            lin = model.get_submodule(f"blocks.{i}.{ours}")
            out[f"blocks.{i}.{ours}"] = (0.3 * torch.randn(RANK, lin.in_features, generator=g),
                                         0.3 * torch.randn(lin.out_features, RANK, generator=g))
    return out


def _inputs(seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 3, 6, 8, generator=g), torch.tensor([0.3, 0.8]), torch.randn(2, 5, TINY.text_dim, generator=g)


def _diffusers_output(dit: DiT, state: dict, tmp_path: Path) -> torch.Tensor:
    """diffusers' WanTransformer3DModel with ``dit``'s weights and the LoRA ``state`` loaded by diffusers + peft."""
    dit.save_pretrained(tmp_path / "base")
    ref = WanTransformer3DModel.from_pretrained(tmp_path / "base").eval()
    # diffusers' own conversion of non-diffusers keys (it scales some tensors in place: give it copies)
    state = WanLoraLoaderMixin.lora_state_dict({k: v.clone() for k, v in state.items()})
    ref.load_lora_adapter(state, prefix="transformer", adapter_name="x")
    x, t, ctx = _inputs()
    with torch.no_grad():
        return ref(x, t * 1000, ctx, return_dict=False)[0]


def _our_output(dit: DiT, state: dict, scale=1.0) -> torch.Tensor:
    merge_lora(dit, parse_lora(state), scale)
    x, t, ctx = _inputs()
    with torch.no_grad():
        return dit(x, t, ctx)


def _peft_keys(mats):
    out = {}
    for name, (down, up) in mats.items():
        out[f"transformer.{name}.lora_A.weight"] = down
        out[f"transformer.{name}.lora_B.weight"] = up
    return out


def _original_keys(mats, alpha):
    out = {}
    for name, (down, up) in mats.items():
        block, rest = name.split(".", 2)[1], name.split(".", 2)[2]
        orig = next(o for o, d in ORIGINAL.items() if d == rest)
        base = f"diffusion_model.blocks.{block}.{orig}"
        out[f"{base}.lora_down.weight"], out[f"{base}.lora_up.weight"] = down, up
        out[f"{base}.alpha"] = torch.tensor(float(alpha))
    return out


def _kohya_keys(mats, alpha):
    out = {}
    for key, value in _original_keys(mats, alpha).items():  # module path with underscores, then the role
        module, role = key.removeprefix("diffusion_model.").split(".lora_") if ".lora_" in key else (key[16:-6], None)
        suffix = f".lora_{role}" if role else ".alpha"
        out["lora_unet_" + module.replace(".", "_") + suffix] = value
    return out


@pytest.mark.parametrize("fmt", ["peft", "original", "kohya"])
def test_formats_give_diffusers_output(tmp_path, fmt):
    mats = _matrices()
    state = {"peft": lambda: _peft_keys(mats), "original": lambda: _original_keys(mats, alpha=2 * RANK),
             "kohya": lambda: _kohya_keys(mats, alpha=RANK / 2)}[fmt]()
    if fmt == "kohya":
        assert any(k.startswith("lora_unet_blocks_0_self_attn_q.lora_down") for k in state)
    dit = _random_dit()
    expected = _diffusers_output(dit, state, tmp_path)
    base = dit(*_inputs()[:1], _inputs()[1], _inputs()[2]).detach()
    got = _our_output(dit, state)
    assert (expected - base).abs().max() > 0.05  # the adapter changes the output
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_diff_and_bias_deltas_and_scale(tmp_path):
    dit = _random_dit()
    w0 = dit.get_submodule("blocks.0.attn1.to_q").weight.detach().clone()
    b0 = dit.get_submodule("proj_out").bias.detach().clone()
    diff = torch.randn_like(w0)
    table = dit.blocks[1].scale_shift_table.detach().clone()
    state = {"diffusion_model.blocks.0.self_attn.q.diff": diff, "diffusion_model.head.head.diff_b": torch.ones_like(b0),
             "diffusion_model.blocks.1.modulation.diff": torch.ones_like(table)}  # a bare parameter too
    merge_lora(dit, parse_lora(state), 0.5)
    torch.testing.assert_close(dit.blocks[1].scale_shift_table, table + 0.5)
    torch.testing.assert_close(dit.get_submodule("blocks.0.attn1.to_q").weight, w0 + 0.5 * diff)
    torch.testing.assert_close(dit.proj_out.bias, b0 + 0.5)
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    assert merge_lora(dit, parse_lora(_peft_keys(_matrices())), 0.0) == 0
    assert all(torch.equal(before[k], v) for k, v in dit.state_dict().items())  # scale 0: bit for bit


def test_bad_adapters_are_refused_before_any_weight_changes(tmp_path):
    dit = _random_dit()
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    mats = _matrices()
    state = _peft_keys(mats)
    state["transformer.blocks.7.attn1.to_q.lora_A.weight"] = torch.zeros(RANK, 24)  # a block this model lacks
    state["transformer.blocks.7.attn1.to_q.lora_B.weight"] = torch.zeros(24, RANK)
    with pytest.raises(InputError, match="blocks.7.attn1.to_q, which this model does not have"):
        merge_lora(dit, parse_lora(state))
    wrong = _peft_keys({"blocks.0.attn1.to_q": (torch.zeros(RANK, 30), torch.zeros(24, RANK))})
    with pytest.raises(InputError, match=r"is \(24, 24\) in this model"):
        merge_lora(dit, parse_lora(wrong))
    assert all(torch.equal(before[k], v) for k, v in dit.state_dict().items())
    with pytest.raises(InputError, match="not a LoRA key"):
        parse_lora({"blocks.0.attn1.to_q.weight": torch.zeros(2)})
    with pytest.raises(InputError, match="down matrix and not the other"):
        parse_lora({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 3)})
    (tmp_path / "a.pt").write_bytes(b"not a tensor file")
    with pytest.raises(InputError, match="only .safetensors"):
        read_lora(tmp_path / "a.pt")
    (tmp_path / "b.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable safetensors file"):
        read_lora(tmp_path / "b.safetensors")
    assert parse_lora_arg("x/y.safetensors:0.5") == (Path("x/y.safetensors"), 0.5)
    assert parse_lora_arg("C:/y.safetensors") == (Path("C:/y.safetensors"), 1.0)


def test_lora_linear_starts_as_the_identity_and_round_trips_through_diffusers(tmp_path):
    dit = _random_dit()
    x, t, ctx = _inputs()
    with torch.no_grad():
        base = dit(x, t, ctx)
    names = add_lora(dit, RANK, alpha=2 * RANK)
    assert len(names) == 10 * TINY.num_layers and all(isinstance(dit.get_submodule(n), LoRALinear) for n in names)
    assert [n for n, p in dit.named_parameters() if p.requires_grad] == [
        n for n in (n for n, _ in dit.named_parameters()) if ".adapter.lora_" in n]
    with torch.no_grad():
        torch.testing.assert_close(dit(x, t, ctx), base, atol=0, rtol=0)  # B = 0: exactly the base
        for m in dit.modules():
            if isinstance(m, LoRALinear):
                m.adapter.lora_B.normal_(0, 0.2)
        ours = dit(x, t, ctx)
    path = save_lora(dit, tmp_path / "lora")
    assert path.name == WEIGHTS_NAME and all(k.startswith("transformer.blocks.") for k in load_file(str(path)))
    base_dit = _random_dit()  # the same base weights, without the wrappers
    expected = _diffusers_output(base_dit, load_file(str(path)), tmp_path)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- training


def _base_folder(tmp_path: Path) -> Path:
    """A 'trained' base DiT for the test cache (4 latent channels, 16-wide text)."""
    return _random_dit(5).save_pretrained(tmp_path / "base")


def _lora_cfg(tmp_path, cache, out, **kw):
    return tiny_config(cache, tmp_path / out, init=_base_folder(tmp_path), lora=RANK, lr=1e-2, warmup_steps=0, **kw)


def test_lora_training_lowers_the_loss_and_trains_only_the_adapter(tmp_path):
    from soraflow.data import collate_latents
    from soraflow.train.dit import DiTTrainer

    cache = make_cache(tmp_path / "cache")
    trainer = DiTTrainer(_lora_cfg(tmp_path, cache, "run", caption_dropout=0.0), progress=False)
    batch = collate_latents([trainer.dataset[i] for i in range(6)])
    base = {k: v.clone() for k, v in trainer.model.state_dict().items() if ".adapter." not in k}
    state = trainer.generator.get_state()
    before, _ = trainer.train_step(batch)
    for _ in range(5):
        trainer.generator.set_state(state)
        after, _ = trainer.train_step(batch)
    assert after < before * 0.9, (before, after)
    now = trainer.model.state_dict()
    assert all(torch.equal(base[k], now[k]) for k in base)  # the base stays frozen
    result = trainer.run()
    adapter = load_file(str(result.run_dir / "lora" / WEIGHTS_NAME))
    assert len(adapter) == 2 * 10 * TINY.num_layers
    ckpt = load_file(str(result.checkpoint / "lora.safetensors"))  # the checkpoint holds the adapter only
    assert len(ckpt) == len(adapter) and not (result.checkpoint / "dit.safetensors").exists()


def test_lora_run_resumes_bit_exactly_after_sigkill(tmp_path):
    from soraflow.train.checkpoint import latest_checkpoint
    from soraflow.train.launch import train_dit

    cache = make_cache(tmp_path / "cache")
    straight = train_dit(_lora_cfg(tmp_path, cache, "straight", steps=10), progress=False)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_lora import _lora_cfg
        from test_train_dit import make_cache
        from soraflow.train.launch import train_dit
        def die(trainer, step, path):
            if step == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        train_dit(_lora_cfg(Path({str(tmp_path)!r}), Path({str(cache)!r}), "killed", steps=10), progress=False, on_checkpoint=die)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
    resumed = train_dit(_lora_cfg(tmp_path, cache, "killed", steps=10), progress=False)
    assert resumed.losses == straight.losses[5:]
    for name in ("lora", "optim.adamw"):
        a = load_file(str(latest_checkpoint(tmp_path / "straight") / f"{name}.safetensors"))
        b = load_file(str(latest_checkpoint(tmp_path / "killed") / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # export-dit of a LoRA run writes the adapter, equal to the one the run wrote
    assert cli_main(["train", "export-dit", str(tmp_path / "killed"), "-o", str(tmp_path / "exported")]) == 0
    a = load_file(str(tmp_path / "exported" / WEIGHTS_NAME))
    b = load_file(str(tmp_path / "straight" / "lora" / WEIGHTS_NAME))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_needs_init_and_refuses_a_mismatched_cache(tmp_path, capsys):
    cache = make_cache(tmp_path / "cache", text_dim=8)
    assert cli_main(["train", "dit", "--data", str(cache), "--out", str(tmp_path / "r"), "--lora", "4"]) == 2
    assert "--lora trains an adapter on trained weights" in capsys.readouterr().err
    code = cli_main(["train", "dit", "--data", str(cache), "--out", str(tmp_path / "r"), "--lora", "4",
                     "--init", str(_base_folder(tmp_path)), "--quiet"])
    assert code == 2 and "16-wide text" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- generation


def _tiny_pipeline_folder(tmp_path: Path) -> Path:
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_random_model", root / "scripts" / "make_random_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pipe = module.make_random_pipeline(height=16, width=32, steps=2, window=5, overlap=2)
    return pipe.save_pretrained(tmp_path / "model"), pipe.dit


def test_generate_with_lora_scale_zero_is_the_base_and_merge_writes_the_same_model(tmp_path, capsys):
    from soraflow.pipeline import SoraPipeline

    folder, dit = _tiny_pipeline_folder(tmp_path)
    add_lora(dit, RANK)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in dit.modules():
            if isinstance(m, LoRALinear):
                m.adapter.lora_B.copy_(torch.randn(m.adapter.lora_B.shape, generator=g))
    lora = save_lora(dit, tmp_path / "lora").parent

    def frames(**kw):
        pipe = SoraPipeline.from_pretrained(kw.pop("model", folder), **kw)
        return pipe("a red ball", seed=0, expand=False, progress=False, seconds=1.0).frames

    base = frames()
    assert np.array_equal(frames(loras=[(lora, 0.0)]), base)
    with_lora = frames(loras=[(lora, 1.0)])
    assert np.abs(with_lora.astype(int) - base.astype(int)).mean() > 1
    # stacking: two half-scale copies equal one full-scale one (the merge adds)
    half = frames(loras=[(lora, 0.5), (lora, 0.5)])
    assert np.abs(half.astype(int) - with_lora.astype(int)).max() <= 1

    assert cli_main(["lora", "merge", str(folder), f"{lora}:1.0", "-o", str(tmp_path / "merged")]) == 0
    assert np.array_equal(frames(model=tmp_path / "merged"), with_lora)
    assert sorted(os.listdir(tmp_path / "merged")) == sorted(os.listdir(folder))
    assert cli_main(["lora", "merge", str(folder), str(lora), "-o", str(tmp_path / "merged")]) == 2  # exists
    with pytest.raises(InputError, match="already exists"):
        merge_into_folder(folder, [(lora, 1.0)], tmp_path / "merged")

    out = tmp_path / "clip.mp4"
    assert cli_main(["generate", "a red ball", "--model", str(folder), "--lora", str(tmp_path / "nope.safetensors"),
                     "-o", str(out), "--no-expand", "-q"]) == 2
    err = capsys.readouterr().err
    assert "nope.safetensors does not exist" in err and "Traceback" not in err and not out.exists()
    save_file({"x": torch.zeros(1)}, str(tmp_path / "junk.safetensors"))
    assert cli_main(["generate", "a red ball", "--model", str(folder), "--lora", str(tmp_path / "junk.safetensors"),
                     "-o", str(out), "--no-expand", "-q"]) == 2
    assert "not a LoRA key" in capsys.readouterr().err
