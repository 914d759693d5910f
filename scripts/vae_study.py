"""Choose the default model's VAE by measurement: candidates trained side by side at equal CPU time.

    python scripts/vae_study.py --data runs/v2/data --heldout runs/v2/heldout --out runs/vae-study --minutes 20

Every candidate trains with the same loss, data, crops, batch and learning-rate schedule on one
thread. Equal CPU time, not equal steps: each candidate's steps/s is measured first (a short
calibration run), and its run gets as many steps as ``--minutes`` of CPU time buy, so its cosine
schedule ends on the budget. Along the way the held-out clips (every frame counted, not only the
first) are reconstructed at a few points, which gives each candidate a curve of held-out PSNR against
CPU time: the whole frame and inside the objects' boxes (SoraWorld's truth), frame 0 and the later
frames apart.

Resumable: a finished candidate is skipped, an interrupted one resumes from its last checkpoint
(the trainer's own resume). Writes OUT/study.json (plan, timings, every evaluation) and
OUT/study.png (the curves), both redrawn after each evaluation, and OUT/<candidate>/ (the run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> TrainVAEConfig overrides. "small" is the shipped VAE's shape (4x8x8, base 16).
CANDIDATES = {
    "small": {},
    "small-t2": {"temporal_factor": 2},  # 2x8x8: a fast object spreads over two frames per latent, not four
    "wide": {"base_dim": 32},  # twice the channels at every stage
    "wide-t2": {"base_dim": 32, "temporal_factor": 2},
    # the same latent numbers per clip as small (16x16x4 = 8x8x16 per 64-px frame), spatially finer
    "s4-z4": {"spatial_factor": 4, "z_dim": 4},
    # 4x the latent numbers of small, arranged two ways (the DiT sees 64 tokens of 256 numbers either way,
    # with a 1x4x4 patch on the first)
    "s4": {"spatial_factor": 4},
    "z64": {"z_dim": 64},
    # moving objects are what the 4x temporal factor loses (in the boxes, frames 1+ trail frame 0 by 7 dB)
    "s4-t2": {"spatial_factor": 4, "temporal_factor": 2},
    # Wan2.2's residual blocks: a shortcut folds each stage's frames and pixels into channels, so a moving
    # object's every position reaches the latent without the main path having to learn to carry it
    "small-res": {"residual": True},
    "s4-res": {"spatial_factor": 4, "residual": True},
    # the loss, not the shape: moving pixels (where an object went and where it was) weighted 9x in the L1
    "s4-motion": {"spatial_factor": 4, "motion_weight": 8.0},
    # no temporal compression: every frame is encoded as frame 0 is (the DiT's 4-frame patch then does
    # the temporal packing); measures how much of the later frames' loss the temporal factor causes
    "s4-t1-res": {"spatial_factor": 4, "temporal_factor": 1, "residual": True},
    # the optimiser, not the model: lr 1e-3 on the v2 shape (docs/vae.md measured 3e-4 and 1e-3 on small)
    "s4-res-lr1e-3": {"spatial_factor": 4, "residual": True, "lr": 1e-3},
    # frame-wise latents: s4-res run frame by frame (its first-frame path) and four frames stacked per latent
    # frame; trains on single frames, 16 a batch (0.44x the pixels of a 4 x 9-frame batch)
    "s4-res-frames": {"spatial_factor": 4, "residual": True, "frame_pack": 4, "image_prob": 1.0, "long_prob": 0.0,
                      "batch_size": 16},
}


SHAPE_KEYS = ("base_dim", "temporal_factor", "spatial_factor", "z_dim", "residual")  # what --init fixes


def parse_clips(text: str) -> dict:
    """``FRAMESxCROP:PROB`` (e.g. 33x32:0.35) as the trainer's long-clip fields."""
    try:
        shape, prob = text.split(":")
        frames, crop = (int(v) for v in shape.split("x"))
        return {"long_frames": frames, "long_crop": crop, "long_prob": float(prob)}
    except ValueError:
        raise SystemExit(f"vae_study: long clips are FRAMESxCROP:PROB, e.g. 33x32:0.35, not {text!r}")


