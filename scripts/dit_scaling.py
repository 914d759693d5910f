"""Size the default model's DiT by measurement: several sizes, each trained to a few CPU budgets.

    python scripts/dit_scaling.py --cache runs/v2/cache --heldout runs/v2/cache-heldout --out runs/dit-scaling \
        --sizes xs,s,m --budgets 5,15

Every (size, budget) run is its own training run whose cosine schedule ends on its budget: the
steps a budget buys come from a short calibration of the size's CPU seconds per step (as in
scripts/vae_study.py), once per size for the whole study, so a small model takes more steps for the
same compute and a study resumed on another machine keeps one compute scale. Each run is scored on
held-out latents (a cache of clips never trained on) with the flow-matching loss at fixed timesteps
and fixed noise, so two runs differ only by their weights. The recipe otherwise is the v2 build's
(`V2["dit"]` in scripts/build_default_model.py: 4x4 patches, pooled text, shift 4).

Resumable: a finished run is skipped, an interrupted one resumes from its checkpoint. Writes
OUT/scaling.json and OUT/scaling.png (held-out loss against CPU minutes, one line per size), with a
power law fitted per size (loss = a * minutes^-b) and the budgets where those fits cross: where a
larger size would start to beat a smaller one.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

# name -> DiT shape (width = heads x 64). Parameters at the v2 latents (z16, 4x4 patches, 384-wide text).
SIZES = {
    "xs": {"num_layers": 4, "num_attention_heads": 4, "ffn_dim": 1024},  # width 256: the v2 recipe's (the study's pick)
    "s": {"num_layers": 8, "num_attention_heads": 6, "ffn_dim": 1536},  # width 384: the "small" preset's
    "m": {"num_layers": 8, "num_attention_heads": 8, "ffn_dim": 2048},  # width 512, ~50 MB in bf16
}
HELDOUT_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)  # flow times of the held-out loss (one noise draw per clip and time)


def base_config(cache: Path):
    from build_default_model import V2

    from soraflow.train.dit_config import TrainDiTConfig

    d = V2["dit"]
    return TrainDiTConfig(data=cache, preset=d["preset"], patch_size=d["patch_size"], batch_tokens=d["batch_tokens"],
                          lr=d["lr"], timestep_shift=d["timestep_shift"], terminal_prob=d["terminal_prob"],
                          pooled_text=d["pooled_text"], ema_decay=0.999, precision="fp32", tensorboard=False)


def heldout_loss(model, cache: Path, clips: int = 24) -> float:
    """Mean flow-matching loss (velocity MSE) of ``model`` over held-out cache entries, every entry at each
    of HELDOUT_TIMES with noise drawn from a fixed seed: the same numbers for every run."""
    import torch

    from soraflow.data import LatentDataset

    data = LatentDataset(cache, caption="long", seed=0)
    g = torch.Generator().manual_seed(1234)
    total, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(min(clips, len(data))):
            item = data[i]
            if item is None:  # an unreadable entry (reported by the dataset)
                continue
            z, ctx = item.latent[None], item.text[None]
            for t in HELDOUT_TIMES:
                noise = torch.randn(z.shape, generator=g)
                xt = (1 - t) * z + t * noise
                pred = model(xt, torch.tensor([t]), ctx)
                total += float(((pred - (noise - z)) ** 2).mean())
                n += 1
    return total / max(n, 1)


def run_one(name: str, cfg, record: dict, args, save) -> None:
    """Calibrate (once), train to the budget, score the final weights on the held-out cache."""
    from soraflow.train.launch import train_dit

    if record.get("done"):
        print(f"{name}: done ({record['steps']} steps, held-out {record['heldout_loss']:.4f})", flush=True)
        return
    if "cpu_s_per_step" not in record:
        calib = replace(cfg, out=args.out / name / "calibration", steps=10**6, warmup_steps=1, checkpoint_every=10**6)
        train_dit(replace(calib, stop_at_step=2), progress=False)
        start = time.process_time()
        train_dit(replace(calib, stop_at_step=8), progress=False)
        record["cpu_s_per_step"] = (time.process_time() - start) / 6
        record["steps"] = max(int(record["budget_min"] * 60 / record["cpu_s_per_step"]), 20)
        save()
    steps = record["steps"]
    run = replace(cfg, out=args.out / name / "run", steps=steps, warmup_steps=max(steps // 20, 1),
                  checkpoint_every=max(steps // 6, 1))
    start = time.process_time()
    result = train_dit(run, progress=False)
    record["cpu_s"] = record.get("cpu_s", 0.0) + time.process_time() - start
    import torch

    from soraflow.models.dit import DiT
    from soraflow.train.dit import export_dit

    export_dit(result.run_dir, args.out / name / "dit", ema=False)  # the weights the schedule ended on: an EMA over a few hundred steps is mostly the start
    model = DiT.from_pretrained(args.out / name / "dit", dtype=torch.float32)
    record["params"] = sum(p.numel() for p in model.parameters())
    record["heldout_loss"] = heldout_loss(model, args.heldout)
    record["done"] = True
    save()
    print(f"{name}: {steps} steps, {record['params'] / 1e6:.1f} M parameters, held-out {record['heldout_loss']:.4f}", flush=True)


def power_fits(study: dict) -> dict:
    """Per size with two or more finished budgets: held-out loss = a * minutes^-b, least squares in log-log.
    No irreducible term, so it overstates how far more compute goes: read a crossover as a lower bound
    on the budget where the larger size starts to pay."""
    import numpy as np

    fits = {}
    for size in SIZES:
        runs = [r for r in study["runs"].values() if r["size"] == size and r.get("done")]
        if len({r["budget_min"] for r in runs}) >= 2:
            slope, intercept = np.polyfit(np.log([r["budget_min"] for r in runs]), np.log([r["heldout_loss"] for r in runs]), 1)
            fits[size] = {"a": float(np.exp(intercept)), "b": float(-slope)}
    return fits


def crossovers(fits: dict) -> dict:
    """For each pair of fitted sizes (smaller first), the budget in CPU minutes from which the larger one's
    fitted loss is lower, where the fits cross at all."""
    out = {}
    names = [s for s in SIZES if s in fits]
    for i, small in enumerate(names):
        for large in names[i + 1:]:
            fs, fl = fits[small], fits[large]
            if fl["b"] > fs["b"]:
                log_minutes = math.log(fl["a"] / fs["a"]) / (fl["b"] - fs["b"])
                if log_minutes < math.log(1e7):  # beyond that (19 core-years) the fits are parallel, not crossing
                    out[f"{small}->{large}"] = math.exp(log_minutes)
    return out


def plot(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    fits = study.get("fits", {})
    for size in SIZES:
        runs = sorted((r for r in study["runs"].values() if r["size"] == size and r.get("done")), key=lambda r: r["budget_min"])
        if runs:
            line, = ax.plot([r["budget_min"] for r in runs], [r["heldout_loss"] for r in runs], "o-",
                            label=f"{size} ({runs[0]['params'] / 1e6:.1f} M parameters)")
            if size in fits:  # the power-law fit, carried to the build's budget (40 core-hours)
                x = np.geomspace(runs[0]["budget_min"], 2400, 50)
                ax.plot(x, fits[size]["a"] * x ** -fits[size]["b"], "--", color=line.get_color(), alpha=0.5, lw=1)
    ax.set_xscale("log")
    if fits:
        ax.set_title("dashed: power-law fits per size, carried to 40 core-hours", fontsize=9)
    ax.set_xlabel("training budget (CPU minutes, one thread)")
    ax.set_ylabel("held-out flow-matching loss")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, required=True, help="latent cache to train on")
    p.add_argument("--heldout", type=Path, required=True, help="latent cache of held-out clips (same VAE and text encoder)")
    p.add_argument("--out", type=Path, required=True, help="study folder (rerun to resume)")
    p.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, of {', '.join(SIZES)}")
    p.add_argument("--budgets", default="5,15", help="CPU minutes per run, comma-separated [5,15]")
    p.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    args = p.parse_args(argv)

    import torch

    from soraflow.atomic import write_json
    from vae_study import open_study

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "scaling.json"
    study = open_study(path, args)
    study["heldout_times"] = list(HELDOUT_TIMES)

    def save():
        write_json(path, study)
        plot(study, args.out / "scaling.png")

    base = replace(base_config(args.cache), threads=args.threads)
    budgets = [float(b) for b in args.budgets.split(",")]
    for budget in budgets:  # the small budgets first: a whole curve at low cost before the long runs
        for size in args.sizes.split(","):
            if size not in SIZES:
                raise SystemExit(f"dit_scaling: unknown size {size!r} (choose from {', '.join(SIZES)})")
            name = f"{size}-{budget:g}min"
            record = study["runs"].setdefault(name, {"size": size, "budget_min": budget, **SIZES[size]})
            # One calibration per size for the whole study: every budget of a size buys steps at the same
            # rate, so a study resumed on another machine (or under other load) keeps one compute scale.
            rates = [r["cpu_s_per_step"] for r in study["runs"].values() if r["size"] == size and "cpu_s_per_step" in r]
            if not record.get("done") and rates and record.get("cpu_s_per_step") != rates[0]:
                record["cpu_s_per_step"] = rates[0]
                record["steps"] = max(int(budget * 60 / rates[0]), 20)
            run_one(name, replace(base, **SIZES[size]), record, args, save)
    best = {}
    for budget in budgets:
        done = [r for r in study["runs"].values() if r["budget_min"] == budget and r.get("done")]
        if done:
            best[f"{budget:g}"] = min(done, key=lambda r: r["heldout_loss"])["size"]
    study["best_size_per_budget"] = best
    study["fits"] = power_fits(study)
    study["crossover_min"] = crossovers(study["fits"])
    save()
    print(f"{path}: best size per budget {best}")
    for pair, minutes in study["crossover_min"].items():
        print(f"  power-law fits cross at {minutes:,.0f} CPU minutes: {pair}")
    if study["fits"] and not study["crossover_min"]:
        print("  the power-law fits do not cross: at these budgets no larger size is on course to overtake a smaller one")
    return 0 if math.isfinite(sum(r.get("heldout_loss", 0) for r in study["runs"].values())) else 1


if __name__ == "__main__":
    raise SystemExit(main())
