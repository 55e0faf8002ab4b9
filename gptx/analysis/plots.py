"""Figures for the noise report: noise.png (runs against baseline noise bands) and curves.png (loss curves).

Figures are built on `matplotlib.figure.Figure` directly (Agg canvas) rather than pyplot, so plotting
from a Hydra callback neither needs a display nor changes the backend of the process that calls it.
"""

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D


def _colours(arms: list[str]) -> dict:
    cmap = colormaps["tab10" if len(arms) <= 10 else "tab20"]
    return {a: cmap(i % cmap.N) for i, a in enumerate(arms)}


def noise_yardstick(summary: dict) -> tuple[str, float | None]:
    """The noise drawn as bands: total (init-seed) noise when measured, else the best estimate there is."""
    noise = summary.get("noise") or {}
    for key in ("init_seed", "init_seed_train_pinned", "train_seed"):
        if noise.get(key) and noise[key]["sd"]:
            return f"{key} noise", noise[key]["sd"]
    base = summary["arms"].get(summary["baseline"])
    return "baseline SD", (base or {}).get("sd")


def plot_noise(summary: dict, values: dict[str, list[float]], path: Path) -> None:
    """Each arm's runs as points with mean and 95% CI, over the baseline mean's ±1/2/3σ noise bands."""
    order = summary["order"]
    fig = Figure(figsize=(max(6.0, 0.9 * len(order) + 2), 4.8), layout="constrained")
    ax = fig.add_subplot()
    base = summary["arms"].get(summary["baseline"])
    label, sd = noise_yardstick(summary)
    if base and sd:
        for k, alpha in ((3, 0.08), (2, 0.12), (1, 0.18)):
            ax.axhspan(
                base["mean"] - k * sd,
                base["mean"] + k * sd,
                color="tab:blue",
                alpha=alpha,
                lw=0,
                label=f"baseline ±{k}σ ({label}, σ = {sd:.4g})" if k == 1 else f"±{k}σ",
            )
        ax.axhline(base["mean"], color="tab:blue", lw=1)
    for x, arm in enumerate(order):
        v = np.asarray(values.get(arm, []), float)
        jitter = np.linspace(-0.15, 0.15, len(v)) if len(v) > 1 else np.zeros(len(v))
        ax.scatter(x + jitter, v, s=14, color="0.35", zorder=3)
        e = summary["arms"][arm]
        lo, hi = e["ci"] if e["ci"] else (e["mean"], e["mean"])
        ax.errorbar(
            [x + 0.3],
            [e["mean"]],
            yerr=[[e["mean"] - lo], [hi - e["mean"]]],
            fmt="o",
            color="black",
            capsize=3,
            zorder=4,
        )
    ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
    ax.set_ylabel(f"{summary['metric']} (lower is better)")
    ax.set_title("Runs per arm (grey), mean with 95% CI (black), baseline noise bands")
    if base and sd:
        ax.legend(loc="best", fontsize="small")
    fig.savefig(path, dpi=120)


def plot_curves(curves: list[tuple[str, list[dict]]], order: list[str], path: Path) -> None:
    """Training loss (lines) and validation loss (dots) against tokens for every run, coloured by arm."""
    arms = list(dict.fromkeys(order + [a for a, _ in curves]))
    colours = _colours(arms)
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    segments: dict = {a: [] for a in arms}
    drawn, axes_used = set(), set()
    for arm, rows in curves:
        x = "tokens" if rows and all("tokens" in r for r in rows) else "step"
        train = [
            (r[x], r["train_loss"]) for r in rows if r.get(x) is not None and r.get("train_loss") is not None
        ]
        val = [(r[x], r["val_loss"]) for r in rows if r.get(x) is not None and r.get("val_loss") is not None]
        if len(train) > 1:
            segments[arm].append(np.asarray(train, float))
        if val:
            v = np.asarray(val, float)
            ax.scatter(v[:, 0], v[:, 1], s=8, color=colours[arm], zorder=3)
        if train or val:
            drawn.add(arm)
            axes_used.add(x)
    for arm, segs in segments.items():
        if segs:  # one collection an arm: hundreds of runs draw in one call each
            ax.add_collection(LineCollection(segs, colors=[colours[arm]], linewidths=0.8, alpha=0.6))
    if drawn:
        ax.autoscale_view()
        ax.legend(
            [Line2D([], [], color=colours[a]) for a in arms if a in drawn],
            [a for a in arms if a in drawn],
            fontsize="small",
            loc="upper right",
        )
        ax.set_xlabel(" or ".join(sorted(axes_used, reverse=True)))
        ax.set_ylabel("loss (lines: train, dots: validation)")
    else:
        ax.text(
            0.5,
            0.5,
            "no metrics.jsonl found beside the results",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    fig.savefig(path, dpi=120)
