"""gptx.stats against textbook values worked by hand (closed forms where the distribution allows)."""

import math
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from gptx.analysis import stats

INIT_SEED_LOSSES = [3.691526, 3.673453, 3.653592]  # the study's init-seed noise runs
TRAIN_SEED_LOSSES = [3.691526, 3.681356, 3.680505]  # same initial weights, train seed none / 23 / 67
T_975_DF2 = math.sqrt(0.9025 * 2 / 0.0975)  # df 2: F(t) = 1/2 + t / (2 sqrt(t^2 + 2)), solved for 0.975
CHI2_975_DF2, CHI2_025_DF2 = -2 * math.log(0.025), -2 * math.log(0.975)  # df 2 is exponential with mean 2


def test_t_and_chi2_closed_forms_match_scipy():
    assert T_975_DF2 == pytest.approx(4.302653, abs=1e-6)
    assert CHI2_975_DF2 == pytest.approx(sps.chi2.ppf(0.975, 2), rel=1e-12)
    assert CHI2_025_DF2 == pytest.approx(sps.chi2.ppf(0.025, 2), rel=1e-12)


def test_describe_init_seed_noise_matches_the_study():
    d = stats.describe(INIT_SEED_LOSSES)
    assert d.n == 3
    assert d.mean == pytest.approx(3.672857, abs=5e-7)
    assert d.sd_population == pytest.approx(0.015492, abs=5e-7)  # the study's published 0.0154919
    assert d.sd == pytest.approx(0.018974, abs=5e-7)
    assert d.se == pytest.approx(d.sd / math.sqrt(3), rel=1e-12)


def test_describe_train_seed_noise_and_the_studys_misquoted_sd():
    d = stats.describe(TRAIN_SEED_LOSSES)
    assert d.mean == pytest.approx(3.684462, abs=5e-7)
    assert d.sd_population == pytest.approx(0.005007, abs=5e-7)
    assert d.sd == pytest.approx(0.006132, abs=5e-7)
    root_sum_squares = math.sqrt(sum((x - d.mean) ** 2 for x in TRAIN_SEED_LOSSES))
    assert root_sum_squares == pytest.approx(0.008672, abs=5e-7)  # the figure the study quoted as the SD


def test_t_interval_of_the_mean_by_hand():
    d = stats.describe(INIT_SEED_LOSSES)
    half = T_975_DF2 * 0.018974022 / math.sqrt(3)
    assert d.ci == pytest.approx((3.672857 - half, 3.672857 + half), abs=1e-8)
    assert d.ci == pytest.approx((3.625723, 3.719991), abs=5e-7)


def test_chi_square_interval_of_the_sd_by_hand():
    d = stats.describe(INIT_SEED_LOSSES)
    lo, hi = d.sd * math.sqrt(2 / CHI2_975_DF2), d.sd * math.sqrt(2 / CHI2_025_DF2)
    assert d.sd_ci == pytest.approx((lo, hi), rel=1e-10)
    assert d.sd_ci == pytest.approx((0.009879, 0.119247), abs=5e-7)  # a factor of 12 wide at n = 3


def test_describe_one_run_and_identical_runs():
    one = stats.describe([3.7])
    assert (one.n, one.mean, one.sd, one.sd_population, one.se, one.ci, one.sd_ci) == (
        1,
        3.7,
        None,
        None,
        None,
        None,
        None,
    )
    same = stats.describe([3.7, 3.7, 3.7])
    assert same.sd == 0 and same.ci == (pytest.approx(3.7), pytest.approx(3.7)) and same.sd_ci == (0.0, 0.0)
    with pytest.raises(ValueError):
        stats.describe([])


def test_pooled_sd():
    sd, df = stats.pooled_sd([[1, 2, 3], [4, 6], [9]])  # squared deviations 2 + 2 over 2 + 1 df
    assert (sd, df) == (pytest.approx(math.sqrt(4 / 3)), 3)
    assert stats.pooled_sd([[1], [2]]) == (None, 0)