def parse_sets(items: list[str]) -> dict:
    """``KEY=VALUE`` items (JSON values, else strings) as trainer settings, checked against TrainVAEConfig."""
    from dataclasses import fields

    from soraflow.train.vae import TrainVAEConfig

    known, out = {f.name for f in fields(TrainVAEConfig)}, {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"vae_study: --long-set {item!r}: not KEY=VALUE with KEY a trainer setting")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def heldout_clips(folder: Path, frames: int, clips: int):
    """(frames (T, H, W, 3) uint8, boxes (T, H, W) bool) of the first ``clips`` held-out clips."""
    sys.path.insert(0, str(REPO / "scripts"))
    from vae_frame_psnr import object_mask

    from soraflow.data import discover_clips, read_clip

    out = []
    for item in discover_clips(folder):
        truth = item.path.with_suffix(".json")
        video, _ = read_clip(item, max_frames=frames)
        if len(video) >= frames and truth.is_file():
            out.append((video[:frames], object_mask(truth, video.shape[:3], frames)))
        if len(out) == clips:
            break
    if not out:
        raise SystemExit(f"vae_study: no held-out clip of {frames} frames with a truth file in {folder}")
    return out


def evaluate(vae, clips) -> dict:
    """Reconstruction PSNR over ``clips``: whole frame and inside the boxes, frame 0 and frames 1+."""
    import numpy as np
    import torch

    from soraflow.latents import encode_frames

    sq_frames, inside = [], np.zeros((2, 2))  # rows: frame 0, later frames; cols: squared error, pixels
    vae.eval()
    with torch.no_grad():
        for frames, box in clips:
            z = encode_frames(vae, frames)
            x = vae.decode(vae.denormalize(z), num_frames=len(frames))[0]
            rec = ((x.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 3, 0).numpy()
            sq = (rec - frames.astype(np.float32)) ** 2  # (T, H, W, 3)
            sq_frames.append(sq.mean(axis=(1, 2, 3)))
            err = sq.mean(-1)
            for row, part in enumerate((slice(0, 1), slice(1, None))):
                inside[row] += err[part][box[part]].sum(), box[part].sum()
    per_frame = np.mean(sq_frames, axis=0)  # mean squared error per frame index
    db = lambda mse: float(10 * np.log10(255**2 / max(mse, 1e-9)))  # noqa: E731
    obj = [db(e / max(n, 1)) for e, n in inside]
    return {"psnr_all": db(per_frame.mean()), "psnr_frame0": db(per_frame[0]), "psnr_later": db(per_frame[1:].mean()),
            "box_frame0": obj[0], "box_later": obj[1], "worst_frame": db(per_frame.max())}


def load_run_vae(run_dir: Path, cfg):
    from soraflow.models.vae import VideoVAE
    from soraflow.train.checkpoint import latest_checkpoint, load_checkpoint
    from soraflow.train.vae import run_model_config, set_frame_pack

    vae = VideoVAE(run_model_config(cfg))
    load_checkpoint(latest_checkpoint(run_dir), modules={"vae": vae}, restore_rng=False)
    if cfg.frame_pack and vae.config.frame_pack != cfg.frame_pack:
        set_frame_pack(vae, cfg.frame_pack)
    return vae


def open_study(path: Path, args: argparse.Namespace) -> dict:
    """The study record at ``path`` (a new one if there is none yet), with this invocation's settings."""
    study = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    study["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    return study


def long_offset(study: dict, tag: str) -> float:
    """CPU seconds of training behind a long run's first step (its candidate's study run, and the run it
    started from when given ``--long-init``), so that its curve continues theirs."""
    run = study["long"][tag]
    return run.get("cpu_offset_s", study["runs"].get(run.get("of", tag), {}).get("cpu_s", 0.0))


def plot(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    # A long run starts from its candidate's study weights: its curve continues that one's CPU time.
    curves = [(name, run, 0.0, "-") for name, run in study["runs"].items()]
    curves += [(f"long-{name}", run, long_offset(study, name), "--") for name, run in study.get("long", {}).items()]
    for name, run, offset, style in curves:
        evals = run.get("evals", [])
        if not evals:
            continue
        minutes = [(offset + e["cpu_s"]) / 60 for e in evals]
        axes[0].plot(minutes, [e["psnr_later"] for e in evals], style, marker="o", ms=3, label=name)
        axes[1].plot(minutes, [e["box_later"] for e in evals], style, marker="o", ms=3, label=name)
    for ax, title, gate in ((axes[0], "held-out PSNR, frames 1+ (whole frame)", 32),
                            (axes[1], "held-out PSNR inside the objects' boxes, frames 1+", 28)):
        ax.axhline(gate, color="grey", ls="--", lw=1)
        ax.set_xlabel("training CPU minutes (one thread)")
        ax.set_ylabel("dB")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="SoraWorld training set")
    p.add_argument("--heldout", type=Path, required=True, help="SoraWorld clips never trained on (with truth files)")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "vae-study", help="study folder [runs/vae-study]")
    p.add_argument("--minutes", type=float, default=20, help="training CPU minutes per candidate [20]")
    p.add_argument("--candidates", default=",".join(CANDIDATES), help=f"comma-separated, of {', '.join(CANDIDATES)}")
    p.add_argument("--evals", type=int, default=6, help="held-out evaluations along each run [6]")
    p.add_argument("--heldout-clips", type=int, default=6, help="held-out clips per evaluation [6]")
    p.add_argument("--frames", type=int, default=33, help="frames per held-out clip (4 s at 8 fps) [33]")
    p.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    p.add_argument("--object-weight", type=float, default=4.0, help="the trainer's --object-weight, for every candidate [4]")
    p.add_argument("--clips", default=None, metavar="FRAMESxCROP:PROB",
                   help="every candidate also trains on long clips, e.g. 33x32:0.35 (see --long-clips); without them a "
                        "VAE never learns the steady state of clips longer than its training clips")
    p.add_argument("--long", default=None, metavar="NAME",
                   help="after the study, train candidate NAME on from its study weights in OUT/long-NAME (a fresh "
                        "cosine schedule over --long-steps), with a held-out evaluation every --long-eval-every steps")
    p.add_argument("--long-steps", type=int, default=20000, help="steps of the long run [20000]")
    p.add_argument("--long-eval-every", type=int, default=250, help="steps between the long run's evaluations [250]")
    p.add_argument("--long-init", type=Path, default=None, metavar="DIR",
                   help="start the long run from this VAE folder (or run folder: its latest checkpoint) instead of "
                        "the candidate's study weights")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="after the long run, write its latest weights to DIR as a VAE model folder, with latent "
                        "statistics measured on --data (what a latent cache and the DiT need)")
    p.add_argument("--long-clips", default=None, metavar="FRAMESxCROP:PROB",
                   help="the long run also trains on long clips at a smaller crop, e.g. 33x32:0.35 (the trainer's "
                        "--long-frames, --long-crop, --long-prob); its folder is then OUT/long-NAME-FRAMESxCROP")
    p.add_argument("--long-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a trainer setting of the long run (JSON value), e.g. decoder_base_dim=32 with "
                        "freeze_encoder=true (a wider decoder on the --long-init encoder); its folder is then "
                        "OUT/long-NAME+KEY=VALUE,...")
    args = p.parse_args(argv)

    import torch

    from soraflow.atomic import write_json
    from soraflow.train.vae import TrainVAEConfig, train_vae

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    study_path = args.out / "study.json"
    study = open_study(study_path, args)
    clips = heldout_clips(args.heldout, args.frames, args.heldout_clips)

    def save():
        write_json(study_path, study)
        plot(study, args.out / "study.png")

    base = TrainVAEConfig(data=args.data, preset="small", batch_size=4, crop=64, frames=9, image_prob=0.25,
                          lr=1e-4, warmup_steps=50, object_weight=args.object_weight, precision="fp32",
                          threads=args.threads, progress=False, sample_every=10**9, log_every=10, keep_last=2,
                          **(parse_clips(args.clips) if args.clips else {}))
    for name in args.candidates.split(","):
        if name not in CANDIDATES:
            raise SystemExit(f"vae_study: unknown candidate {name!r} (choose from {', '.join(CANDIDATES)})")
        run = study["runs"].setdefault(name, {"overrides": CANDIDATES[name], "evals": []})
        if run.get("done"):
            print(f"{name}: done ({run['steps']} steps)", flush=True)
            continue
        cfg = replace(base, **CANDIDATES[name])
        if "steps" not in run:  # calibrate: CPU seconds per step after a warm-up
            calib = replace(cfg, run_dir=args.out / name / "calibration", steps=10**6, save_every=10**6)
            train_vae(calib, stop_after=3)
            start = time.process_time()
            train_vae(calib, stop_after=10)
            run["cpu_s_per_step"] = (time.process_time() - start) / 10
            run["steps"] = max(int(args.minutes * 60 / run["cpu_s_per_step"]), 10)
            save()
        every = max(run["steps"] // args.evals, 1)
        train_with_evals(name, run, replace(cfg, run_dir=args.out / name / "run", steps=run["steps"], save_every=every),
                         every, clips, save)

    if args.long:
        name = args.long
        if not study["runs"].get(name, {}).get("done"):
            raise SystemExit(f"vae_study: --long {name}: its study run is not finished")
        extra, tag = {}, name
        if args.long_clips:
            extra = parse_clips(args.long_clips)
            tag = f"{name}-{args.long_clips.split(':')[0]}"
        sets = parse_sets(args.long_set)
        if sets:
            tag += "+" + ",".join(f"{k}={json.dumps(v)}" for k, v in sets.items())
        run = study.setdefault("long", {}).setdefault(tag, {"evals": [], "steps": args.long_steps, "of": name, **extra, **sets})
        init = args.out / name / "weights"
        if args.long_init and "cpu_offset_s" not in run:
            init = args.long_init
            offset = study["runs"][name].get("cpu_s", 0.0)
            if not (init / "config.json").is_file():  # a run folder: its latest checkpoint, as a model folder
                from soraflow.train.checkpoint import list_checkpoints

                init = args.out / f"long-{tag}" / "init"
                load_run_vae(args.long_init, replace(base, **CANDIDATES[name])).save_pretrained(init)
                step = list_checkpoints(args.long_init)[-1][0]
                # add the CPU time of the long run it continues, when that one is in this study
                for key, parent in study.get("long", {}).items():
                    if (args.out / f"long-{key}" / "run").resolve() == args.long_init.resolve():
                        offset += next((e["cpu_s"] for e in parent["evals"] if e["step"] == step), 0.0)
            run.update(init=str(init), cpu_offset_s=offset)
            save()
        if "init" in run:
            init = Path(run["init"])
        elif not (init / "config.json").is_file():  # the study run's last checkpoint as a model folder
            study_cfg = replace(base, **CANDIDATES[name], run_dir=args.out / name / "run")
            load_run_vae(study_cfg.run_dir, study_cfg).save_pretrained(init)
        # the candidate's training settings (not its shape: that comes from the init weights)
        training = {k: v for k, v in CANDIDATES[name].items() if k not in SHAPE_KEYS}
        cfg = replace(base, init=init, steps=run["steps"], run_dir=args.out / f"long-{tag}" / "run",
                      save_every=args.long_eval_every, keep_last=3, **{**extra, **training, **sets})
        train_with_evals(f"long-{tag}", run, cfg, args.long_eval_every, clips, save)
        if args.export:
            from soraflow.train.vae import ClipReader, export_model, list_clips

            vae = load_run_vae(cfg.run_dir, cfg)
            export_model(vae, ClipReader(list_clips(args.data), cfg.size, cfg.cache_mb), cfg, args.export)
            print(f"long-{tag}: step {run['evals'][-1]['step']} written to {args.export} (latent statistics measured)", flush=True)
    return 0


def train_with_evals(name: str, run: dict, cfg, every: int, clips, save) -> None:
    """Train ``cfg`` to ``cfg.steps`` in segments of ``every`` steps, evaluating on the held-out clips after
    each; the CPU time and every evaluation go into ``run`` (saved by ``save``). Resumes where it stopped."""
    import time

    from soraflow.train.vae import train_vae

    if run.get("done"):
        return
    marks = [every * (i + 1) for i in range(cfg.steps // every) if every * (i + 1) < cfg.steps] + [cfg.steps]
    for mark in marks:
        if any(e["step"] >= mark for e in run["evals"]):
            continue
        done = run["evals"][-1]["step"] if run["evals"] else 0
        start = time.process_time()
        reached = train_vae(cfg, stop_after=mark - done).step
        run["cpu_s"] = run.get("cpu_s", 0.0) + time.process_time() - start
        result = evaluate(load_run_vae(cfg.run_dir, cfg), clips)
        run["evals"].append({"step": reached, "cpu_s": run["cpu_s"], **result})
        print(f"{name} step {reached}/{cfg.steps} ({run['cpu_s'] / 60:.1f} CPU min): " +
              ", ".join(f"{k} {v:.2f}" for k, v in result.items()), flush=True)
        save()
    run["done"] = True
    save()


if __name__ == "__main__":
    sys.exit(main())
