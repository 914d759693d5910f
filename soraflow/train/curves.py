"""Loss curves from the trainers' TensorBoard logs: read the scalars (every event file of a run, so a
resumed run reads as one), plot them with a running mean; and a long run's bench snapshots against
its step."""

from __future__ import annotations

from pathlib import Path


def read_scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    if not logdir.is_dir():
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted(logdir.rglob("events.out.tfevents.*")):  # one file per resume
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            points.update({e.step: e.value for e in acc.Scalars(tag)})
    return sorted(points.items())


def plot_curve(points: list[tuple[int, float]], path: Path, *, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps, values = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, values, lw=0.8, alpha=0.4, label="logged", marker="o" if len(values) <= 50 else None, ms=3)
    if len(values) >= 10:
        k = max(len(values) // 50, 5)
        ax.plot(steps[k - 1:], np.convolve(values, np.ones(k) / k, mode="valid"), lw=1.6, label=f"mean of {k}")
    ax.set(xlabel="step", ylabel="loss", yscale="log")
    ax.legend(fontsize=8)
    return _finish(fig, ax, title, path)


def _finish(fig, ax, title: str, path: Path) -> Path:
    """Title, grid, layout; the PNG written atomically."""
    import matplotlib.pyplot as plt

    from soraflow.atomic import atomic_path

    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


BENCH_METRICS = ("score", "color", "shape", "count", "direction", "gravity", "permanence")


def read_snapshot_benches(snapshots: Path, source: str = "model") -> list[tuple[int, dict[str, float]]]:
    """(step, the bench's overall metrics of ``source``) of every snapshot folder SNAPSHOTS/STEP/bench
    (a long run's progress on the bench); folders without a readable bench.json are left out."""
    import json

    out = []
    for folder in sorted(snapshots.glob("*")) if snapshots.is_dir() else []:
        try:
            step = int(folder.name)
            results = json.loads((folder / "bench" / "bench.json").read_text())["results"]
        except (ValueError, OSError, KeyError, TypeError):
            continue
        for row in results if isinstance(results, list) else []:
            if isinstance(row, dict) and row.get("name") == source and isinstance(row.get("overall"), dict):
                out.append((step, {k: float(v) for k, v in row["overall"].items() if isinstance(v, (int, float))}))
    return out


def plot_benches(points: list[tuple[int, dict[str, float]]], path: Path, *, title: str,
                 metrics: tuple[str, ...] = BENCH_METRICS) -> Path:
    """The bench's accuracies against the training step, one line per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    steps = [p[0] for p in points]
    for name in metrics:
        values = [p[1].get(name) for p in points]
        if any(v is not None for v in values):
            ax.plot(steps, [float("nan") if v is None else v for v in values], marker="o", ms=3,
                    lw=2.0 if name == "score" else 1.0, label=name)
    ax.set(xlabel="step", ylabel="bench accuracy", ylim=(0, 1))
    ax.legend(fontsize=7, ncol=2)
    return _finish(fig, ax, title, path)


__all__ = ["plot_benches", "plot_curve", "read_scalars", "read_snapshot_benches"]
