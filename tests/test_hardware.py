"""The CPU speed probe: what "auto" picks for which measured figures, and the probe's cache."""

from __future__ import annotations

import json

import pytest
import torch

from soraflow import hardware
from soraflow.hardware import CPURates, choose


def rates(gemm=(100.0, 100.0, 0.0), conv=(20.0, 20.0, 20.0)) -> CPURates:
    return CPURates(gemm_float32=gemm[0], gemm_bfloat16=gemm[1], gemm_int8=gemm[2], conv_float32=conv[0],
                    conv_float32_cl=conv[1], conv_bfloat16_cl=conv[2], threads=2, features=())


@pytest.mark.parametrize("figures, want", [
    # AMX: bf16 tiles far ahead of fp32 and int8, bf16 channels_last convs too.
    (rates((400, 2500, 1000), (60, 80, 240)), ("bfloat16", "bfloat16", "bfloat16", "bfloat16")),
    # AVX-512 BF16 without AMX: bf16 GEMMs ahead of fp32 and of int8; convs ~1.4x in bf16.
    (rates((130, 230, 200), (40, 45, 63)), ("bfloat16", "bfloat16", "bfloat16", "bfloat16")),
    # AVX2 only: bf16 emulated (several times slower), int8 (fbgemm AVX2) ahead of fp32.
    (rates((67, 12, 108), (20, 20, 0.8)), ("int8", "float32", "float32", "float32")),
    # A near-tie goes to the exact dtype: int8 must clearly beat the best float GEMM.
    (rates((100, 105, 110), (20, 20, 21)), ("float32", "float32", "float32", "float32")),
    # Nothing but fp32 kernels (no fbgemm): int8's figure is 0.
    (rates((50, 10, 0), (10, 10, 1)), ("float32", "float32", "float32", "float32")),
])
def test_choose_picks_the_fastest_measured_precision_per_model(figures, want):
    got = choose(figures)
    assert (got.dit, got.vae, got.train_dit, got.train_vae) == want


def test_cpu_rates_measures_once_and_reads_the_json_cache_after(monkeypatch, tmp_path):
    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path / "new"))  # created when missing
    tmp_path = tmp_path / "new"
    monkeypatch.setattr(hardware, "_MEMO", {})
    calls = []
    fake = rates((67, 12, 108))
    monkeypatch.setattr(hardware, "measure_cpu_rates", lambda: calls.append(1) or fake)
    assert hardware.cpu_rates() == fake and len(calls) == 1
    assert hardware.cpu_rates() == fake and len(calls) == 1  # in memory
    hardware._MEMO.clear()
    assert hardware.cpu_rates() == fake and len(calls) == 1  # from the file: a new process measures nothing
    entry = next(iter(json.loads((tmp_path / "cpu_rates.json").read_text()).values()))
    assert entry["gemm_int8"] == 108 and entry["torch"] == torch.__version__
    # Another thread count is another machine as far as speed goes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        hardware.cpu_rates()
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2
    # A damaged cache is measured over and rewritten, not an error.
    hardware._MEMO.clear()
    (tmp_path / "cpu_rates.json").write_text("{not json")
    assert hardware.cpu_rates() == fake and len(calls) == 3
    assert json.loads((tmp_path / "cpu_rates.json").read_text())
    hardware._MEMO.clear()
    (tmp_path / "cpu_rates.json").write_text(json.dumps({hardware._key(threads): {"gemm_float32": "x"}}))
    assert hardware.cpu_rates() == fake and len(calls) == 4


def test_the_real_probe_measures_every_kernel_it_reports():
    got = hardware.measure_cpu_rates()
    assert got.gemm_float32 > 0 and got.gemm_bfloat16 > 0 and got.conv_float32 > 0 and got.conv_bfloat16_cl > 0
    assert got.gemm_int8 >= 0 and got.threads == torch.get_num_threads()
    assert choose(got).dit in ("float32", "bfloat16", "int8")


def test_training_precision_auto_follows_the_measurement(monkeypatch):
    assert hardware.autocast_dtype("bf16", "cpu", model="dit") == torch.bfloat16
    assert hardware.autocast_dtype("fp32", "cpu", model="vae") == torch.float32
    choice = hardware.CPUChoice(dit="int8", vae="float32", train_dit="bfloat16", train_vae="float32")
    monkeypatch.setattr(hardware, "cpu_choice", lambda: choice)
    assert hardware.autocast_dtype("auto", "cpu", model="dit") == torch.bfloat16
    assert hardware.autocast_dtype("auto", "cpu", model="vae") == torch.float32
