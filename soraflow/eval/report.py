"""Bench reports: JSON, a Markdown table, matplotlib plots and a contact sheet of sample frames.

Every number of a model is shown beside the same scorer's number on the simulator's renders (the upper
bound) and on the null model (the floor), so a reader can see where a model sits between the two.

    write_report(out_dir, results, suite)   # bench.json, bench.md, categories.png, metrics.png,
                                            # trajectories.png, contact_sheet.png
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json, write_text
from ..world.spec import COLORS
from . import metrics as M
from .bench import BenchResult

UPPER, LOWER = "simulator", "null"
VAE_BOUND = "vae"  # the simulator's renders through the model's VAE
REFERENCES = (UPPER, VAE_BOUND, LOWER, "null-vae")


def _fmt(v, metric: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if metric == "first_frame":
        return f"{v:.1f} dB"
    if metric == "seam_ratio":
        return f"{v:.2f}"
    if metric == "n":
        return str(int(v))
    return f"{v:.3f}"


def _ordered(results: list[BenchResult]) -> list[BenchResult]:
    """Models first, then the upper and lower bounds."""
    rank = {UPPER: 1, VAE_BOUND: 1, LOWER: 2, "null-vae": 2}
    return sorted(results, key=lambda r: rank.get(r.name, 0))


def markdown(results: list[BenchResult], *, title: str = "SoraWorld bench", command: str | None = None) -> str:
    results = _ordered(results)
    names = [r.name for r in results]
    lines = [f"# {title}", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    lines += [f"Videos per source: {', '.join(f'{r.name} {len(r.entries)}' for r in results)}. "
              f"Accuracies are in [0, 1] (higher is better); `simulator` is the upper bound (SoraWorld's own "
              f"renders), `vae` those renders encoded and decoded by the model's VAE (the most a model with "
              f"that VAE can score), `null` the floor (the prompt removed: an unrelated simulated scene) and "
              f"`null-vae` random latents through the model's VAE.", ""]
    metrics = [m for m in ("score",) + M.ALL_METRICS if any(r.overall.get(m) is not None for r in results)]
    lines += ["## Overall", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for m in metrics:
        lines.append(f"| {m} | " + " | ".join(_fmt(r.overall.get(m), m) for r in results) + " |")
    if any(r.frechet is not None for r in results):
        lines.append("| Fréchet distance to simulator (detector features) | "
                     + " | ".join(_fmt(r.frechet) for r in results) + " |")
    cats = sorted({c for r in results for c in r.per_category})
    lines += ["", "## Per category (mean of the accuracy metrics that apply)", "",
              "| category | videos | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for c in cats:
        n = max(r.per_category.get(c, {}).get("n", 0) for r in results)
        lines.append(f"| {c} | {n} | " + " | ".join(_fmt(r.per_category.get(c, {}).get("score")) for r in results) + " |")
    lines += ["", "## Per category and metric", ""]
    for c in cats:
        ms = [m for m in M.ALL_METRICS if any(r.per_category.get(c, {}).get(m) is not None for r in results)]
        cells = "; ".join(f"{m} " + " / ".join(_fmt(r.per_category.get(c, {}).get(m), m) for r in results) for m in ms)
        lines.append(f"- **{c}** ({' / '.join(names)}): {cells}")
    return "\n".join(lines) + "\n"


def _savefig(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def bound_markers(results: list[BenchResult]) -> list[tuple[BenchResult, str, str]]:
    """(result, legend label, colour) of the references drawn as markers over a plot's bars: the simulator
    (upper bound), its renders through the model's VAE (the most that model can score) and the null floor."""
    lower = next((r for r in results if r.name in (LOWER, "null-vae")), None)
    marks = {UPPER: ("simulator (upper bound)", "green"), VAE_BOUND: ("simulator through the VAE (ceiling)", "orange")}
    by_name = {r.name: r for r in results}
    found = [(by_name[name], *mark) for name, mark in marks.items() if name in by_name]
    return found + ([(lower, "null (floor)", "red")] if lower is not None else [])


