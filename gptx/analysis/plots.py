"""Figures for the noise report: noise.png (every run by seed; each Δ with its CI, coloured by verdict, against
the ±min_effect band) and curves.png (validation and training loss, each arm's mean over seeds with a band).

Figures are built on `matplotlib.figure.Figure` directly (Agg canvas) rather than pyplot, so plotting
from a Hydra callback neither needs a display nor changes the backend of the process that calls it.
"""

import math
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from gptx.analysis.defaults import MIN_EFFECT
from gptx.analysis.runs import seed_key

# A verdict's colour in the Δ panel; anything else (not testable, an adaptive sweep's undecided or futility
# stop) is drawn in NOT_TESTABLE's grey.
VERDICT_COLOURS = {"better": "#1a9850", "worse": "#d73027", "smaller than the minimum effect": "#35978f",
                   "identical to the baseline": "#4575b4", "no detectable effect": "#595959"}
NOT_TESTABLE = "#a6a6a6"
BAND_COLOUR = "0.9"
SYMLOG_SPAN = 10  # effects beyond this many min_effects put the Δ axis on a symlog scale
TRAIN_MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">")  # train seeds in order; an unset one is "o"
CURVE_START = 0.3  # curves.png shows training from this fraction of its length on


def verdict_colour(verdict: str) -> str:
    """The colour a verdict is drawn in (grey for not testable and anything undecided)."""
    return VERDICT_COLOURS.get(verdict, NOT_TESTABLE)


def min_effect_of(summary: dict) -> float:
    """The report's minimum effect (--min-effect), or the default when the summary does not record one."""
    return summary.get("min_effect") or (summary.get("planning") or {}).get("min_effect") or MIN_EFFECT


def _minus(text: str) -> str:
    return text.replace("-", "\u2212")


def _seed_label(seed) -> str:
    return "unset" if seed is None else str(seed)


def _seed_styles(runs: list) -> tuple[dict, dict]:
    """A colour per init seed (tab10; one grey past ten seeds, where colours no longer tell seeds apart) and a
    marker per train seed (an unset train seed is a circle)."""
    inits = sorted({r.seeds[0] for r in runs}, key=seed_key)
    trains = sorted({r.seeds[1] for r in runs} - {None}, key=seed_key)
    cmap = colormaps["tab10"]
    colours = {s: cmap(i) if len(inits) <= cmap.N else "0.35" for i, s in enumerate(inits)}
    markers = {None: "o", **{t: TRAIN_MARKERS[i % len(TRAIN_MARKERS)] for i, t in enumerate(trains)}}
    return colours, markers


def _offsets(runs: list) -> dict:
    """A small horizontal offset per train seed, so runs at one init seed but different train seeds sit apart."""
    trains = sorted({r.seeds[1] for r in runs}, key=lambda t: (t is not None, seed_key(t)))  # unset first
    step = 0.5 / max(len(trains), 1) if len(trains) > 1 else 0.0
    return {t: (i - (len(trains) - 1) / 2) * step for i, t in enumerate(trains)}


def _points(ax, points: list[tuple], ms: float, dense: bool = False) -> None:
    """Points (x, y, colour, marker), one plot call per colour and marker (sweeps of a thousand runs);
    `dense`: smaller and translucent, so a column of many runs still shows where they crowd."""
    groups = defaultdict(list)
    for x, y, colour, marker in points:
        groups[(colour, marker)].append((x, y))
    for (colour, marker), xy in groups.items():
        xy = np.asarray(xy, float)
        ax.plot(xy[:, 0], xy[:, 1], ls="", marker=marker, color=colour, ms=ms * 0.6 if dense else ms,
                alpha=0.5 if dense else 1.0, zorder=3)


def _seed_legend(ax, runs: list, colours: dict, markers: dict) -> bool:
    """A legend of init-seed colours and train-seed markers above the axes (out of the data); False if none."""
    handles, labels = [], []
    if len(colours) <= 10:
        for s, c in colours.items():
            handles.append(Line2D([], [], ls="", marker="o", color=c))
            labels.append(f"init {_seed_label(s)}")
    if len(markers) > 1 or None not in {r.seeds[1] for r in runs}:
        for t, m in markers.items():
            if any(r.seeds[1] == t for r in runs):
                handles.append(Line2D([], [], ls="", marker=m, color="0.3", mfc="none"))
                labels.append(f"train {_seed_label(t)}")
    if handles:
        ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=min(len(handles), 6),
                  fontsize="x-small", frameon=False, handletextpad=0.2, columnspacing=0.8, borderaxespad=0.3)
    return bool(handles)


