"""How much a DiT uses its prompt: flow-matching loss on held-out clips with the clip's own caption,
the empty caption and another clip's caption.

    python scripts/text_use.py runs/default-model/dit-tune/init soraflow/assets/default/dit
    python scripts/text_use.py soraflow/assets/default --trained      # the same on clips it trained on

Held-out clips are SoraWorld clips of the build's dataset that its latent cache did not encode (so the
DiT never trained on them), 128x128, at least 9 frames (cut to 33), encoded with the given model
folder's VAE; captions are the long ones. Each clip is noised at each of ``--times`` (default 0.3, 0.6,
0.9 and 1.0) with fixed noise, and every DiT sees the same inputs. "text gain" is how much lower the loss
is with the right caption (a model that ignores the prompt scores 0%), over all times and per time. The
t = 1 one matters most: at pure noise only the prompt can tell the model the clip's colours, and the
first sampling step is taken there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def held_out_clips(work: Path, count: int, *, trained: bool = False) -> list[dict]:
    """128x128 clips of at least 9 frames that the latent cache did not encode (``trained``: did)."""
    cached = {e["id"] for e in json.loads((work / "cache" / "index.json").read_text())["entries"]}
    rows = [json.loads(line) for line in (work / "data" / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if (r["id"] in cached) == trained and r["frames"] >= 9
            and (r["height"], r["width"]) == (128, 128)][:count]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dits", nargs="+", type=Path, help="DiT folders (or model folders with dit/) to compare")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "default-model", help="the build's work folder")
    p.add_argument("--model", type=Path, default=REPO / "soraflow" / "assets" / "default",
                   help="model folder whose VAE and text encoder prepare the clips")
    p.add_argument("--clips", type=int, default=32, help="held-out clips [32]")
    p.add_argument("--times", default="0.3,0.6,0.9,1.0", help="noise levels t, comma-separated [0.3,0.6,0.9,1.0]")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--trained", action="store_true",
                   help="clips the cache encoded (the DiT trained on them) instead of held-out ones: the gap "
                        "between the two losses is what the DiT memorised")
    args = p.parse_args(argv)

    import torch

    from soraflow import video
    from soraflow.models.dit import DiT
    from soraflow.pipeline import SoraPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    times = [float(t) for t in args.times.split(",")]
    if not times or not all(0 < t <= 1 for t in times):
        print(f"text_use: --times must be values in (0, 1], got {args.times!r}", file=sys.stderr)
        return 2
    rows = held_out_clips(args.work, args.clips, trained=args.trained)
    which = "trained-on" if args.trained else "held-out"
    if len(rows) < 2:
        print(f"text_use: fewer than 2 {which} 128x128 clips in {args.work}", file=sys.stderr)
        return 2
    pipe = SoraPipeline.from_pretrained(args.model, dtype=torch.float32)

    def caption(text: str) -> torch.Tensor:
        e = pipe.text_encoder.encode([text])
        return e.tokens[0][e.mask[0]]

    data = []
    for r in rows:
        frames = video.read_video(args.work / "data" / r["path"], max_frames=33)
        frames = frames[: 1 + 4 * ((len(frames) - 1) // 4)]
        data.append((pipe.encode_frames(frames), caption(r["long"])))
    null = caption("")
    print(f"{len(data)} {which} clips from {args.work / 'data'}")
    for path in args.dits:
        model = DiT.from_pretrained(path, dtype=torch.float32).eval()
        loss = {(key, t): 0.0 for key in ("own", "null", "other") for t in times}
        for k, (z, text) in enumerate(data):
            other = data[(k + 5) % len(data)][1]
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(k))
            for t in times:
                xt, target = (1 - t) * z + t * noise, noise - z
                with torch.no_grad():
                    for key, ctx in (("own", text), ("null", null), ("other", other)):
                        loss[key, t] += ((model(xt, torch.tensor([t]), ctx[None]) - target) ** 2).mean().item()
        own, empty, wrong = (sum(loss[key, t] for t in times) / (len(times) * len(data)) for key in ("own", "null", "other"))
        per_t = ", ".join(f"t={t:g} {(loss['null', t] - loss['own', t]) / loss['null', t]:.1%} "
                          f"(loss {loss['own', t] / len(data):.3f})" for t in times)
        print(f"{path}: loss own caption {own:.4f}, empty {empty:.4f}, another clip's {wrong:.4f}; "
              f"text gain {(empty - own) / empty:.1%} vs empty, {(wrong - own) / wrong:.1%} vs another; "
              f"vs empty per t: {per_t}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
