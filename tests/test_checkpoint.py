"""Checkpoints (atomic, exact round trip), EMA and typed configs."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from soraflow.errors import CheckpointError, InputError
from soraflow.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from soraflow.train.config import (
    add_config_arguments,
    config_from_args,
    config_from_dict,
    config_to_dict,
    option,
)
from soraflow.train.ema import EMA


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 4)
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _train(model, opt, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 4, generator=g)
        loss = (model(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.count += 1


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_round_trip_weights_optimizer_and_rng_bitwise(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    _train(model, opt, 3)
    ema = EMA(model, decay=0.9)
    ema.update(model)
    torch.manual_seed(123), np.random.seed(7), random.seed(9)
    path = save_checkpoint(
        tmp_path, 3, modules={"model": model, "ema": ema}, optimizers={"opt": opt},
        config={"lr": 1e-2, "out": tmp_path}, extra={"epoch": 1, "position": 17},
    )
    assert path == tmp_path / "checkpoints" / "step_00000003"
    expected_draws = _draws()
    ref_model, ref_opt = Tiny(), None
    ref_model.load_state_dict(model.state_dict())
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ref_opt.load_state_dict(opt.state_dict())

    # A fresh process would start from other weights, other optimizer state and other RNG states.
    torch.manual_seed(999), np.random.seed(999), random.seed(999)
    model2 = Tiny()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.5)
    ema2 = EMA(model2, decay=0.9)
    loaded = load_checkpoint(tmp_path, modules={"model": model2, "ema": ema2}, optimizers={"opt": opt2})

    assert loaded.step == 3 and loaded.extra == {"epoch": 1, "position": 17}
    assert loaded.config == {"lr": 1e-2, "out": str(tmp_path)}
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    for k, v in ema.state_dict().items():
        assert torch.equal(v, ema2.state_dict()[k]), k
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["betas"] == (0.9, 0.95)
    assert _draws() == expected_draws  # torch, numpy and python RNG restored exactly

    # Training on from the restored state is bitwise identical to training on from the original.
    _train(ref_model, ref_opt, 2, seed=5)
    _train(model2, opt2, 2, seed=5)
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k


def test_keep_last_prunes_oldest_and_latest_is_highest_step(tmp_path):
    model = Tiny()
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, modules={"model": model}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 40]
    assert latest_checkpoint(tmp_path).name == "step_00000040"
    # Re-saving an existing step replaces it in place.
    save_checkpoint(tmp_path, 40, modules={"model": model}, extra={"again": True}, keep_last=2)
    assert json.loads((latest_checkpoint(tmp_path) / "extra.json").read_text()) == {"again": True}


def test_crash_mid_save_keeps_previous_checkpoint_as_latest(tmp_path):
    """A real SIGKILL in the middle of writing step 2 (after its first file is on disk)."""
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        import soraflow.train.checkpoint as ck
        model = torch.nn.Linear(3, 3)
        ck.save_checkpoint({str(tmp_path)!r}, 1, modules={{"model": model}})
        real_save = ck.save_file
        def dying_save(tensors, filename, metadata=None):
            real_save(tensors, filename, metadata=metadata)
            os.kill(os.getpid(), signal.SIGKILL)
        ck.save_file = dying_save
        ck.save_checkpoint({str(tmp_path)!r}, 2, modules={{"model": model}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert any(name.startswith(".tmp_step_00000002") for name in leftovers), leftovers
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    model = nn.Linear(3, 3)
    assert load_checkpoint(tmp_path, modules={"model": model}).step == 1
    # The next save cleans the crashed write away.
    save_checkpoint(tmp_path, 3, modules={"model": model})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000001", "step_00000003"]


def test_mismatched_keys_are_reported_in_one_line(tmp_path):
    save_checkpoint(tmp_path, 1, modules={"model": Tiny()})
    other = nn.Sequential(nn.Linear(4, 8))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path, modules={"model": other})
    msg = str(err.value)
    assert "\n" not in msg and "missing" in msg and "0.weight" in msg and "unexpected" in msg and "a.weight" in msg
    wrong_shape = Tiny()
    wrong_shape.a = nn.Linear(4, 9)
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(tmp_path, modules={"model": wrong_shape})
    with pytest.raises(CheckpointError, match="no module 'ema'"):
        load_checkpoint(tmp_path, modules={"ema": Tiny()})


def test_corrupt_weights_file_is_a_checkpoint_error(tmp_path):
    path = save_checkpoint(tmp_path, 1, modules={"model": Tiny()})
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(path, modules={"model": Tiny()})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope", modules={})


def test_tied_weights_can_be_saved(tmp_path):
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight  # tied: one storage under two names
    save_checkpoint(tmp_path, 1, modules={"model": model})
    fresh = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    load_checkpoint(tmp_path, modules={"model": fresh})
    assert torch.equal(fresh[0].weight, model[0].weight) and torch.equal(fresh[1].weight, model[0].weight)


def test_ema_matches_closed_form():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    for value in (1.0, 3.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
    # e1 = 0.5 * 0 + 0.5 * 1 = 0.5; e2 = 0.5 * 0.5 + 0.5 * 3 = 1.75
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 1.75))
    assert not ema.module.weight.requires_grad and ema.num_updates == 2
    warm = EMA(model, decay=0.999, warmup_steps=10)
    assert warm.current_decay() == pytest.approx(1 / 10)


@dataclass
class _Sub:
    lr: float = option(1e-4, gt=0)  # peak learning rate


@dataclass
class _Cfg:
    steps: int = option(100, ge=1)  # optimizer steps to run
    # where checkpoints go
    out: Path = Path("runs/x")
    vae: Path | None = None  # optional VAE folder
    amp: bool = True  # bf16 autocast
    betas: tuple[float, ...] = (0.9, 0.99)  # AdamW betas
    mode: str = option("euler", choices=("euler", "heun"))  # sampler
    optim: _Sub = field(default_factory=_Sub)


def test_config_cli_round_trip_help_and_validation(capsys):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, _Cfg)
    help_text = parser.format_help()
    for snippet in ("--steps N", "optimizer steps to run", "where checkpoints go", "--optim-lr", "peak learning rate", "--no-amp"):
        assert snippet in help_text, snippet
    args = parser.parse_args(["--steps", "5", "--optim-lr", "3e-4", "--no-amp", "--vae", "none", "--betas", "0.8", "0.9"])
    cfg = config_from_args(_Cfg, args)
    assert cfg == _Cfg(steps=5, amp=False, vae=None, betas=(0.8, 0.9), optim=_Sub(lr=3e-4))
    # JSON round trip keeps types (tuples, Paths).
    assert config_from_dict(_Cfg, json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    # Command-line values override a base config (e.g. one saved in a checkpoint).
    base = _Cfg(steps=50, mode="heun")
    assert config_from_args(_Cfg, parser.parse_args(["--steps", "7"]), base=base) == _Cfg(steps=7, mode="heun")
    with pytest.raises(InputError, match=r"--optim-lr = -1.0: must be > 0"):
        config_from_args(_Cfg, parser.parse_args(["--optim-lr", "-1"]))
    with pytest.raises(InputError, match=r"--steps = 0"):
        config_from_dict(_Cfg, {"steps": 0})
    with pytest.raises(InputError, match="unknown field"):
        config_from_dict(_Cfg, {"stepz": 3})
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "rk4"])


def test_sharded_checkpoint_is_safetensors_and_json_and_a_planted_pickle_never_runs(tmp_path, capsys):
    from soraflow.train.dcp import export_safetensors, save_dcp_checkpoint

    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    _train(model, opt, 2)
    ckpt = save_dcp_checkpoint(tmp_path / "run", 2, modules={"model": model}, optimizers={"opt": opt})
    files = {p.name for p in (ckpt / "state").iterdir()}
    assert files and all(name.endswith(".safetensors") for name in files)  # no pickle anywhere in the folder
    model2, opt2 = Tiny(), None
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.5)
    load_checkpoint(ckpt, modules={"model": model2}, optimizers={"opt": opt2})
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["betas"] == (0.9, 0.95)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])

    # DCP's own format pickles its metadata: a folder carrying one is refused before it is read.
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    import pickle

    (ckpt / "state" / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path / "run", modules={"model": Tiny()})
    with pytest.raises(CheckpointError, match="pickle"):
        export_safetensors(ckpt, tmp_path / "out.safetensors", module="model")
    from soraflow.cli import main
    from soraflow.models.dit import DiT, dit_config

    dit = DiT(dit_config("tiny"))
    save_dcp_checkpoint(tmp_path / "dit-run", 1, modules={"ema": dit}, extra={"model_config": dit.config.to_dict()})
    (tmp_path / "dit-run" / "checkpoints" / "step_00000001" / "state" / ".metadata").write_bytes(pickle.dumps(Payload()))
    assert main(["train", "export-dit", str(tmp_path / "dit-run"), "-o", str(tmp_path / "exported")]) == 2
    err = capsys.readouterr().err
    assert "pickle" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "exported").exists()