def _runs_panel(ax, summary: dict, runs: list, min_effect: float) -> None:
    """Every run as a point over its arm, coloured by init seed, marked by train seed; each init seed's
    per-arm means joined across arms; an arm far off the others (`_off_scale`) is drawn at the axis edge
    with its mean written, so it does not flatten the rest."""
    order, base = summary["order"], summary["baseline"]
    x_of = {a: i for i, a in enumerate(order)}
    runs = [r for r in runs if r.arm in x_of]
    colours, markers = _seed_styles(runs)
    offsets = _offsets(runs)
    if base in x_of:
        ax.axvspan(x_of[base] - 0.45, x_of[base] + 0.45, color=BAND_COLOUR, zorder=0, lw=0)
    off = _off_scale(summary, runs, min_effect)
    means = defaultdict(list)
    for r in runs:
        if r.arm not in off:
            means[(r.seeds[0], r.arm)].append(r.value)
    by_seed = defaultdict(list)
    for (s, a), v in means.items():
        by_seed[s].append((x_of[a], float(np.mean(v))))
    joined = [s for s, pts in by_seed.items() if s is not None and len(pts) > 1]
    dense = len(runs) > 20 * len(order)
    ax.add_collection(LineCollection([sorted(by_seed[s]) for s in joined], colors=[colours[s] for s in joined],
                                     linewidths=0.5 if dense else 0.8, alpha=0.15 if dense else 0.5, zorder=1))
    values = [r.value for r in runs if r.arm not in off]
    if off and values:
        lo, hi = min(values), max(values)
        pad = 0.08 * (hi - lo or abs(hi) * 1e-3 or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
    _points(ax, [(x_of[r.arm] + offsets[r.seeds[1]], r.value, colours[r.seeds[0]], markers[r.seeds[1]])
                 for r in runs if r.arm not in off], ms=5, dense=dense)
    for arm, side in off.items():
        edge = 0.97 if side > 0 else 0.03
        ax.plot([x_of[arm]], [edge], ls="", marker="^" if side > 0 else "v", color="0.3", ms=8,
                transform=ax.get_xaxis_transform(), zorder=4)
        ax.annotate(f"off scale:\nmean {summary['arms'][arm]['mean']:.3f}", (x_of[arm], edge),
                    xycoords=("data", "axes fraction"), xytext=(0, -7 if side > 0 else 7),
                    textcoords="offset points", ha="center", va="top" if side > 0 else "bottom",
                    fontsize="x-small", color="0.25")
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
    for label in ax.get_xticklabels():
        if label.get_text() == base:
            label.set_fontweight("bold")
    ax.set_ylabel(f"{summary['metric']} (lower is better)")
    legend = _seed_legend(ax, runs, colours, markers)
    ax.set_title("every run; lines join one init seed's runs across arms; shaded: baseline", fontsize="small",
                 loc="left", pad=22 if legend else 6)


def _far(diffs: dict, floor: float = 0.0) -> dict:
    """Arms whose difference from the reference would flatten every other arm on a shared axis:
    {arm: +1 above, −1 below}. Sorted by size, an arm is far from the first jump of more than 5× over the
    next smaller nonzero difference on, and only beyond `floor`; none if no jump, or the arm is alone."""
    ranked = sorted(diffs, key=lambda a: abs(diffs[a]))
    for prev, a in zip(ranked, ranked[1:]):
        d, p = abs(diffs[a]), abs(diffs[prev])
        if p > 0 and d > 5 * p and d > floor:
            return {b: 1 if diffs[b] > 0 else -1 for b in ranked[ranked.index(a):]}
    return {}


def _off_scale(summary: dict, runs: list, min_effect: float) -> dict:
    """Arms drawn at the runs panel's edge: far (see `_far`) from the baseline's mean, and beyond both
    10 × min_effect and 3 × the spread of the baseline's runs."""
    arms, base = summary["arms"], summary["baseline"]
    if base not in arms or arms[base].get("mean") is None:
        return {}
    b = [r.value for r in runs if r.arm == base]
    diffs = {a: arms[a]["mean"] - arms[base]["mean"] for a in summary["order"]
             if a != base and a in arms and arms[a].get("mean") is not None}
    return _far(diffs, max(SYMLOG_SPAN * min_effect, 3 * (max(b) - min(b)) if b else 0.0))


def _label(e: dict, nd: int) -> str:
    """Δ and its CI as written beside the Δ panel, a tentative verdict marked as the table marks it."""
    if e["verdict"] == "identical to the baseline":
        text = "0 (identical)"
    elif not e.get("ci"):
        text = f"{e['delta']:+.{nd}f} (not tested)"
    else:
        text = f"{e['delta']:+.{nd}f} [{e['ci'][0]:+.{nd}f}, {e['ci'][1]:+.{nd}f}]"
    return _minus(text + (" tentative" if e.get("tentative") else ""))


def _delta_panel(ax, summary: dict, min_effect: float) -> None:
    """Each intervention's Δ with its 95% CI, coloured by verdict, over the shaded ±min_effect band.

    When the effects span more than 10 × min_effect the axis is symlog with its linear part exactly the band
    (linthresh = min_effect): one axis, every arm on it, the band always the same readable width, effects
    inside it drawn linearly and large ones compressed by decades. A second, zoomed panel would draw the
    small arms twice and cut the large ones off; the printed Δ and CI beside each row keep the numbers
    exact where the log part shortens an interval.
    """
    arms, base = summary["arms"], summary["baseline"]
    compared = [a for a in summary["order"] if a != base]
    drawn = [a for a in compared if arms[a].get("delta") is not None]
    missing = [a for a in compared if arms[a].get("delta") is None]
    ends = [v for a in drawn for v in [arms[a]["delta"], *(arms[a].get("ci") or [])]]
    lo, hi = min([-min_effect, *ends]), max([min_effect, *ends])
    symlog = max(-lo, hi) > SYMLOG_SPAN * min_effect
    nd = max(3, 2 - math.floor(math.log10(min_effect)))
    ax.axvspan(-min_effect, min_effect, color=BAND_COLOUR, zorder=0, lw=0)
    ax.axvline(0, color="0.25", lw=0.8, zorder=1)
    seen = {}
    for y, a in enumerate(drawn):
        e = arms[a]
        c = verdict_colour(e["verdict"])
        seen.setdefault(e["verdict"], c)
        if e.get("ci"):  # a bar for Δ leaves even a short CI visible on either side of it
            ax.errorbar([e["delta"]], [y], xerr=[[e["delta"] - e["ci"][0]], [e["ci"][1] - e["delta"]]],
                        fmt="|" if e["n"] > 1 else "none", color=c, ms=14, mew=2.5, capsize=5, lw=2, zorder=3)
        else:
            ax.plot([e["delta"]], [y], ls="", marker="D" if e["verdict"] == "identical to the baseline" else "x",
                    color=c, ms=7, mew=2, zorder=3)
    ax.set_ylim(max(len(drawn), 1) - 0.5, -0.5)  # the table's order: worst at the top (one row when none)
    ax.set_yticks(range(len(drawn)), drawn)
    labels = ax.secondary_yaxis("right")
    labels.set_yticks(range(len(drawn)), [_label(arms[a], nd) for a in drawn], fontsize="small")
    labels.tick_params(length=0)
    for text, a in zip(labels.get_yticklabels(), drawn, strict=True):
        text.set_color(verdict_colour(arms[a]["verdict"]))
    if symlog:
        ax.set_xscale("symlog", linthresh=min_effect, linscale=1.0)
        ax.set_xlim(lo * 1.6, hi * 1.6)  # lo < 0 < hi: half a decade of room on each side
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _minus(f"{v:g}")))
    else:
        pad = 0.08 * (hi - lo)
        ax.set_xlim(lo - pad, hi + pad)
        ax.xaxis.set_major_locator(MaxNLocator(5))  # signed four-decimal ticks need the room
    scale = f"symlog: linear within ±{min_effect:g}, log beyond" if symlog else "linear"
    xlabel = f"Δ vs {base} (95% CI); shaded: ±min_effect {min_effect:g}; x axis {scale}"
    if missing:
        xlabel += "\n" + textwrap.fill("not testable, no Δ: " + ", ".join(missing), 70)
    ax.set_xlabel(xlabel, fontsize="small")
    shown = [v for v in VERDICT_COLOURS if v in seen] + [v for v in seen if v not in VERDICT_COLOURS]
    handles = [Patch(color=seen[v]) for v in shown]
    names = [{"identical to the baseline": "identical", "smaller than the minimum effect": "smaller than min"}
             .get(v, v) for v in shown]
    handles.append(Patch(color=BAND_COLOUR))
    names.append(f"±min_effect {min_effect:g}")
    ax.legend(handles, names, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=3, fontsize="x-small",
              frameon=False, handletextpad=0.2, columnspacing=0.8, borderaxespad=0.3)
    if not drawn:
        ax.text(0.5, 0.5, "no Δ to draw", ha="center", va="center", transform=ax.transAxes, color="0.4")


