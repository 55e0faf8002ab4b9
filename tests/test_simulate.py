"""The report's verdicts are calibrated: false claims at or below α on every preset design, by simulation."""

import json
import math

import numpy as np
import pytest

from gptx.analysis import simulate
from gptx.analysis.report import markdown, table
from gptx.analysis.summary import analyze, jsonable

N_SIMS = 150  # per design; the full-size table (docs/analysis.md) comes from python -m gptx.analysis.simulate


def _bound(n: int, alpha: float = 0.05) -> float:
    """α plus three binomial standard errors: a calibrated design exceeds it with probability ~0.1%."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / n)


def test_the_issue_example_never_gets_a_verdict():
    r = simulate.calibrate("issue_example", 50, seed=3)
    assert r["fwer"] == 0 and r["power"] == 0  # not testable, whatever the losses


@pytest.mark.slow
@pytest.mark.parametrize("design", ["interventions", "interventions_paired", "noise_grid", "new_init_seed",
                                    "paired_failures"])
def test_family_wise_false_claims_at_most_alpha(design):
    r = simulate.calibrate(design, N_SIMS, seed=11)
    assert r["fwer"] <= _bound(N_SIMS)


def test_the_paired_design_has_power_where_one_run_per_arm_has_none():
    paired = simulate.calibrate("interventions_paired", 40, seed=5, effect=-0.02)
    single = simulate.calibrate("interventions", 40, seed=5, effect=-0.02)
    assert paired["power"] > single["power"]


def test_a_stated_effect_is_found_in_a_large_paired_sweep():
    cells = [(a, i, None) for a in ("baseline", "grad_clip") for i in range(12)]
    s = analyze(simulate.sweep(cells, np.random.default_rng(0), effect=-0.02), detail=False)
    assert s["arms"]["grad_clip"]["verdict"] == "better" and not s["arms"]["grad_clip"]["tentative"]


def test_the_report_never_crashes_on_random_layouts():
    rng = np.random.default_rng(0)
    for _ in range(300):
        runs = simulate.random_sweep(rng)
        summary = jsonable(analyze(runs))
        json.dumps(summary, allow_nan=False)
        markdown(summary)
        table(summary)
        for e in summary["arms"].values():
            if e["ci"]:
                assert e["ci"][0] <= e["delta"] <= e["ci"][1]


# --- the noise misbehaving (docs/analysis.md, "When the noise misbehaves") --------------------------

ROBUST_SIMS = 120


@pytest.mark.parametrize("design,case", [
    ("interventions_paired", 1), ("interventions_paired", 2), ("interventions_paired", 3),
    ("interventions_paired", 4), ("interventions_paired", 5), ("paired_failures", 1), ("paired_failures", 4),
    ("interventions", 2),
])
def test_false_claims_at_most_alpha_when_the_noise_misbehaves(design, case):
    c = simulate.cases(simulate.design_arms(design))[case]
    r = simulate.calibrate(design, ROBUST_SIMS, seed=21, case=c, power=False)
    assert r["fwer"] <= _bound(ROBUST_SIMS), c.name


def test_the_check_can_fail():
    """The same check on the pooled-noise method (--assume-equal-noise), where it is known to fail."""
    c = simulate.cases(simulate.design_arms("interventions"))[2]  # every arm 2 × σ_train, one run an arm
    r = simulate.calibrate("interventions", ROBUST_SIMS, seed=21, case=c, power=False, equal_noise=True)
    assert r["fwer"] > _bound(ROBUST_SIMS)


def test_the_cases_draw_what_they_say():
    rng = np.random.default_rng(0)
    cells = [(a, i, None) for a in ("baseline", "grad_clip") for i in range(400)]
    noisy = simulate.Case(scale=(("grad_clip", 3.0),))
    runs = simulate.sweep(cells, rng, sd_init=0.0, case=noisy)
    by = {a: np.array([r.value for r in runs if r.arm == a]) for a in ("baseline", "grad_clip")}
    assert by["grad_clip"].std() / by["baseline"].std() == pytest.approx(3.0, rel=0.15)
    heavy = simulate.sweep(cells, rng, sd_init=0.0, case=simulate.Case(t_df=4.0))
    x = np.array([r.value for r in heavy]) - 3.7
    assert x.std() == pytest.approx(simulate.SD_TRAIN, rel=0.2) and np.mean(np.abs(x) > 4 * x.std()) > 0.001
    own = simulate.sweep(cells, rng, sd_train=1e-9, case=simulate.Case(own_init=("grad_clip",)))
    d = np.array([r.value for r in own if r.arm == "grad_clip"]) - np.array([r.value for r in own
                                                                            if r.arm == "baseline"])
    assert d.std() == pytest.approx(math.sqrt(2) * simulate.SD_INIT, rel=0.15)  # its init effect is its own
    assert own[-1].result.init_param_sha256.keys() > own[0].result.init_param_sha256.keys()


def test_equal_noise_power_is_what_the_pooled_method_had():
    """--assume-equal-noise keeps the pooled model's verdicts, and their power, for those who accept it."""
    pooled = simulate.calibrate("interventions_paired", 60, seed=5, effect=-0.01, equal_noise=True)
    own = simulate.calibrate("interventions_paired", 60, seed=5, effect=-0.01)
    assert pooled["power"] > own["power"]