def test_z_score_and_bands():
    assert stats.z_score(0.03, 0.015) == pytest.approx(2.0)
    assert stats.z_score(0.03, 0.0) is None and stats.z_score(0.03, None) is None
    assert [stats.sigma_band(z) for z in (0.5, -1.0, 1.5, -2.5, 3.01, None)] == [
        "within 1σ",
        "within 1σ",
        "1σ–2σ",
        "2σ–3σ",
        "beyond 3σ",
        "undefined",
    ]


def test_power_matches_published_tables():
    # Cohen's tables / G*Power: two-sample t, alpha 0.05 two-sided, 80% power
    assert stats.power(17, 1.0) == pytest.approx(0.8070, abs=5e-4)
    assert stats.seeds_needed(1.0, 1.0) == 17
    assert stats.seeds_needed(-0.5, 1.0) == 64
    assert stats.seeds_needed(0.5, 1.0, paired_design=True) == 34
    assert stats.seeds_needed(0.013, 0.018974) > stats.seeds_needed(0.013, 0.006)
    assert stats.seeds_needed(10.0, 1.0) == 2


def test_power_never_nan_for_large_effects():
    # scipy's noncentral t gives NaN here; the integral over the chi-square gives the true power
    assert stats.power(2, 10.551374, False) == pytest.approx(0.9958, abs=5e-5)
    assert stats.t_power(2, 60.0) == pytest.approx(1.0, abs=1e-3)
    assert stats.t_power(30, 0.0) == pytest.approx(0.05, abs=1e-9)


def test_power_falls_back_to_integration_when_scipy_gives_nan(monkeypatch):
    exact = stats.t_power(5, 2.0)

    class NaNnct:
        sf = cdf = staticmethod(lambda *a: float("nan"))

    monkeypatch.setattr(stats.stats, "nct", NaNnct)
    assert stats.t_power(5, 2.0) == pytest.approx(exact, abs=1e-6)
    assert stats.power(2, 10.551374, False) == pytest.approx(0.9958, abs=5e-5)


def test_min_detectable_is_the_effect_with_80_percent_power():
    mde = stats.min_detectable(0.01, 4.0)
    assert stats.t_power(4.0, mde / 0.01) == pytest.approx(0.8, abs=1e-6)
    assert stats.min_detectable(None, 4.0) is None and stats.min_detectable(0.01, 0.0) is None


def test_sd_upper_limit_and_df_below_one():
    # one-sided 95%: s sqrt(df / chi2_0.05(df)); df 2 chi2_0.05 = -2 ln 0.95
    assert stats.sd_upper(1.0, 2) == pytest.approx(math.sqrt(2 / (-2 * math.log(0.95))))
    assert stats.sd_upper(1.0, 0.5) is None


def test_cluster_bootstrap_needs_five_seeds_and_is_seeded():
    d = [-0.010, -0.014, -0.008, -0.012, -0.011, -0.009]
    ci = stats.cluster_bootstrap_ci(d, seed=1)
    assert ci == stats.cluster_bootstrap_ci(d, seed=1) and ci[0] < sum(d) / 6 < ci[1]
    assert stats.cluster_bootstrap_ci(d[:4]) is None


def test_seeds_needed_undefined():
    assert stats.seeds_needed(0.0, 1.0) is None
    assert stats.seeds_needed(0.1, 0.0) is None and stats.seeds_needed(0.1, None) is None
    assert stats.seeds_needed(1e-4, 1.0, max_n=1000) is None


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max: 0.06 at the end
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert stats.holm([]) == []