def _grid_panel(ax, summary: dict, runs: list) -> None:
    """A baseline-only sweep (a noise grid): runs over init seeds, coloured by init seed and marked by train
    seed; short bars at each init seed's mean; dashed lines join one pinned train seed across init seeds
    (parallel lines: the train seed acts the same whatever the initial weights)."""
    colours, markers = _seed_styles(runs)
    offsets = _offsets(runs)
    inits = list(colours)
    x_of = {s: i for i, s in enumerate(inits)}
    by_train = defaultdict(list)
    for r in runs:
        by_train[r.seeds[1]].append((x_of[r.seeds[0]] + offsets[r.seeds[1]], r.value))
    _points(ax, [(x_of[r.seeds[0]] + offsets[r.seeds[1]], r.value, colours[r.seeds[0]], markers[r.seeds[1]])
                 for r in runs], ms=7)
    for t, pts in by_train.items():
        if t is not None and len({round(x) for x, _ in pts}) > 1:
            xy = np.asarray(sorted(pts))
            ax.plot(xy[:, 0], xy[:, 1], color="0.6", lw=0.8, ls="dashed", zorder=1)
    for s in inits:
        v = [r.value for r in runs if r.seeds[0] == s]
        ax.hlines(np.mean(v), x_of[s] - 0.35, x_of[s] + 0.35, color=colours[s], lw=1.5, zorder=2)
    ax.set_xlim(-0.6, len(inits) - 0.4)
    ax.set_xticks(range(len(inits)), [_seed_label(s) for s in inits], rotation=90 if len(inits) > 12 else 0,
                  fontsize="small" if len(inits) > 12 else None)
    ax.set_xlabel("init seed (bar: its mean; dashed lines join one train seed across init seeds)",
                  fontsize="small")
    ax.set_ylabel(f"{summary['metric']} (lower is better)")
    n_train = len({r.seeds[1] for r in runs})
    title = f"{summary['baseline']} only: {len(runs)} runs, {len(inits)} init seeds × {n_train} train seeds"
    noise = summary.get("noise") or {}
    g = noise.get("grid")
    if g:
        title += (f"\nSD from init seed {math.sqrt(max(g['var_init'], 0)):.4f}, train seed "
                  f"{math.sqrt(max(g['var_train'], 0)):.4f}, residual {math.sqrt(max(g['var_residual'], 0)):.4f}"
                  " (two-way ANOVA)")
    else:
        sds = [f"SD across {what} {noise[k]['sd']:.4f}" for k, what in (("init_seed", "init seeds"),
                                                                      ("train_seed", "train seeds"))
               if noise.get(k) and noise[k].get("sd") is not None]
        title += "\n" + ", ".join(sds) if sds else ""
    legend = _seed_legend(ax, runs, colours, markers)
    ax.set_title(title, fontsize="small", loc="left", pad=22 if legend else 6)


