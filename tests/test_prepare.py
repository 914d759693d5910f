"""`soraflow data prepare` on real footage: scene cuts, buckets, filters, captions, resume, and a LoRA
fine-tune on what it wrote whose loss falls against the base model."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from soraflow.cli import main as cli_main
from soraflow.errors import InputError
from soraflow.prepare import PrepareConfig, bucket_for, prepare_dataset
from soraflow.video import read_video, write_image, write_video

pytest.importorskip("scenedetect")
pytestmark = pytest.mark.usefixtures("one_thread")

# The hard cuts of scene_cuts.mp4 (and of bikes.mp4, the same footage), in seconds: the frames where
# the colour histogram jumps (content score 19-30 against about 10 between them).
CUTS = [1.2, 3.04, 5.48, 7.48, 9.68]


@pytest.fixture
def source(tmp_path, real_videos) -> Path:
    root = tmp_path / "in"
    (root / "more").mkdir(parents=True)
    shutil.copy(real_videos / "scene_cuts.mp4", root / "scene_cuts.mp4")
    shutil.copy(real_videos / "carphone_pristine.mp4", root / "more" / "carphone.mp4")  # no caption anywhere
    (root / "captions.jsonl").write_text('{"file": "scene_cuts.mp4", "caption": "a street, cut between views"}\nnot json\n')
    rng = np.random.default_rng(0)
    still = rng.integers(0, 255, (1, 64, 96, 3), dtype=np.uint8).repeat(24, 0)
    write_video(root / "still.mp4", still, 8, lossless=True)  # static: one picture held
    (root / "still.txt").write_text("a still picture")
    write_video(root / "dark.mp4", rng.integers(0, 6, (24, 64, 96, 3), dtype=np.uint8), 8, lossless=True)
    (root / "dark.txt").write_text("night")
    write_image(root / "photo.png", rng.integers(0, 255, (90, 160, 3), dtype=np.uint8))
    (root / "photo.json").write_text(json.dumps({"long": "a noisy photo", "short": "noise"}))
    (root / "broken.mp4").write_bytes((real_videos / "bikes.mp4").read_bytes()[:5000])  # truncated
    (root / "broken.txt").write_text("never read")
    return root


def test_prepare_cuts_buckets_filters_and_reports(source, tmp_path):
    said = []
    summary = prepare_dataset(source, tmp_path / "out", progress=False, warn=said.append)
    records = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    cuts = [r for r in records if r["source"] == "scene_cuts.mp4"]
    # every clip lies inside one shot: its span crosses no cut (detected by PySceneDetect)
    assert cuts and all(not (r["start"] < c - 0.05 and r["end"] > c + 0.05) for r in cuts for c in CUTS)
    assert sorted({round(r["start"], 2) for r in cuts}) == [0.0, *CUTS[:-1]]  # the last shot (0.32 s) is too short
    for r in cuts:
        assert (r["height"], r["width"]) == (48, 240)  # 1280x272 -> its own aspect (4.7 -> 5.0), not a square
        assert r["frames"] % 4 == 1 and r["fps"] == 8.0 and r["long"] == "a street, cut between views"
        frames = read_video(tmp_path / "out" / r["path"])
        assert frames.shape == (r["frames"], 48, 240, 3)
    photo = next(r for r in records if r["source"] == "photo.png")
    assert photo["frames"] == 1 and photo["short"] == "noise" and photo["path"].endswith(".png")
    assert {r["source"] for r in records} == {"scene_cuts.mp4", "photo.png"}
    assert summary.dropped == {"static": 1, "black": 1, "no caption": 1, "too short": 1}
    assert len(summary.unreadable) == 1 and summary.unreadable[0].startswith("broken.mp4")
    assert any("captions.jsonl:2" in s for s in said) and any("broken.mp4" in s for s in said)
    assert (tmp_path / "out" / "contact_sheet.png").stat().st_size > 1000

    # the trainers read it: one reader, every caption checked
    from soraflow.data import discover_clips

    assert [c.id for c in discover_clips(tmp_path / "out")] == [r["id"] for r in records]

    # resumable: a second run does nothing again; a changed file is done again
    again = prepare_dataset(source, tmp_path / "out", progress=False, warn=said.append)
    assert again.done_before == again.sources == 6 and again.clips == summary.clips
    (source / "still.txt").unlink()
    shutil.copy(source / "more" / "carphone.mp4", source / "still.mp4")
    (source / "still.txt").write_text("a phone call in a car")
    third = prepare_dataset(source, tmp_path / "out", progress=False, warn=said.append)
    assert third.done_before == 5 and third.dropped["static"] == 0 and third.clips == summary.clips + 1
    with pytest.raises(InputError, match="other settings \\(fps\\)"):
        prepare_dataset(source, tmp_path / "out", PrepareConfig(fps=12), progress=False)


def test_keep_uncaptioned_square_and_cli(source, tmp_path, capsys):
    code = cli_main(["data", "prepare", str(source), str(tmp_path / "sq"), "--square", "--keep-uncaptioned",
                     "--no-progress", "--max-seconds", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "clips" in out and "unreadable" in out
    records = [json.loads(line) for line in (tmp_path / "sq" / "manifest.jsonl").read_text().splitlines()]
    assert all(r["height"] == r["width"] for r in records)
    phone = [r for r in records if r["source"] == "more/carphone.mp4"]
    assert len(phone) == 3 and all("long" not in r for r in phone)  # 4.004 s in equal pieces of <= 2 s; no caption, kept
    assert cli_main(["data", "prepare", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["data", "prepare", str(source), str(source / "inside")]) == 2
    assert "inside IN_DIR" in capsys.readouterr().err


def test_buckets_keep_the_aspect():
    cfg = PrepareConfig(area=128 * 128)
    assert bucket_for(720, 1280, cfg) == (96, 160)  # 16:9, a 6% crop of the width for 33% more pixels than 144x80
    assert bucket_for(1280, 720, cfg) == (160, 96)
    assert bucket_for(144, 176, cfg) == (112, 144)  # QCIF 11:9
    assert bucket_for(40, 40, cfg) == (32, 32)  # no upscaling past the native size
    assert bucket_for(720, 1280, PrepareConfig(buckets=((128, 128), (96, 160), (160, 96)))) == (96, 160)


class _Captioner(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        reply = {"choices": [{"message": {"content": f"  caption number {len(self.requests)} "}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_captions_from_an_openai_compatible_endpoint(source, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Captioner)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        cfg = PrepareConfig(caption_url=url, caption_model="vlm")
        summary = prepare_dataset(source, tmp_path / "cap", cfg, progress=False, warn=lambda m: None)
    finally:
        server.shutdown()
    records = [json.loads(line) for line in (tmp_path / "cap" / "manifest.jsonl").read_text().splitlines()]
    phone = [r for r in records if r["source"] == "more/carphone.mp4"]
    assert phone and all(r["long"].startswith("caption number") for r in phone)  # only the uncaptioned asked
    assert len(_Captioner.requests) == len(phone) and "no caption" not in summary.dropped
    content = _Captioner.requests[0]["messages"][0]["content"]
    assert _Captioner.requests[0]["model"] == "vlm"
    assert [c["type"] for c in content] == ["text", "image_url", "image_url", "image_url"]
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    with pytest.raises(Exception, match="cannot reach the captioning endpoint"):
        prepare_dataset(source, tmp_path / "cap2", PrepareConfig(caption_url="http://127.0.0.1:9/v1", recaption=True),
                        progress=False, warn=lambda m: None)


def test_lora_on_prepared_footage_lowers_its_loss(source, tmp_path):
    """prepare -> latent cache -> a few LoRA steps on a base DiT: the loss on those clips falls."""
    from soraflow.data import build_latent_cache
    from soraflow.models.dit import DiT, dit_config
    from soraflow.models.text import load_text_encoder
    from soraflow.models.vae import VideoVAE, vae_config
    from soraflow.train.dit import DiTTrainer
    from soraflow.train.dit_config import TrainDiTConfig

    prepare_dataset(source, tmp_path / "data", progress=False, warn=lambda m: None)
    torch.manual_seed(0)
    vae = VideoVAE(vae_config("tiny")).eval()
    encoder = load_text_encoder("minilm")
    build_latent_cache(tmp_path / "data", vae, tmp_path / "cache", text_encoder=encoder, progress=False,
                       max_frames=9, dtype=torch.float32)
    base = DiT(dit_config("tiny", in_channels=vae.config.z_dim, out_channels=vae.config.z_dim, text_dim=encoder.dim))
    with torch.no_grad():
        for p in base.parameters():
            p.normal_(0, 0.05)
    base.save_pretrained(tmp_path / "base")
    cfg = TrainDiTConfig(data=tmp_path / "cache", out=tmp_path / "run", init=tmp_path / "base", lora=8, steps=30, lr=5e-3,
                         warmup_steps=0, batch_tokens=512, caption_dropout=0.0, threads=1, tensorboard=False,
                         checkpoint_every=30, seed=1)
    trainer = DiTTrainer(cfg, progress=False)
    from soraflow.data import collate_latents

    batch = collate_latents([trainer.dataset[i] for i in range(min(4, len(trainer.dataset)))
                             if trainer.dataset[i].latent.shape == trainer.dataset[0].latent.shape])

    def held_loss():
        g = torch.Generator().manual_seed(123)
        state = trainer.generator.get_state()
        trainer.generator.manual_seed(123)
        with torch.no_grad():
            from soraflow import flow

            x0 = batch.latents
            t = torch.rand(len(batch), generator=g) * 0.8 + 0.1
            path = flow.sample_path(x0, t[:, None].expand(-1, x0.shape[2]), generator=g)
            pred = trainer.model(path.xt, t[:, None].expand(-1, x0.shape[2]), batch.context, batch.context_mask)
            loss = float(flow.flow_loss(pred, path.target))
        trainer.generator.set_state(state)
        return loss

    before = held_loss()
    trainer.run()
    after = held_loss()
    assert after < before * 0.97, (before, after)
