"""Adaptive seed sweeps (gptx.analysis.sequential): the plan, the replay of its waves, and its error rates.

The procedure is proven the way every verdict of the report is: by simulation under the null (family-wise
false claims ≤ α) and under a known effect (power at least the fixed design's at the same expected cost).
"""

import math
from pathlib import Path

import numpy as np
import pytest

from gptx.analysis import simulate
from gptx.analysis.runs import run_from_result
from gptx.analysis.sequential import BUDGET, OPEN, SMALLER, Arm, Plan, _efficacy, replay, with_sequential_verdicts
from gptx.analysis.summary import analyze

ARMS = ("grad_clip", "no_dropout", "qkv_bias", "lr_schedule")


def _plan(**kw) -> Plan:
    base = dict(arms=ARMS, seeds=tuple(range(1, 10)), first_wave=3, wave_size=3, spending="pocock")
    return Plan(**{**base, **kw})


def _run(arm: str, init: int, loss: float, k: int, weights: str | None = None, status: str = "completed",
         wall: float = 3600.0):
    result = {"status": status, "arm": arm, "intervention": [arm], "init_seed": init, "train_seed": None,
              "data_seed": None, "replica": 0, "test_loss": loss if status == "completed" else None,
              "final_weights_sha256": weights or f"w-{arm}-{init}-{k}", "init_weights_sha256": f"init-{init}",
              "wall_seconds": wall, "world_size": 1}
    return run_from_result(result, Path(f"sim/{k}"), "test_loss")


def _runs(cells, effects: dict, noise: dict, identical=()) -> list:
    """Runs for (arm, seed) cells: 3.7 + effect + noise[seed] + a tiny per-run wobble; `identical` arms
    copy the baseline's loss and weights at every seed."""
    out = []
    for k, (arm, s) in enumerate(cells):
        if arm in identical:
            out.append(_run(arm, s, 3.7 + noise[s], k, weights=f"w-baseline-{s}"))
        else:
            wobble = 1e-4 * math.sin(7 * k + s) if arm != "baseline" else 0.0
            out.append(_run(arm, s, 3.7 + effects.get(arm, 0.0) + noise[s] + wobble, k,
                            weights=f"w-baseline-{s}" if arm == "baseline" else None))
    return out


def _drive(plan: Plan, effects: dict, identical=(), seed: int = 0):
    """Run the sweep the way the sweeper does: replay, 'launch' the next cells, replay again."""
    noise = dict(zip(plan.seeds, np.random.default_rng(seed).normal(0, 0.0155, len(plan.seeds))))
    runs, waves = [], []
    while True:
        rep = replay(runs, plan)
        if rep.next_cells is None:
            return rep, runs, waves
        waves.append(list(rep.next_cells))
        runs += _runs(rep.next_cells, effects, noise, identical)


# --- the plan ---------------------------------------------------------------------------------------

def test_waves_add_wave_size_seeds_up_to_the_most_an_arm_may_get():
    assert _plan().waves() == [3, 6, 9]
    assert _plan(seeds=tuple(range(1, 11)), wave_size=4).waves() == [3, 7, 10]
    assert _plan(seeds=(1, 2, 3), first_wave=3).waves() == [3]


@pytest.mark.parametrize("spending", ["pocock", "obrien_fleming"])
def test_spending_starts_at_zero_grows_and_ends_at_the_share(spending):
    p = _plan(spending=spending)
    ts = np.linspace(0, 1, 11)
    spent = [p.spent(t, 0.0125) for t in ts]
    assert spent[0] == 0 and spent[-1] == pytest.approx(0.0125, rel=1e-12)
    assert all(b > a for a, b in zip(spent, spent[1:]))
    levels = [p.spent(b, 0.0125) - p.spent(a, 0.0125) for a, b in zip([0, 1 / 3, 2 / 3], [1 / 3, 2 / 3, 1])]
    assert sum(levels) == pytest.approx(0.0125, rel=1e-12)


