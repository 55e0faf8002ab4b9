"""Figures for the noise report: noise.png (every run, joined by init seed; each Δ's CI) and curves.png.

Figures are built on `matplotlib.figure.Figure` directly (Agg canvas) rather than pyplot, so plotting
from a Hydra callback neither needs a display nor changes the backend of the process that calls it.
"""

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D


def _colours(arms: list[str]) -> dict:
    cmap = colormaps["tab10" if len(arms) <= 10 else "tab20"]
    return {a: cmap(i % cmap.N) for i, a in enumerate(arms)}


def plot_noise(summary: dict, runs: list, path: Path) -> None:
    """Left: every run as a point per arm, runs at one init seed joined across arms; right: each Δ's CI."""
    order = summary["order"]
    arms = summary["arms"]
    fig = Figure(figsize=(max(8.0, 1.1 * len(order) + 4), 5.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    x_of = {a: i for i, a in enumerate(order)}
    by_seed, points = defaultdict(list), defaultdict(list)
    for r in runs:
        if r.arm in x_of:
            by_seed[r.seeds[0]].append((x_of[r.arm], r.value))
            points[r.arm == summary["baseline"]].append((x_of[r.arm], r.value))
    lines = [sorted(p) for s, p in by_seed.items() if s is not None and len({x for x, _ in p}) > 1]
    left.add_collection(LineCollection(lines, colors="0.75", linewidths=0.6, zorder=1))  # one call, any size
    for is_base, pts in points.items():
        xy = np.asarray(pts, float)
        left.scatter(xy[:, 0], xy[:, 1], s=16, color="tab:blue" if is_base else "0.3", zorder=3)
    left.autoscale_view()
    left.set_xticks(range(len(order)), order, rotation=30, ha="right")
    left.set_ylabel(f"{summary['metric']} (lower is better)")
    left.set_title("every run; grey lines join runs\nat one init seed across arms", fontsize="medium")
    compared = [a for a in order if a != summary["baseline"]]
    for y, a in enumerate(compared):
        e = arms[a]
        if e.get("ci"):
            right.errorbar([e["delta"]], [y], xerr=[[e["delta"] - e["ci"][0]], [e["ci"][1] - e["delta"]]],
                           fmt="o" if e["n"] > 1 else "none", color="black", capsize=3)
        elif e.get("delta") is not None:
            right.scatter([e["delta"]], [y], marker="x", color="0.5")
        right.annotate(e["verdict"] + (" (tentative)" if e.get("tentative") else ""), (0, y), xytext=(4, 6),
                       textcoords="offset points", fontsize="x-small", color="0.3")
    right.axvline(0, color="tab:blue", lw=1)
    right.set_yticks(range(len(compared)), compared)
    right.set_xlabel("Δ vs baseline: 95% CI of Δ\n(one model, Satterthwaite df; × = not tested)")
    right.set_title("Δ per intervention", fontsize="medium")
    fig.savefig(path, dpi=120)


def plot_curves(curves: list[tuple[str, bool, list[dict]]], order: list[str], baseline: str, path: Path) -> None:
    """Training loss against tokens, zoomed on the last part of training; baseline bold, excluded runs dashed."""
    arms = list(dict.fromkeys(order + [a for a, _, _ in curves]))
    colours = _colours(arms)
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.add_subplot()
    segments: dict = defaultdict(list)
    drawn, axes_used, tails = set(), set(), []
    for arm, included, rows in curves:
        x = "tokens" if rows and all("tokens" in r for r in rows) else "step"
        train = [(r[x], r["train_loss"]) for r in rows if r.get(x) is not None and r.get("train_loss") is not None]
        if len(train) > 1:
            xy = np.asarray(train, float)
            segments[(arm, included)].append(xy)
            tails.append(xy[len(xy) // 2:, 1])
            drawn.add(arm)
            axes_used.add(x)
    for (arm, included), segs in segments.items():
        ax.add_collection(LineCollection(segs, colors=[colours[arm]], linewidths=2.0 if arm == baseline else 0.8,
                                         linestyles="solid" if included else "dashed", alpha=0.8,
                                         zorder=3 if arm == baseline else 2))
    if drawn:
        ax.autoscale_view()
        finite = np.concatenate(tails)
        finite = finite[np.isfinite(finite)]
        xs = np.concatenate([s[:, 0] for segs in segments.values() for s in segs])
        ax.set_xlim(0.5 * xs.max(), xs.max())  # the last half of training, where final differences show
        if len(finite):
            pad = 0.05 * (finite.max() - finite.min() or 1.0)
            ax.set_ylim(finite.min() - pad, finite.max() + pad)
        handles = [Line2D([], [], color=colours[a], lw=2.0 if a == baseline else 0.8) for a in arms if a in drawn]
        handles.append(Line2D([], [], color="0.4", ls="dashed"))
        ax.legend(handles, [a for a in arms if a in drawn] + ["left out of the statistics"], fontsize="small",
                  loc="upper right")
        ax.set_xlabel(" or ".join(sorted(axes_used, reverse=True)) + " (last half of training)")
        ax.set_ylabel("training loss")
    else:
        ax.text(0.5, 0.5, "no metrics.jsonl found beside the results", ha="center", va="center",
                transform=ax.transAxes)
    fig.savefig(path, dpi=120)
