"""The report's figures, read from their artists (never pixels): the Δ panel's axis, band, verdict colours
and labels; the baseline-only seed grid; the runs panel's seeds; curves' bands, zoom and messages."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle

from gptx.analysis import plots
from gptx.analysis.runs import run_from_result
from gptx.analysis.summary import analyze

# the example: one large effect beside small ones, one of them with a tight CI
EFFECTS = {"weight_tying": (0.30, 0.03, "worse"), "qkv_bias": (-0.002, 0.03, "no detectable effect"),
           "weight_decay": (-0.007, 0.005, "better"), "fp32": (0.0, None, "identical to the baseline"),
           "grad_clip": (-0.004, None, "not testable")}


def run(arm, init_seed, value, train_seed=None):
    result = {"status": "completed", "arm": arm, "init_seed": init_seed, "train_seed": train_seed,
              "test_loss": value}
    return run_from_result(result, Path(f"sim/{arm}/{init_seed}/{train_seed}"), "test_loss")


def summary_of(effects: dict, min_effect: float | None = 0.01) -> tuple[dict, list]:
    """A summary as analyze writes it, reduced to what the figures read, and three runs an arm."""
    arms = {"baseline": {"n": 3, "mean": 3.3, "verdict": "baseline", "delta": None, "ci": None}}
    for a, (delta, half, verdict) in effects.items():
        arms[a] = {"n": 3, "mean": 3.3 + (delta or 0.0), "verdict": verdict, "delta": delta, "tentative": False,
                   "ci": [delta - half, delta + half] if half is not None else None}
    order = sorted(arms, key=lambda a: (-arms[a]["mean"], a))
    runs = [run(a, s, e["mean"] + 0.01 * (s - 2)) for a, e in arms.items() if e["mean"] is not None
            for s in (1, 2, 3)]
    planning = {"min_effect": min_effect} if min_effect else None
    return {"metric": "test_loss", "baseline": "baseline", "order": order, "arms": arms, "planning": planning,
            "noise": None}, runs


def delta_axes(fig):
    runs_ax, delta_ax = fig.axes[:2]
    return delta_ax


def rows(ax) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


def test_delta_axis_is_symlog_with_the_band_as_its_linear_part_when_effects_span_far():
    s, runs = summary_of(EFFECTS, min_effect=0.02)
    ax = delta_axes(plots.noise_figure(s, runs))
    assert ax.get_xscale() == "symlog"
    assert ax.xaxis.get_transform().linthresh == 0.02  # the report's min_effect, read from the summary
    band = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_facecolor() == to_rgba(plots.BAND_COLOUR)]
    assert len(band) == 1 and band[0].get_x() == pytest.approx(-0.02) and band[0].get_width() == pytest.approx(0.04)
    assert [line.get_xdata()[0] for line in ax.lines if list(line.get_xdata()) == [0, 0]] == [0]  # the zero line
    lo, hi = ax.get_xlim()
    assert lo < -0.02 and hi > 0.33  # every CI in view, the smallest in the linear part


def test_delta_axis_stays_linear_for_small_effects_and_default_min_effect():
    s, runs = summary_of({"qkv_bias": (-0.002, 0.004, "no detectable effect"),
                          "weight_decay": (-0.007, 0.005, "better")}, min_effect=None)
    ax = delta_axes(plots.noise_figure(s, runs))
    assert ax.get_xscale() == "linear"
    band = next(p for p in ax.patches if p.get_facecolor() == to_rgba(plots.BAND_COLOUR))
    assert band.get_x() == pytest.approx(-0.01)  # the default minimum effect


def test_colours_map_to_verdicts_and_labels_give_delta_and_ci():
    s, runs = summary_of(EFFECTS)
    fig = plots.noise_figure(s, runs)
    ax = delta_axes(fig)
    drawn = rows(ax)
    assert drawn == [a for a in s["order"] if a != "baseline"]  # worst at the top, as in the table
    bars = {drawn[round(c.lines[0].get_ydata()[0])]: c for c in ax.containers}
    assert set(bars) == {"weight_tying", "qkv_bias", "weight_decay"}  # arms with a CI
    for arm, c in bars.items():
        assert tuple(c.lines[2][0].get_colors()[0]) == to_rgba(plots.verdict_colour(s["arms"][arm]["verdict"]))
    assert plots.verdict_colour("better") != plots.verdict_colour("worse") != plots.verdict_colour("identical")
    labels = {a: t for a, t in zip(drawn, ax.child_axes[0].get_yticklabels(), strict=True)}
    assert labels["weight_decay"].get_text() == "\u22120.0070 [\u22120.0120, \u22120.0020]"
    assert labels["weight_decay"].get_color() == plots.verdict_colour("better")
    assert labels["fp32"].get_text() == "0 (identical)"
    assert labels["grad_clip"].get_text() == "\u22120.0040 (not tested)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["better", "worse", "identical", "no detectable effect", "not testable", "±min_effect 0.01"]
    fig.draw_without_rendering()
    assert ax.get_legend().get_window_extent().y0 >= ax.get_window_extent().y1  # above the data, not on it


def test_an_arm_without_a_delta_is_listed_not_drawn():
    s, runs = summary_of({**EFFECTS, "new_data": (None, None, "not testable")})
    ax = delta_axes(plots.noise_figure(s, runs))
    assert "new_data" not in rows(ax)
    assert "not testable, no Δ: new_data" in ax.get_xlabel()


def test_a_baseline_only_sweep_draws_its_seed_grid():
    runs = [run("baseline", i, 3.3 + 0.01 * i / 22 + 0.001 * (t or 0) / 23, t)
            for i in (22, 42, 67) for t in (None, 23, 67)]
    s = analyze(runs)
    fig = plots.noise_figure(s, runs)
    assert len(fig.axes) == 1  # no empty Δ box
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["22", "42", "67"]
    points = [line for line in ax.lines if line.get_linestyle() == "None"]
    assert {line.get_marker() for line in points} == {"o", "s", "^"}  # unset train seed, 23, 67
    colour_of_x = {}
    for line in points:
        for x in line.get_xdata():
            colour_of_x.setdefault(round(x), set()).add(line.get_color())
    assert all(len(c) == 1 for c in colour_of_x.values()) and len({c.pop() for c in colour_of_x.values()}) == 3
    assert sum(len(line.get_xdata()) for line in points) == 9
    assert "3 init seeds × 3 train seeds" in ax.get_title(loc="left")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["init 22", "init 42", "init 67", "train unset", "train 23", "train 67"]


def test_runs_panel_colours_by_init_seed_marks_the_baseline_and_keeps_a_far_arm_off_scale():
    s, runs = summary_of(EFFECTS)
    runs_ax = plots.noise_figure(s, runs).axes[0]
    points = [line for line in runs_ax.lines if line.get_linestyle() == "None" and line.get_marker() == "o"]
    assert len({line.get_color() for line in points}) == 3  # one colour an init seed
    assert next(t for t in runs_ax.get_xticklabels() if t.get_text() == "baseline").get_fontweight() == "bold"
    assert runs_ax.get_ylim()[1] < s["arms"]["weight_tying"]["mean"]  # drawn at the edge, its mean written
    assert any("off scale" in t.get_text() and "3.600" in t.get_text() for t in runs_ax.texts)


def curve(final: float, n: int = 40, val_every: int = 4) -> list[dict]:
    return [{"step": k, "tokens": 1000 * k, "train_loss": final + 5 / k,
             **({"val_loss": final + 0.01 + 5 / k} if k % val_every == 0 else {})} for k in range(1, n + 1)]


def test_curves_draw_each_arm_as_a_mean_with_a_band_zoomed_where_arms_differ():
    curves = [("baseline", True, curve(3.30)), ("baseline", True, curve(3.32)), ("lr", True, curve(3.28)),
              ("lr", True, curve(3.29)), ("tied", True, curve(3.60)), ("tied", False, curve(9.0))]
    fig = plots.curves_figure(curves, ["tied", "baseline", "lr"], "baseline")
    val_ax, train_ax = fig.axes[:2]
    assert val_ax.get_ylabel() == "val_loss" and train_ax.get_ylabel() == "train_loss"
    base = next(line for line in train_ax.lines if line.get_color() == "black")
    assert base.get_ydata()[-1] == pytest.approx(3.31 + 5 / 40)  # the mean over the baseline's two runs
    assert len(train_ax.collections) == 2  # a min–max band for each arm with two or more included runs
    lo, hi = train_ax.get_ylim()
    assert lo < 3.28 + 5 / 40 and hi < 3.60  # cropped to the near arms; `tied` named off scale
    assert "tied (above" in train_ax.get_title(loc="right")
    assert train_ax.get_xlim()[0] >= 0.3 * 40_000
    legend = fig.legends[0]
    fig.draw_without_rendering()  # lays the figure out
    assert not any(legend.get_window_extent().overlaps(a.get_window_extent()) for a in fig.axes)
    assert [t.get_text() for t in legend.get_texts()][-1] == "left out of the statistics"


def test_a_metrics_file_with_one_point_is_skipped_with_that_reason():
    one = [{"step": 100, "tokens": 100, "train_loss": 3.0, "val_loss": 3.1}]
    fig = plots.curves_figure([("baseline", True, one), ("a", True, one), ("b", True, [])], ["baseline"], "baseline")
    text = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "2 run(s) with fewer than 2 logged points in metrics.jsonl" in text
    assert "1 run(s) without metrics.jsonl (or with an empty one)" in text
    fig = plots.curves_figure([("baseline", True, curve(3.3)), ("a", True, one)], ["baseline", "a"], "baseline")
    assert "not drawn: 1 run(s) with fewer than 2 logged points in metrics.jsonl" in fig.get_suptitle()


def test_figures_are_written_as_png(tmp_path):
    s, runs = summary_of(EFFECTS)
    plots.plot_noise(s, runs, tmp_path / "noise.png")
    plots.plot_curves([("baseline", True, curve(3.3)), ("a", True, curve(3.2, val_every=40))], s["order"],
                      "baseline", tmp_path / "curves.png")
    assert (tmp_path / "noise.png").read_bytes()[:4] == (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert np.isfinite(plots.min_effect_of({"planning": None}))


def test_far_arms_need_a_jump_over_the_rest_and_the_noise_floor():
    diffs = {"fp32": 0.0, "grad_clip": -0.001, "qkv_bias": -0.002, "no_dropout": -0.03, "weight_tying": 0.30}
    assert plots._far(diffs, floor=0.1) == {"weight_tying": 1}
    assert plots._far({"a": 0.001, "b": 0.02}, floor=0.1) == {}  # a 20× jump, but within the noise floor
    assert plots._far({"a": 0.30}) == {}  # an arm alone is never off the scale of nothing
    curves = [("baseline", True, curve(3.30)), ("a", True, curve(3.301)), ("b", True, curve(3.32))]
    val_ax = plots.curves_figure(curves, ["b", "a", "baseline"], "baseline").axes[0]
    assert val_ax.get_title(loc="right") == "" and val_ax.get_ylim()[1] > 3.32 + 0.01  # every arm in view


def test_the_band_is_the_users_min_effect_even_without_planning():
    """--min-effect reaches the figure through the summary itself, not only through the planning section."""
    import numpy as np

    from gptx.analysis import plots, simulate
    from gptx.analysis.summary import analyze

    runs = simulate.sweep(simulate.paired_fixed(2, 3), np.random.default_rng(0))
    summary = analyze(runs, min_effect=0.02, detail=False)  # detail=False: no planning section
    assert summary["planning"] is None and plots.min_effect_of(summary) == 0.02


def test_a_sweep_with_no_delta_to_draw_warns_nothing(tmp_path):
    """Every arm untested and without an estimate: the Δ panel lists them, and matplotlib has nothing to say."""
    import warnings

    import numpy as np

    from gptx.analysis import plots, simulate
    from gptx.analysis.summary import analyze

    runs = simulate.sweep([("baseline", 1, None), ("grad_clip", 2, None)], np.random.default_rng(0))
    summary = analyze(runs)
    summary["arms"]["grad_clip"]["delta"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.plot_noise(summary, runs, tmp_path / "noise.png")
    assert (tmp_path / "noise.png").stat().st_size > 0