def plot_categories(results: list[BenchResult], path: Path, *, key: str = "category") -> Path:
    """Bars per category (or per metric, key="metric") for each model, with the bounds as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = _ordered(results)
    models = [r for r in results if r.name not in REFERENCES]
    if key == "category":
        labels = sorted({c for r in results for c in r.per_category})
        get = lambda r, c: (r.per_category.get(c) or {}).get("score")  # noqa: E731
    else:
        labels = [m for m in M.ACCURACY_METRICS if any(r.overall.get(m) is not None for r in results)]
        get = lambda r, m: r.overall.get(m)  # noqa: E731
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(labels) + 2), 4))
    x = np.arange(len(labels))
    bars = models or [r for r, _, _ in bound_markers(results)]
    width = 0.8 / max(len(bars), 1)
    for i, r in enumerate(bars):
        vals = [get(r, c) for c in labels]
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, [v if v is not None else 0 for v in vals], width, label=r.name)
    for r, label, color in bound_markers(results):
        vals = [get(r, c) for c in labels]
        ax.scatter([xi for xi, v in zip(x, vals) if v is not None], [v for v in vals if v is not None],
                   zorder=3, linewidths=2.5, marker="_", color=color, s=300, label=label)
    ax.set_xticks(x, labels, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score" if key == "category" else "accuracy")
    ax.set_title(f"SoraWorld bench per {key}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: bars stay visible
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path


def plot_trajectories(results: list[BenchResult], path: Path, *, per_category: int = 1, max_tracks: int = 3,
                      categories=("gravity", "direction", "occlusion", "collision")) -> Path:
    """Tracked object centres (y down) of generated vs simulated videos for a few entries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = _ordered(results)
    upper = next((r for r in results if r.name == UPPER), None)
    shown = next((r for r in results if r.name not in REFERENCES), None) or \
        next((r for r in results if r.name != UPPER), None)
    pool = shown or upper
    ids = []
    for c in categories:
        ids += [e.id for e in pool.entries if e.category == c][:per_category]
    if not ids:
        ids = [e.id for e in pool.entries[:4]]
    cols = max(len(ids), 1)
    fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols, 3.4), squeeze=False)
    for ax, eid in zip(axes[0], ids):
        size = None
        for res, style in ((upper, "-"), (shown, "--")):
            if res is None:
                continue
            e = next((x for x in res.entries if x.id == eid), None)
            if e is None:
                continue
            size = e.size
            # The longest few tracks: a background drifting into a named colour makes many short ones.
            for colour, shape, pts in sorted(e.tracks, key=lambda tr: -len(tr[2]))[:max_tracks]:
                p = np.array(pts).reshape(-1, 3)
                rgb = tuple(v / 255 for v in COLORS.get(colour, (0, 0, 0)))
                ax.plot(p[:, 1], p[:, 2], style, color=rgb, marker="o", ms=3, mec="black", mew=0.3,
                        label=f"{res.name}: {colour} {shape or ''}")
        if size and size[0]:
            ax.set_xlim(0, size[1])
            ax.set_ylim(size[0], 0)  # image coordinates: y down
            ax.set_aspect("equal")
        ax.set_title(eid, fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle("object tracks: simulator (solid) vs " + (shown.name if shown else "-") + " (dashed)", fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path


def contact_sheet(rows: list[tuple[str, np.ndarray]], path: Path, *, columns: int = 4, cell: int = 96) -> Path:
    """A grid: one row per (label, uint8 (T, H, W, 3) video), ``columns`` frames spread over its length."""
    from PIL import Image, ImageDraw

    label_w = 150
    sheet = Image.new("RGB", (label_w + columns * (cell + 4), max(len(rows), 1) * (cell + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (label, frames) in enumerate(rows):
        y = i * (cell + 4)
        draw.text((4, y + cell // 2 - 6), label[:24], fill=(0, 0, 0))
        idx = np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int)
        for j, k in enumerate(idx):
            im = Image.fromarray(frames[k])
            im.thumbnail((cell, cell))
            sheet.paste(im, (label_w + j * (cell + 4), y))
    with atomic_path(path) as tmp:
        sheet.save(tmp)
    return path


def write_report(out: str | Path, results: list[BenchResult], *, samples: list[tuple[str, np.ndarray]] | None = None,
                 command: str | None = None, extra: dict | None = None) -> dict[str, Path]:
    """Write bench.json, bench.md, categories.png, metrics.png, trajectories.png (and contact_sheet.png)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": write_json(out / "bench.json", {"command": command, **(extra or {}),
                                                "results": [r.to_dict() for r in _ordered(results)]}),
        "markdown": write_text(out / "bench.md", markdown(results, command=command)),
        "categories": plot_categories(results, out / "categories.png"),
        "metrics": plot_categories(results, out / "metrics.png", key="metric"),
        "trajectories": plot_trajectories(results, out / "trajectories.png"),
    }
    if samples:
        paths["contact_sheet"] = contact_sheet(samples, out / "contact_sheet.png")
    return paths


__all__ = ["markdown", "plot_categories", "plot_trajectories", "contact_sheet", "write_report"]