def _interaction_false_claims(sims: int, equal_noise: bool) -> float:
    """A stack and its singles among four other arms at 4 init seeds, Δ = 0 and no interaction; the stack's
    training noise 5 × the others'. The share of sweeps whose interaction is called (p < 0.05)."""
    rng = np.random.default_rng(3)
    arms = ("baseline", "a", "b", "a+b", "c", "d", "e", "f")
    cells = [(arm, i, None) for arm in arms for i in (1, 2, 3, 4)]
    case = simulate.Case(scale=(("a+b", 5.0),))
    claims = 0
    for _ in range(sims):
        s = analyze(simulate.sweep(cells, rng, case=case), detail=False, equal_noise=equal_noise)
        (i,) = s["interactions"]
        claims += i["p_holm"] is not None and i["p_holm"] < 0.05
    return claims / sims


def test_interactions_are_judged_on_their_own_noise():
    """Stack − Σ singles + baseline per seed, on its own df: at α where one term is noisier than the other
    arms; the design model's contrast (every arm's noise pooled) claims interactions that are not there."""
    sims = 300
    assert _interaction_false_claims(sims, equal_noise=False) <= _bound(sims)
    assert _interaction_false_claims(sims, equal_noise=True) > _bound(sims)


def test_the_report_measures_how_far_pairing_holds():
    """r of per-seed values and the differences' share of the unpaired variance: near the textbook
    σ²_init/(σ²_init + σ²_train) = 0.88 and σ²_train/(σ²_init + σ²_train) = 0.12 when the arm shares the
    baseline's init effect; near 0 and 1 when its init effect is its own (qkv_bias, weight_tying)."""
    cells = [(a, i, None) for a in ("baseline", "grad_clip", "qkv_bias") for i in range(1, 201)]
    runs = simulate.sweep(cells, np.random.default_rng(8), case=simulate.Case(own_init=("qkv_bias",)))
    arms = analyze(runs)["arms"]
    shared, own = arms["grad_clip"]["pairing_evidence"], arms["qkv_bias"]["pairing_evidence"]
    # 200 seeds: the SD of r is about 0.017 there, of r near 0 about 0.07
    assert shared["n"] == 200 and shared["r"] == pytest.approx(0.877, abs=0.06)
    assert shared["r_ci"][0] < shared["r"] < shared["r_ci"][1] and shared["r_ci"][1] - shared["r_ci"][0] < 0.1
    assert shared["variance_ratio"] == pytest.approx(0.123, abs=0.04)
    assert abs(own["r"]) < 0.2 and own["variance_ratio"] == pytest.approx(1.0, abs=0.25)
    assert "follow the baseline's with r = " in markdown(analyze(runs))
