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