def test_obrien_fleming_spends_almost_nothing_early_pocock_much_more():
    of, po = _plan(spending="obrien_fleming"), _plan(spending="pocock")
    assert of.spent(1 / 3, 0.05) < 0.001 < 0.02 < po.spent(1 / 3, 0.05)


@pytest.mark.parametrize("bad, message", [
    (dict(arms=()), "no intervention arm"),
    (dict(arms=("baseline", "grad_clip")), "is listed among the interventions"),
    (dict(seeds=(1, 2, 2)), "init seeds repeat"),
    (dict(first_wave=1), "first_wave must be 2..9"),
    (dict(first_wave=10), "first_wave must be 2..9"),
    (dict(wave_size=0), "wave_size must be at least 1"),
    (dict(alpha=1.5), "alpha must be in (0, 1)"),
    (dict(min_effect=0), "min_effect must be positive"),
    (dict(spending="linear"), "spending must be one of obrien_fleming, pocock"),
    (dict(max_runs=0), "max_runs must be positive"),
    (dict(max_gpu_hours=-1.0), "max_gpu_hours must be positive"),
])
def test_a_bad_plan_is_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        _plan(**bad)


def test_the_plan_survives_its_json():
    p = _plan(max_runs=40, max_gpu_hours=2.5)
    assert Plan.from_json(p.to_json()) == p


# --- the replay -------------------------------------------------------------------------------------

def test_the_first_wave_is_every_arm_at_the_first_seeds():
    rep = replay([], _plan())
    assert rep.stopped is None and rep.waves_done == 0
    assert sorted(rep.next_cells) == sorted((a, s) for a in ("baseline", *ARMS) for s in (1, 2, 3))


def test_clear_effects_stop_at_wave_one_and_nothing_runs_after():
    rep, runs, waves = _drive(_plan(), {a: -0.05 for a in ARMS})
    assert len(waves) == 1 and rep.runs_used == len(runs) == 15
    assert rep.stopped == "every arm decided"
    assert all(a.status == "better" and a.wave == 1 and a.seeds == 3 for a in rep.arms.values())


def test_an_identical_arm_stops_at_once_and_a_null_arm_ends_small_or_undetected():
    rep, runs, waves = _drive(_plan(), {"no_dropout": -0.05, "lr_schedule": 0.05}, identical=("grad_clip",))
    arms = rep.arms
    assert arms["grad_clip"].status == "identical to the baseline" and arms["grad_clip"].wave == 1
    assert arms["no_dropout"].status == "better" and arms["lr_schedule"].status == "worse"
    # qkv_bias has Δ = 0 and a tiny wobble: its CI shrinks inside ±0.01 once it has enough seeds
    assert arms["qkv_bias"].status == SMALLER
    assert arms["qkv_bias"].looks[-1]["ci"][0] > -0.01 and arms["qkv_bias"].looks[-1]["ci"][1] < 0.01
    # the later waves hold the baseline and the arms still open, at the next seeds only
    for wave in waves[1:]:
        assert {a for a, _ in wave} <= {"baseline", "qkv_bias"}
        assert {s for _, s in wave} & {1, 2, 3} == set()


def test_an_arm_that_never_crosses_ends_with_no_detectable_effect():
    # a noisy null arm: large per-run noise keeps its CI wide through all the seeds
    plan = _plan(arms=("qkv_bias",), min_effect=0.001)
    rng = np.random.default_rng(4)
    runs = []
    while (rep := replay(runs, plan)).next_cells is not None:
        runs += [_run(a, s, 3.7 + rng.normal(0, 0.02), len(runs) + i) for i, (a, s) in enumerate(rep.next_cells)]
    arm = rep.arms["qkv_bias"]
    assert arm.status == "no detectable effect" and arm.seeds == 9 and rep.stopped == "all 9 seeds run"
    assert "never crossed its boundary" in arm.why


def test_the_replay_is_a_pure_function_of_the_runs():
    _, runs, _ = _drive(_plan(), {"no_dropout": -0.05}, identical=("grad_clip",))
    a, b = replay(runs, _plan()), replay(list(reversed(runs)), _plan())
    assert a.to_json() == b.to_json()


