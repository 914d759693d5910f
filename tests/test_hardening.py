"""What the fuzz table cannot see from exit codes: files, network and data that must not be lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from soraflow.errors import CheckpointError, InputError

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_a_killed_writers_temporary_is_removed_by_the_next_write_and_a_live_ones_kept(tmp_path):
    from soraflow.atomic import atomic_path, write_text

    target = tmp_path / "clip.mp4"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".clip.mp4.{int(dead.stdout)}.abcd1234.tmp.mp4"  # what kill -9 leaves
    orphan.write_bytes(b"half a video")
    live = tmp_path / f".clip.mp4.{os.getpid()}.efgh5678.tmp.mp4"  # a writer still running (this process)
    live.write_bytes(b"in progress")
    cousin = tmp_path / f".clip.mp4.5.mp4.{int(dead.stdout)}.ijkl9012.tmp.mp4"  # target clip.mp4.5.mp4's, not ours
    cousin.write_bytes(b"another target")
    with atomic_path(target) as tmp:
        assert str(os.getpid()) in tmp.name
        tmp.write_bytes(b"video")
    assert target.read_bytes() == b"video" and not orphan.exists() and live.exists() and cousin.exists()
    live.unlink()
    cousin.unlink()
    write_text(tmp_path / "other.json", "{}")  # another target's temporaries are not its business
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "other.json"]


def test_the_video_and_its_sidecar_appear_together_or_not_at_all(tmp_path):
    from soraflow.pipeline import GenerationResult

    result = GenerationResult(frames=np.zeros((5, 32, 32, 3), np.uint8), fps=8, prompt="p", expanded_prompt="p",
                              seed=0, mode="t2v")
    (tmp_path / "a.mp4.json").mkdir()  # the sidecar's place is taken: refused before any frame is encoded
    with pytest.raises(InputError, match="directory"):
        result.save(tmp_path / "a.mp4")
    assert not (tmp_path / "a.mp4").exists()
    written = result.save(tmp_path / "b.mp4")
    assert written.is_file() and json.loads((tmp_path / "b.mp4.json").read_text())["prompt"] == "p"
    # A PNG sequence: every file of it is known, so it can be reported (and removed as a whole).
    from soraflow.video import written_files

    first = result.save(tmp_path / "s.png", sidecar=False)
    assert [p.name for p in written_files(tmp_path / "s.png", first)] == [f"s_{i:04d}.png" for i in range(5)]


def test_a_model_folder_cannot_turn_on_network_prompt_expansion(tmp_path):
    sys.path.insert(0, str(SCRIPTS))
    from make_random_model import make_random_pipeline

    from soraflow.pipeline import SoraPipeline

    make_random_pipeline().save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "expander": "openai"}))
    pipe = SoraPipeline.from_pretrained(tmp_path / "m")
    with pytest.raises(InputError, match="over the network"):
        pipe("a red ball", num_frames=1, steps=1, seed=0, progress=False)
    # Asked for as written, the same folder generates (no expansion, no network).
    assert pipe("a red ball", num_frames=1, steps=1, seed=0, progress=False, expand=False).frames.shape[0] == 1


def test_non_finite_weights_are_refused_at_load_and_never_become_the_latest_checkpoint(tmp_path):
    from soraflow.models.dit import DiT, dit_config
    from soraflow.train.checkpoint import latest_checkpoint, save_checkpoint

    model = DiT(dit_config("tiny"))
    save_checkpoint(tmp_path / "run", 1, modules={"model": model})
    with torch.no_grad():
        model.proj_out.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path / "run", 2, modules={"model": model})
    assert latest_checkpoint(tmp_path / "run").name == "step_00000001"
    model.save_pretrained(tmp_path / "dit")
    with pytest.raises(CheckpointError, match="non-finite.*proj_out.weight"):
        DiT.from_pretrained(tmp_path / "dit")


def test_the_file_scan_finds_a_non_finite_value_anywhere(tmp_path, monkeypatch):
    import soraflow.weights as weights
    from safetensors.torch import save_file

    monkeypatch.setattr(weights, "_SCAN_BYTES", 64)  # many pieces per tensor, so a value at any offset is read
    g = torch.Generator().manual_seed(0)
    state = {"a": torch.randn(50, generator=g), "b": torch.randn(7, 9, generator=g).to(torch.bfloat16),
             "c": torch.arange(10), "empty": torch.zeros(0)}
    save_file(state, str(tmp_path / "ok.safetensors"))
    weights.check_finite_file(tmp_path / "ok.safetensors")
    for key, index, value in [("a", 49, float("inf")), ("b", (6, 8), float("nan")), ("a", 17, float("-inf"))]:
        bad = {k: v.clone() for k, v in state.items()}
        bad[key][index] = value
        save_file(bad, str(tmp_path / "bad.safetensors"))
        with pytest.raises(CheckpointError, match=f"non-finite.*1 tensor.*\\({key}\\)"):
            weights.check_finite_file(tmp_path / "bad.safetensors")


def test_loading_a_vae_maps_no_weight_page_it_does_not_use(tmp_path):
    # The parameters are the file's memory-mapped tensors and the finite check reads the file apart
    # from them, so loading faults in (almost) none of the file: unused weights (the encoder, in
    # text-to-video) are never resident, as with diffusers.
    from soraflow.models.vae import VideoVAE, vae_config

    VideoVAE(vae_config("small")).save_pretrained(tmp_path / "vae")
    VideoVAE(vae_config("tiny")).save_pretrained(tmp_path / "warm")
    size_mib = (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").stat().st_size / 2**20
    VideoVAE.from_pretrained(tmp_path / "warm")  # the libraries a load maps (safetensors') are mapped before the count

    def rss_file_mib() -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssFile:"))
        return int(line.split()[1]) / 1024

    before = rss_file_mib()
    vae = VideoVAE.from_pretrained(tmp_path / "vae")
    assert size_mib > 20
    assert rss_file_mib() - before < 0.2 * size_mib
    with torch.no_grad():  # and the weights are there when used
        assert torch.isfinite(vae.decode(torch.zeros(1, 16, 1, 4, 4))).all()


def test_a_cache_run_with_bad_arguments_loses_no_clip(tmp_path):
    sys.path.insert(0, str(SCRIPTS))
    from make_random_model import make_random_pipeline

    from soraflow.data import build_latent_cache
    from soraflow.world.dataset import DatasetConfig, write_dataset

    make_random_pipeline().save_pretrained(tmp_path / "m")
    write_dataset(tmp_path / "world", DatasetConfig(n=2, sizes=[(64, 64)], seconds=(0.5, 0.5), image_fraction=0),
                  workers=1, progress=False)
    for bad in ({"fps": 0}, {"fps": float("nan")}, {"size": (0, 0)}, {"max_frames": 0}):
        with pytest.raises(InputError):
            build_latent_cache(tmp_path / "world", tmp_path / "m" / "vae", tmp_path / "cache", progress=False, **bad)
    summary = build_latent_cache(tmp_path / "world", tmp_path / "m" / "vae", tmp_path / "cache", progress=False)
    assert summary.added == 2 and summary.skipped == 0


def test_a_resumed_world_dataset_renders_again_a_clip_whose_file_was_damaged(tmp_path):
    from soraflow.world.dataset import DatasetConfig, read_manifest, write_dataset

    config = DatasetConfig(n=3, sizes=[(64, 64)], seconds=(0.5, 0.5), image_fraction=0)
    write_dataset(tmp_path, config, workers=1, progress=False)
    entry = read_manifest(tmp_path)[1]
    good = (tmp_path / entry["path"]).read_bytes()
    (tmp_path / entry["path"]).write_bytes(good[: len(good) // 3])  # cut short after the fact
    again = write_dataset(tmp_path, config, workers=1, progress=False)
    assert again.written == 1 and again.skipped == 2
    assert (tmp_path / entry["path"]).read_bytes() == good  # seeded: the same clip again
    (tmp_path / "dataset.json").write_text("{torn")
    with pytest.raises(InputError, match="damaged"):
        write_dataset(tmp_path, config, workers=1, progress=False)


def test_control_characters_never_reach_the_terminal():
    from soraflow.validate import check_text, safe_text

    assert safe_text("a\x1b[2Jb\udcffc") == "a\\x1b[2Jb\\xffc"
    with pytest.raises(InputError, match="U\\+001B at position 1"):
        check_text("prompt", "a\x1b[2J")
    with pytest.raises(InputError, match="not valid UTF-8"):
        check_text("prompt", "ball \udcff")
    assert check_text("prompt", "  a red\nball\t ") == "a red\nball"  # newlines and tabs are text
