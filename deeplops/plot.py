"""Pictures of episodes: a timeline per policy with a health strip, faults, repairs and the SLO."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from deeplops import outputs
from deeplops.trace import TraceRecorder

_HEALTH = ListedColormap(["#d9534f", "#5cb85c"])  # unhealthy, healthy


def plot_timeline(runs: Sequence[tuple[str, TraceRecorder]], path: Path, title: str) -> None:
    """Write a PNG with, per run, the SLO over time above a per-service health strip.

    Faults are marked ✕ where they were injected, repairs ▲ (filled when the repair ended a fault).
    """
    fig, axes = plt.subplots(
        2 * len(runs), 1, figsize=(12, 1.0 + 2.4 * len(runs)), squeeze=False,
        gridspec_kw={"height_ratios": [1, 4] * len(runs)}, sharex=True,
    )  # fmt: skip
    for k, (label, trace) in enumerate(runs):
        slo_ax, ax = axes[2 * k, 0], axes[2 * k + 1, 0]
        services = trace.header["services"]
        ticks = np.array([row["tick"] for row in trace.rows])
        slo = np.array([row["slo"] for row in trace.rows], dtype=float)
        slo_ax.step(ticks, slo, where="post", color="#337ab7")
        slo_ax.fill_between(ticks, slo, step="post", alpha=0.2, color="#337ab7")
        slo_ax.set_ylim(-0.1, 1.1)
        slo_ax.set_yticks([0, 1], ["fail", "ok"])
        slo_ax.set_ylabel("SLO", rotation=0, ha="right", va="center")
        slo_ax.set_title(f"{label}: availability {slo.mean():.3f}", loc="left", fontsize=10, parse_math=False)
        health = np.array([[row["health"][s] for row in trace.rows] for s in services], dtype=float)
        ax.imshow(health, aspect="auto", cmap=_HEALTH, vmin=0, vmax=1, interpolation="nearest",
                  extent=(ticks[0] - 0.5, ticks[-1] + 0.5, len(services) - 0.5, -0.5))  # fmt: skip
        ax.set_yticks(range(len(services)), services)
        row_of = {s: i for i, s in enumerate(services)}
        for row in trace.rows:
            for f in row["faults"]:
                ax.scatter(row["tick"], row_of[f["target"]], marker="X", s=90, color="black", zorder=3)
                ax.annotate(f["fault"], (row["tick"], row_of[f["target"]]), xytext=(4, -8),
                            textcoords="offset points", fontsize=7)  # fmt: skip
            for r in row["repairs"]:
                ax.scatter(row["tick"], row_of[r["target"]], marker="^", s=50, zorder=3,
                           facecolors="white" if not r["cleared"] else "#f0ad4e", edgecolors="black")  # fmt: skip
                if r["cleared"]:
                    ax.annotate(r["repair"], (row["tick"], row_of[r["target"]]), xytext=(4, 4),
                                textcoords="offset points", fontsize=7)  # fmt: skip
    axes[-1, 0].set_xlabel("tick (s)")
    fig.suptitle(title, parse_math=False)
    fig.tight_layout()
    save_figure(fig, path, "--plot")


def save_figure(fig: Figure, path: Path, option: str) -> Path:
    """Render ``fig`` (in the format its suffix names; PNG into a device or pipe) and write it whole."""
    suffix = path.suffix.lower()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format=suffix[1:] if suffix in outputs.PICTURE_SUFFIXES else "png")
    plt.close(fig)
    outputs.write_bytes(path, buffer.getvalue(), option)
    return path