def test_runs_beyond_the_plan_and_unfinished_runs_wait():
    plan = _plan()
    cells = replay([], plan).next_cells
    runs = _runs(cells[:-1], {}, {s: 0.0 for s in plan.seeds})
    runs.append(_run(*cells[-1], 3.7, 999, status="running"))
    runs.append(_run("qkv_bias", 77, 3.0, 1000))  # a seed the plan never named
    rep = replay(runs, plan)
    assert rep.next_cells == [cells[-1]] and rep.waves_done == 0


def test_a_failed_run_counts_as_run_and_is_not_launched_again():
    plan = _plan(arms=("qkv_bias",))
    cells = replay([], plan).next_cells
    runs = _runs(cells[:-1], {}, {s: 0.0 for s in plan.seeds}) + [_run(*cells[-1], 0.0, 99, status="failed")]
    rep = replay(runs, plan)
    assert rep.waves_done == 1 and cells[-1] not in (rep.next_cells or [])


def test_max_runs_stops_before_a_wave_that_would_pass_it():
    rep, runs, waves = _drive(_plan(max_runs=20, min_effect=1e-5), {}, seed=1)
    assert rep.runs_used <= 20 and len(runs) <= 20
    assert rep.stopped.startswith("budget: max_runs 20")
    assert any(a.status == BUDGET for a in rep.arms.values())
    assert all(a.status != OPEN for a in rep.arms.values())


def test_max_gpu_hours_uses_the_hours_runs_took():
    rep, runs, _ = _drive(_plan(max_gpu_hours=16.0, min_effect=1e-5), {}, seed=1)  # each run took one hour
    assert sum(r.result["wall_seconds"] for r in runs) / 3600 <= 16.0
    assert rep.gpu_hours == pytest.approx(15.0) and rep.stopped.startswith("budget: max_gpu_hours 16")


def test_holm_recycling_reads_past_looks_again_with_the_larger_share():
    """Two open arms: A's p clears α/2's boundary, B's only clears α/1's. After A is rejected, B's past
    look is read again with the whole α and is rejected too (a closed test: Maurer & Bretz 2013)."""
    plan = _plan(arms=("a", "b"), alpha=0.05)
    level_half = plan.spent(1 / 3, 0.025)
    level_full = plan.spent(1 / 3, 0.05)
    arms = {n: Arm() for n in ("a", "b")}
    for name, p in (("a", level_half / 2), ("b", (level_half + level_full) / 2)):
        arms[name].looks.append({"wave": 1, "seeds": 3, "t": 1 / 3, "t_before": 0.0, "delta": -0.02, "ci": None,
                                 "p": p, "verdict": "better", "why_not_testable": None})
    _efficacy(plan, arms, 1)
    assert arms["a"].status == "better" and "α/2" in arms["a"].why
    assert arms["b"].status == "better" and "α/1" in arms["b"].why
    arms_b_alone = {"b": Arm(looks=list(arms["b"].looks))}
    _efficacy(_plan(arms=("a", "b")), {"a": Arm(looks=[{**arms["a"].looks[0], "p": 0.9}]), **arms_b_alone}, 1)
    assert arms_b_alone["b"].status == OPEN  # without A's rejection B only has α/2, and does not cross


def test_the_report_takes_the_sequential_verdicts_and_keeps_the_fixed_one_as_nominal():
    rep, runs, _ = _drive(_plan(), {"no_dropout": -0.05}, identical=("grad_clip",))
    summary = with_sequential_verdicts(analyze(runs, detail=False), rep)
    for name, arm in rep.arms.items():
        row = summary["arms"][name]
        assert row["verdict"] == arm.status and "verdict_fixed_design" in row
    assert summary["adaptive"]["stopped"] == rep.stopped


# --- error rates, by simulation ---------------------------------------------------------------------

def _bound(n: int, alpha: float = 0.05) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / n)


