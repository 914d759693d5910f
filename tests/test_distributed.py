"""Multi-process training on CPU with gloo and 2 ranks, launched with torchrun like users do.

(a) DDP, FSDP2 (with and without activation checkpointing) and Ulysses sequence parallelism on 2
    ranks give the losses and weights of 1 process on the same global batch (fp32; tolerance 1e-5
    relative on losses, 1e-5 absolute on weights: only the order of float sums differs);
(b) sequence-parallel attention, whole DiT forwards and a guided sampling loop with a given frame
    equal single-process results to 1e-5;
(c) DCP checkpoints saved on 2 ranks load on 1 process (and a 1-process checkpoint on 2 ranks)
    with identical weights and optimizer state; export to one safetensors file;
(d) `soraflow train dit` under torchrun with a rank killed by SIGKILL fails fast and non-zero with
    a message naming the rank, and the run resumes on one process from the last complete checkpoint.

All 2-rank checks of (a)-(c) run in one torchrun launch (tests/dist_worker.py): process start-up is
most of the cost on 2 shared cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from soraflow.cli import main as cli_main
from soraflow.errors import InputError
from soraflow.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from soraflow.train.dcp import export_safetensors, is_dcp_checkpoint, save_dcp_checkpoint
from soraflow.train.distributed import DistributedError, init_distributed
from soraflow.train.optim import build_adamw

sys.path.insert(0, str(Path(__file__).parent))
from dist_worker import STEPS, tiny_model, train  # noqa: E402

WORKER = Path(__file__).parent / "dist_worker.py"
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Checkpoints written by one process, then the 2-rank worker; returns (results per rank, out, ref)."""
    ref = tmp_path_factory.mktemp("ref")
    out = tmp_path_factory.mktemp("out")
    torch.set_num_threads(1)
    model = tiny_model()
    _, opt = train(model, 2)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ref / "expected1.safetensors"))
    save_dcp_checkpoint(ref / "run1_dcp", 2, modules={"dit": model}, optimizers={"adamw": opt})
    save_checkpoint(ref / "run1_safetensors", 2, modules={"dit": model}, optimizers={"adamw": opt})
    names = {id(p): n for n, p in model.named_parameters()}
    ref_exp_avg = {names[id(p)]: s["exp_avg"].clone() for p, s in opt.state.items()}

    proc = subprocess.run(torchrun(str(WORKER), str(out), str(ref)), capture_output=True, text=True, timeout=240, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return results, out, ref, ref_exp_avg


# ----------------------------------------------------------------------------------------------
# (a) same losses and weights as one process


@pytest.mark.parametrize(
    "mode", ["ddp", "fsdp", "fsdp_activation_checkpointing", "sequence_parallel_ddp", "sequence_parallel_fsdp_ac"]
)
def test_two_ranks_train_like_one_process_on_the_same_global_batch(two_ranks, mode):
    results = two_ranks[0]
    for res in results:
        ref = res["reference_losses"]
        got = res["losses"][mode]
        assert len(got) == STEPS
        assert got == pytest.approx(ref, rel=LOSS_RTOL), (mode, got, ref)
        assert res["weights_err"][mode] <= WEIGHT_ATOL, (mode, res["weights_err"][mode])
    # The losses moved: the comparison is not between two copies of the starting loss.
    assert abs(results[0]["reference_losses"][-1] - results[0]["reference_losses"][0]) > 0.05


# ----------------------------------------------------------------------------------------------
# (b) sequence parallelism is exact


def test_ulysses_attention_equals_attention_over_all_tokens(two_ranks):
    for res in two_ranks[0]:
        assert res["attention_err"] <= 1e-5


@pytest.mark.parametrize("case", ["scalar_t", "frame_t_split_frames", "frame_t_split_tokens", "token_t"])
def test_sequence_parallel_dit_forward_equals_single_process(two_ranks, case):
    for res in two_ranks[0]:
        assert res["sp_forward_err"][case] <= 1e-5, res["sp_forward_err"]


def test_sequence_parallel_sampling_equals_single_process(two_ranks):
    for res in two_ranks[0]:
        assert res["sp_sample_err"] <= 1e-5
        assert res["sp_sample_given_exact"]  # the given frame is held exactly on every rank


# ----------------------------------------------------------------------------------------------
# (c) DCP: saved on 2 ranks, loaded on 1; saved on 1, loaded on 2; export


def test_checkpoint_saved_on_two_ranks_loads_on_one_process(two_ranks):
    _, out, _, _ = two_ranks
    ckpt = out / "run2" / "checkpoints" / f"step_{STEPS:08d}"
    assert is_dcp_checkpoint(ckpt)
    assert len(list((ckpt / "state").glob("*.safetensors"))) == 2  # each rank wrote its own shards
    model = tiny_model(seed=9)  # different weights: all of them must be overwritten
    opt = build_adamw(model, lr=1e-2, weight_decay=0.01)
    loaded = load_checkpoint(ckpt, modules={"dit": model}, optimizers={"adamw": opt})
    assert loaded.step == STEPS and loaded.extra == {"saved_by": 2}
    expected = load_file(str(out / "expected_run2.safetensors"))
    state = model.state_dict()
    assert set(state) == set(expected)
    for k in expected:
        assert torch.equal(state[k], expected[k]), k
    exp_avg = load_file(str(out / "expected_run2_exp_avg.safetensors"))
    names = {id(p): n for n, p in model.named_parameters()}
    got = {names[id(p)]: s["exp_avg"] for p, s in opt.state.items()}
    assert set(got) == set(exp_avg)
    for k in exp_avg:
        assert torch.equal(got[k], exp_avg[k]), k


@pytest.mark.parametrize("name", ["run1_dcp", "run1_safetensors"])
def test_checkpoint_saved_by_one_process_loads_on_two_ranks(two_ranks, name):
    results, out, _, ref_exp_avg = two_ranks
    for res in results:
        assert res[f"{name}_err"] == 0.0 and res[f"{name}_step"] == 2
        assert res[f"{name}_sharded"] == "DTensor"  # really loaded into FSDP shards
    got = load_file(str(out / f"loaded_{name}_exp_avg.safetensors"))
    assert set(got) == set(ref_exp_avg)
    for k in got:
        assert torch.equal(got[k], ref_exp_avg[k]), k


def test_export_one_safetensors_file_from_a_sharded_checkpoint(two_ranks, tmp_path):
    _, out, _, _ = two_ranks
    path = export_safetensors(out / "run2", tmp_path / "dit.safetensors", module="dit")
    exported = load_file(str(path))
    expected = load_file(str(out / "expected_run2.safetensors"))
    assert set(exported) == set(expected) and all(torch.equal(exported[k], expected[k]) for k in expected)
    model = tiny_model(seed=3)
    model.load_state_dict(exported)  # keys are the model's own names
    with pytest.raises(Exception, match="no module 'ema'"):
        export_safetensors(out / "run2", tmp_path / "x.safetensors", module="ema")


# ----------------------------------------------------------------------------------------------
# (d) a killed rank: fast clean failure, then resume on one process


def _make_cache(path: Path, text_dim: int = 16) -> Path:
    from soraflow.data import LatentCacheWriter

    g = torch.Generator().manual_seed(0)
    with LatentCacheWriter(path, meta={"text": {"reference": "fake", "dim": text_dim}}, shard_size=8, dtype=torch.float32) as w:
        w.set_null_text(torch.zeros(2, text_dim))
        for i, shape in enumerate([(4, 3, 8, 8)] * 8 + [(4, 1, 8, 8)] * 8):
            lat = torch.linspace(-1, 1, shape[-1]).expand(shape) + 0.1 * torch.randn(shape, generator=g)
            w.add(f"clip{i:02d}", lat, {"long": torch.randn(3, text_dim, generator=g)}, captions={"long": f"caption {i}"}, fps=8, source=f"{i}.mp4")
    return path


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The worker process torchrun started for ``rank`` (found by its RANK variable)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            env = (d / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"RANK={rank}".encode() in env:
            return int(d.name)
    return None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the rank's process through /proc")
def test_killed_rank_fails_the_job_cleanly_and_the_run_resumes_on_one_process(tmp_path):
    cache = _make_cache(tmp_path / "cache")
    run = tmp_path / "run"
    cmd = torchrun(
        "-m", "soraflow.cli", "train", "dit", "--data", str(cache), "--out", str(run), "--preset", "tiny",
        "--steps", "100000", "--batch-tokens", "64", "--checkpoint-every", "2", "--keep-last", "3", "--threads", "1",
        "--no-tensorboard", "--quiet", "--parallel-mode", "fsdp", "--parallel-timeout", "30",
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            last = latest_checkpoint(run)
            if last is not None and int(last.name[5:]) >= 4:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        pid = _rank_pid(proc.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        output, _ = proc.communicate(timeout=90)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert elapsed < 45, elapsed  # the agent (or gloo) notices, not a 30-minute default timeout
    assert "rank" in output and ("SIGKILL" in output or "Signal 9" in output), output[-2000:]

    last = latest_checkpoint(run)  # a save cut off by the kill is a hidden temp dir, never picked
    assert last is not None and is_dcp_checkpoint(last)
    step = int(last.name[5:])
    resumed = subprocess.run(
        [sys.executable, "-m", "soraflow.cli", "train", "dit", "--out", str(run), "--steps", str(step + 2), "--quiet"],
        capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"trained to step {step + 2}" in resumed.stdout
    final = latest_checkpoint(run)
    assert final.name == f"step_{step + 2:08d}" and not is_dcp_checkpoint(final)  # one process: safetensors
    extra = json.loads((final / "extra.json").read_text())
    assert extra["consumed"] >= 1


# ----------------------------------------------------------------------------------------------
# One process: no process group, options, layouts


def test_one_process_world_without_torchrun(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    world = init_distributed()
    assert (world.rank, world.world_size, world.dp_size, world.distributed) == (0, 1, 1, False)
    with pytest.raises(DistributedError, match="torchrun"):
        init_distributed(sp_size=2)


def test_split_axis_of_the_residual_stream():
    from soraflow.parallel.ulysses import _split

    assert _split(4, 9, 2) == 1  # whole frames per rank
    assert _split(3, 8, 2) == 2  # 3 frames over 2 ranks: split the tokens of each frame
    with pytest.raises(InputError, match="multiple of 2"):
        _split(3, 9, 2)


def test_parallel_options_reach_the_config(capsys, tmp_path):
    code = cli_main([
        "train", "dit", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--print-config",
        "--parallel-mode", "fsdp", "--parallel-sequence", "2", "--parallel-activation-checkpointing",
    ])
    assert code == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["parallel"]["mode"] == "fsdp" and cfg["parallel"]["sequence"] == 2 and cfg["parallel"]["activation_checkpointing"] is True
    assert cli_main(["train", "dit", "--data", str(tmp_path), "--print-config", "--parallel-compile", "--parallel-sequence", "2"]) == 2