def noise_figure(summary: dict, runs: list) -> Figure:
    """noise.png's figure: left, every run by arm and seed; right, each Δ with its 95% CI coloured by verdict
    over the ±min_effect band. A sweep of the baseline alone draws its init × train seed grid instead."""
    runs = [r for r in runs if r.value is not None]
    compared = [a for a in summary["order"] if a != summary["baseline"]]
    if not compared:
        n_inits = len({r.seeds[0] for r in runs})
        fig = Figure(figsize=(max(7.5, 0.25 * n_inits + 3), 5.0), layout="constrained")
        _grid_panel(fig.add_subplot(), summary, runs)
        return fig
    min_effect = min_effect_of(summary)
    n = len(summary["order"])
    fig = Figure(figsize=(max(11.0, 0.5 * n + 9), max(5.0, 0.4 * len(compared) + 2.5)), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[min(max(4, n), 12), 5])
    _runs_panel(left, summary, runs, min_effect)
    _delta_panel(right, summary, min_effect)
    return fig


def plot_noise(summary: dict, runs: list, path: Path) -> None:
    """Write noise.png (see `noise_figure`)."""
    noise_figure(summary, runs).savefig(path, dpi=120)


def _series(rows: list[dict], key: str) -> tuple[str, np.ndarray] | None:
    """A run's (x axis, [[x, value]]) for one logged quantity, x in tokens where every row has them."""
    x = "tokens" if rows and all("tokens" in r for r in rows) else "step"
    pts = [(r[x], r[key]) for r in rows if isinstance(r.get(x), (int, float)) and isinstance(r.get(key), (int, float))]
    pts = [p for p in pts if math.isfinite(p[1])]
    return (x, np.asarray(sorted(pts), float)) if len(pts) > 1 else None