@pytest.mark.slow
@pytest.mark.parametrize("spending", ["pocock", "obrien_fleming"])
def test_family_wise_false_claims_at_most_alpha_under_the_null(spending):
    r = simulate.calibrate_adaptive(_plan(spending=spending), 300, seed=21)
    assert r["fwer"] <= _bound(300)


def test_adaptive_power_is_at_least_the_fixed_designs_at_the_same_expected_runs():
    """At Δ = −0.012 on every arm the adaptive sweep (the sweeper's default O'Brien-Fleming spending) stops
    early; a fixed paired design given the same number of runs (rounded up to whole seeds) finds no more."""
    adaptive = simulate.calibrate_adaptive(_plan(spending="obrien_fleming"), 80, seed=5, effect=-0.012)
    seeds = math.ceil(adaptive["runs_alt"] / (len(ARMS) + 1))
    fixed = simulate.calibrate_cells(simulate.paired_fixed(len(ARMS), seeds), 80, seed=5, effect=-0.012)
    assert adaptive["runs_alt"] < adaptive["max_runs"]  # it did stop early
    assert adaptive["power"] >= fixed["power"] - 0.03  # within Monte-Carlo error of 80 sims, or better


def test_the_docs_table_has_both_spending_functions_and_the_fixed_designs_beside(capsys):
    simulate.main(["--adaptive", "--sims", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| adaptive")
            or line.startswith("| fixed")]
    # at the sweeper's default of 12 seeds an arm (sequential.MAX_SEEDS), as gptx.plan costs it
    assert [r.split(" | ")[0] for r in rows][:2] == ["| adaptive, pocock, 3 + 3 a wave, ≤ 12 seeds",
                                                      "| adaptive, obrien_fleming, 3 + 3 a wave, ≤ 12 seeds"]
    assert "| fixed, paired, 3 seeds" in rows[2] and "| fixed, paired, 12 seeds" in rows[-1]


# --- the stops claim what they can back --------------------------------------------------------------

def test_same_weights_but_another_metric_does_not_stop_as_identical():
    plan = _plan(arms=("grad_clip",))
    noise = dict(zip(plan.seeds, np.random.default_rng(0).normal(0, 0.0155, len(plan.seeds))))
    runs = []
    while (rep := replay(runs, plan)).next_cells is not None:
        for k, (a, s) in enumerate(rep.next_cells):  # same weights, every test loss 0.02 lower
            shift = -0.02 + 1e-3 * math.sin(s) if a == "grad_clip" else 0.0
            runs.append(_run(a, s, 3.7 + noise[s] + shift, len(runs) + k, weights=f"w-baseline-{s}"))
    assert rep.arms["grad_clip"].status == "better"


def test_smaller_claims_are_error_controlled_at_exactly_the_minimum_effect():
    """Δ = +min_effect on every arm: any "smaller than the minimum effect" is a false claim; over 4 arms
    and every look their family-wise rate stays ≤ α."""
    n = 150
    plan = _plan(min_effect=0.01)
    rng = np.random.default_rng(8)
    false = sum(any(a.status == SMALLER for a in simulate.adaptive_trial(plan, rng, {x: 0.01 for x in ARMS})
                    .arms.values()) for _ in range(n))
    assert false / n <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / n)


@pytest.mark.parametrize("case", [simulate.Case("3 x", scale=(("grad_clip", 3.0),)),
                                  simulate.Case("own init", own_init=("qkv_bias",))])
def test_family_wise_false_claims_at_most_alpha_when_the_noise_misbehaves(case):
    """One arm with 3 × the baseline's training noise, or its own init effect: each look judges it on its
    own differences, so the sweep stays calibrated (the pooled noise made 0.10–0.14 of these false)."""
    rep_rate = 0
    rng = np.random.default_rng(31)
    plan = _plan(spending="obrien_fleming")
    for _ in range(120):
        rep = simulate.adaptive_trial(plan, rng, {}, case=case)
        rep_rate += any(a.status in ("better", "worse") for a in rep.arms.values())
    assert rep_rate / 120 <= _bound(120)