def test_two_way_anova_on_a_hand_computed_grid():
    # rows (init seeds) mean 1.5, 4, 4; columns (train seeds) 8/3, 11/3; grand 19/6
    # SS: init 8.3333 (2 df), train 1.5 (1 df), residual 1.0 (2 df), total 10.8333
    a = stats.two_way_anova([[1, 2], [3, 5], [4, 4]])
    assert (a.df_init, a.df_train, a.df_residual) == (2, 1, 2)
    assert (a.ms_init, a.ms_train, a.ms_residual) == pytest.approx((25 / 6, 1.5, 0.5))
    assert (a.var_init, a.var_train, a.var_residual) == pytest.approx((11 / 6, 1 / 3, 0.5))
    assert a.p_init == pytest.approx(1 / (1 + 25 / 3))  # F(2, 2) survival is 1 / (1 + F)
    assert a.p_train == pytest.approx(1 - math.sqrt(3 / 5))  # F(1, 2) = t(2)^2
    assert a.var_residual_ci == pytest.approx((1 / CHI2_975_DF2, 1 / CHI2_025_DF2))
    df = (25 / 6 - 0.5) ** 2 / ((25 / 6) ** 2 / 2 + 0.25 / 2)  # Satterthwaite
    assert a.df_init_satterthwaite == pytest.approx(df) and df == pytest.approx(1.526814, abs=1e-6)
    assert a.var_init_ci == pytest.approx(
        (df * 11 / 6 / sps.chi2.ppf(0.975, df), df * 11 / 6 / sps.chi2.ppf(0.025, df))
    )


def test_two_way_anova_truncates_negative_components_and_needs_a_grid():
    a = stats.two_way_anova([[1, 2], [2, 1]])  # rows and columns have equal means: components are 0
    assert a.var_init == 0 and a.var_train == 0 and a.var_init_ci is None
    tiny = stats.two_way_anova([[1.0, 2.0], [1.1, 2.05], [0.9, 1.8]])  # Satterthwaite df far below 1
    assert tiny.df_train_satterthwaite < 1 and tiny.var_train_ci is None
    flat = stats.two_way_anova([[1, 1], [1, 1]])
    assert flat.var_residual == 0 and flat.p_init is None
    with pytest.raises(ValueError):
        stats.two_way_anova([[1, 2, 3]])


def test_paired_test_is_the_one_sample_t_test_of_the_differences():
    d = [0.012, -0.004, 0.020, 0.007]
    r, ref = stats.paired_test(d), sps.ttest_1samp(d, 0.0)
    assert (r.df, r.t, r.p) == (3, pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert r.ci[0] < r.estimate < r.ci[1] and stats.paired_test([0.01, 0.01]).p is None  # no spread


def test_two_sample_test_uses_welchs_se_on_hsus_conservative_df():
    a, b = [3.70, 3.72, 3.75], [3.60, 3.61, 3.66, 3.62, 3.64]
    r = stats.welch_test(a, b)
    se = math.sqrt(statistics.variance(a) / 3 + statistics.variance(b) / 5)
    assert r.df == 2 and r.se == pytest.approx(se)
    assert r.estimate == pytest.approx(statistics.mean(a) - statistics.mean(b))
    assert r.p == pytest.approx(2 * sps.t.sf(r.estimate / se, 2))


def test_a_contrast_of_independent_groups_on_hsus_df():
    groups = [[3.70, 3.72, 3.69], [3.66, 3.71], [3.68, 3.69, 3.73, 3.70]]
    r = stats.groups_contrast_test(groups, [1.0, -1.0, 1.0])
    means = [np.mean(g) for g in groups]
    se = math.sqrt(sum(np.var(g, ddof=1) / len(g) for g in groups))
    assert r.estimate == pytest.approx(means[0] - means[1] + means[2]) and r.se == pytest.approx(se)
    assert r.df == 1 and r.p == pytest.approx(2 * sps.t.sf(abs(r.estimate / se), 1))
    w = stats.welch_test(groups[0], groups[2])  # Welch's test is the two-group case
    assert (w.estimate, w.se, w.df) == pytest.approx((means[0] - means[2], math.sqrt(
        np.var(groups[0], ddof=1) / 3 + np.var(groups[2], ddof=1) / 4), 2))