def _mean_band(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, mean, min and max over the runs at each logged x (runs that stopped early count where they ran)."""
    at = defaultdict(list)
    for s in series:
        for x, y in s:
            at[x].append(y)
    xs = np.asarray(sorted(at))
    return (xs, np.array([np.mean(at[x]) for x in xs]), np.array([min(at[x]) for x in xs]),
            np.array([max(at[x]) for x in xs]))


def _tokens(v, _) -> str:
    for unit, name in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= unit:
            return f"{v / unit:g}{name}"
    return f"{v:g}"


def _zoom(bands: dict, baseline: str, x0: float, xmax: float) -> tuple[tuple | None, float, dict]:
    """Where the arms' curves differ: (y limits or None, the x to start at, the far arms {arm: ±1}).

    y runs from the lowest point after x0 to the arms' end values plus 2.5 × their spread there (at least a
    quarter of the window's range; all of it for one arm, which differs from nothing); x starts where
    every band has come down into that range, between 30% and 80% of training. An arm is far (`_far`) when
    its end value is off the rest by more than a fifth of the baseline's own descent over the window, so
    seed noise never counts as far.
    """
    ref = baseline if baseline in bands else next(iter(bands))
    xs, mean = bands[ref][0], bands[ref][1]
    seen = mean[xs >= x0]
    finals = {a: b[1][-1] for a, b in bands.items()}
    far = _far({a: f - finals[ref] for a, f in finals.items() if a != ref},
               0.2 * (seen.max() - seen.min()) if len(seen) else 0.0)
    near = [b for a, b in bands.items() if a not in far]
    window = np.concatenate([np.c_[b[0], b[2], b[3]][b[0] >= x0] for b in near])
    if not len(window):
        return None, x0, far
    end_lo, end_hi = min(b[2][-1] for b in near), max(b[3][-1] for b in near)
    bottom, most = window[:, 1].min(), window[:, 2].max()
    top = most if len(bands) == 1 else min(most, end_hi + max(2.5 * (end_hi - end_lo), 0.25 * (most - bottom)))
    pad = 0.04 * (top - bottom or 1.0)
    over = [b[0][np.flatnonzero(b[3] > top + pad)[-1]] for b in near if (b[3] > top + pad).any()]
    return (bottom - pad, top + pad), max([x0, *(min(x, 0.8 * xmax) for x in over)]), far


def _curve_panel(ax, key: str, curves: list, colours: dict, baseline: str) -> set:
    """One quantity's curves: each arm's mean over its included runs with a min–max band, runs left out of
    the statistics dashed; zoomed where the arms differ (`_zoom`), an arm far from the rest named over the
    panel rather than flattening the others. Returns the arms drawn."""
    included, excluded, axes_used = defaultdict(list), [], set()
    for arm, inc, rows in curves:
        s = _series(rows, key)
        if s is None:
            continue
        axes_used.add(s[0])
        (included[arm].append(s[1]) if inc else excluded.append((arm, s[1])))
    if not included and not excluded:
        ax.text(0.5, 0.5, f"no run logged {key} at 2 or more steps", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return set()
    bands = {arm: _mean_band(series) for arm, series in included.items()}
    for arm, (xs, mean, lo, hi) in bands.items():
        bold = arm == baseline
        ax.plot(xs, mean, color=colours[arm], lw=2.2 if bold else 1.2, zorder=4 if bold else 3)
        if len(included[arm]) > 1:
            ax.fill_between(xs, lo, hi, color=colours[arm], alpha=0.12, lw=0, zorder=2)
    for arm, s in excluded:
        ax.plot(s[:, 0], s[:, 1], color=colours[arm], lw=0.8, ls="dashed", zorder=2)
    xmax = max(s[:, 0].max() for s in [*(x for v in included.values() for x in v), *(s for _, s in excluded)])
    x0 = CURVE_START * xmax
    if bands:  # excluded runs (diverged ones among them) never set the range
        ylim, x0, far = _zoom(bands, baseline, x0, xmax)
        if ylim:
            ax.set_ylim(*ylim)
        if far:
            ax.set_title("off scale: " + ", ".join(f"{a} ({'above' if far[a] > 0 else 'below'}, ends at "
                                                   f"{bands[a][1][-1]:.3f})" for a in far),
                         loc="right", fontsize="x-small", color="0.25")
    ax.set_xlim(x0, xmax)
    if axes_used == {"tokens"}:
        ax.xaxis.set_major_formatter(FuncFormatter(_tokens))
    ax.set_xlabel(" or ".join(sorted(axes_used, reverse=True)) + f" (from {x0 / xmax:.0%} of training on)")
    ax.set_ylabel(key)
    ax.grid(True, color="0.92", lw=0.6)
    return set(included) | {a for a, _ in excluded}


def curves_figure(curves: list[tuple[str, bool, list[dict]]], order: list[str], baseline: str) -> Figure:
    """curves.png's figure: validation loss (eval steps) and training loss, each arm's mean over its seeds
    with a min–max band, zoomed on where the arms differ; runs left out of the statistics dashed; runs whose
    metrics.jsonl is absent or has fewer than 2 points are counted in the title, not drawn."""
    arms = list(dict.fromkeys(order + [a for a, _, _ in curves]))
    cmap = colormaps["tab10" if len(arms) <= 11 else "tab20"]
    colours = {**{a: cmap(i % cmap.N) for i, a in enumerate(a for a in arms if a != baseline)}, baseline: "black"}
    short = sum(0 < len(rows) < 2 for _, _, rows in curves)
    absent = sum(not rows for _, _, rows in curves)
    why = "; ".join(x for x in (f"{short} run(s) with fewer than 2 logged points in metrics.jsonl" if short else "",
                                f"{absent} run(s) without metrics.jsonl (or with an empty one)" if absent else "")
                    if x)
    fig = Figure(figsize=(13, 5), layout="constrained")
    val_ax, train_ax = fig.subplots(1, 2)
    drawn = _curve_panel(val_ax, "val_loss", curves, colours, baseline)
    drawn |= _curve_panel(train_ax, "train_loss", curves, colours, baseline)
    if not drawn:
        fig = Figure(figsize=(9, 2.5), layout="constrained")
        fig.text(0.5, 0.5, textwrap.fill(f"no training curve to draw: of {len(curves)} run(s), "
                                         f"{why or 'none logged a loss at 2 or more steps'}", 90),
                 ha="center", va="center")
        return fig
    handles = [Line2D([], [], color=colours[a], lw=2.2 if a == baseline else 1.2) for a in arms if a in drawn]
    labels = [a for a in arms if a in drawn]
    handles.append(Patch(color="0.5", alpha=0.3))
    labels.append("min–max over seeds")
    if any(not inc and (_series(rows, "val_loss") or _series(rows, "train_loss")) for _, inc, rows in curves):
        handles.append(Line2D([], [], color="0.4", ls="dashed"))
        labels.append("left out of the statistics")
    fig.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False)
    fig.suptitle("each arm's mean over its seeds (baseline black)" + (f"; not drawn: {why}" if why else ""),
                 fontsize="small")
    return fig


def plot_curves(curves: list[tuple[str, bool, list[dict]]], order: list[str], baseline: str, path: Path) -> None:
    """Write curves.png (see `curves_figure`)."""
    curves_figure(curves, order, baseline).savefig(path, dpi=120)
