"""Statistics behind the noise report: pure functions over lists of losses, no I/O.

Each function takes plain sequences of floats and returns numbers or small frozen dataclasses, so
every figure in a report can be checked against a textbook value (tests/test_stats.py). Undefined
quantities (an SD from one run, a z-score against zero noise) are `None`, never NaN or an exception:
the report says in words why they are missing. docs/analysis.md explains each statistic.
"""

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Describe:
    """One sample of losses summarised: mean, both SDs, standard error and confidence intervals."""

    n: int
    mean: float
    sd: float | None  # sample SD, n - 1 in the denominator (Bessel)
    sd_population: float | None  # n in the denominator
    se: float | None
    ci: tuple[float, float] | None  # t interval of the mean
    sd_ci: tuple[float, float] | None  # chi-square interval of the SD


@dataclass(frozen=True)
class Anova:
    """Two-way random-effects ANOVA without replication (rows = init seeds, columns = train seeds)."""

    n_init: int
    n_train: int
    grand_mean: float
    ms_init: float
    ms_train: float
    ms_residual: float
    df_init: int
    df_train: int
    df_residual: int
    var_init: float  # method-of-moments estimates, truncated at 0
    var_train: float
    var_residual: float  # init x train interaction and pure error: inseparable with one run a cell
    var_init_ci: tuple[float, float] | None  # Satterthwaite approximation
    var_train_ci: tuple[float, float] | None
    var_residual_ci: tuple[float, float] | None  # exact chi-square
    df_init_satterthwaite: float | None
    df_train_satterthwaite: float | None
    p_init: float | None  # F test of sigma^2_init = 0
    p_train: float | None


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _no_spread(values) -> bool:
    """All values equal up to float rounding: 3 x 3.7 must not give an SD of 5e-16 and a p of 1e-30."""
    x = np.asarray(values, dtype=float)
    return float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def _ci(interval) -> tuple[float, float] | None:
    lo, hi = _finite(interval[0]), _finite(interval[1])
    return None if lo is None or hi is None else (lo, hi)


def describe(values: Sequence[float], confidence: float = CONFIDENCE) -> Describe:
    """Summarise a sample: n, mean, sample and population SD, SE, t CI of the mean, chi-square CI of SD."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("describe() needs at least one value")
    if n == 1:
        return Describe(1, float(x[0]), None, None, None, None, None)
    if _no_spread(x):
        return Describe(n, float(x[0]), 0.0, 0.0, 0.0, (float(x[0]), float(x[0])), (0.0, 0.0))
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    ci = _ci(stats.t.interval(confidence, n - 1, loc=mean, scale=se))
    return Describe(n, mean, sd, float(x.std(ddof=0)), se, ci, sd_interval(sd, n - 1, confidence))


def sd_interval(sd: float, df: float, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Chi-square CI of a standard deviation estimated with `df` degrees of freedom (normal data)."""
    if df <= 0:
        return None
    alpha = 1 - confidence
    lo = sd * math.sqrt(df / stats.chi2.ppf(1 - alpha / 2, df))
    hi = sd * math.sqrt(df / stats.chi2.ppf(alpha / 2, df))
    return float(lo), float(hi)


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float | None, int]:
    """Pooled within-group sample SD and its degrees of freedom, the sum of (n_i - 1)."""
    groups = [np.asarray(g, float) for g in groups if len(g) > 1]
    ss = sum(0.0 if _no_spread(g) else float(((g - g.mean()) ** 2).sum()) for g in groups)
    df = sum(len(g) - 1 for g in groups)
    return (math.sqrt(ss / df) if df else None), df


def cluster_bootstrap_ci(diffs: Sequence[float], seed: int = 0, n_resamples: int = 9999,
                         confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile CI of the mean of per-init-seed differences, init seeds resampled (both arms jointly).

    None below 5 seeds: with fewer, resamples take so few distinct values that the interval is too narrow.
    """
    d = np.asarray(diffs, float)
    if len(d) < 5:
        return None
    means = np.random.default_rng(seed).choice(d, size=(n_resamples, len(d))).mean(axis=1)
    alpha = 1 - confidence
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def z_score(delta: float, noise_sd: float | None) -> float | None:
    """Delta in units of the noise SD; None when the noise SD is missing or zero."""
    if noise_sd is None or not math.isfinite(noise_sd) or noise_sd == 0:
        return None
    return delta / noise_sd


def sigma_band(z: float | None) -> str:
    """The band of baseline noise a z-score falls in: 'within 1σ', '1σ–2σ', '2σ–3σ' or 'beyond 3σ'."""
    if z is None:
        return "undefined"
    a = abs(z)
    return "within 1σ" if a <= 1 else "1σ–2σ" if a <= 2 else "2σ–3σ" if a <= 3 else "beyond 3σ"


def t_power(df: float, ncp: float, alpha: float = 0.05) -> float:
    """Power of a two-sided t test with `df` degrees of freedom at noncentrality `ncp`; never NaN.

    scipy's noncentral t returns NaN for large noncentrality; then P(|T| > c) is integrated directly,
    T = (Z + ncp) / sqrt(V / df) with V chi-square: E_V[Φ(ncp − c√(V/df)) + Φ(−ncp − c√(V/df))], as a
    mean over 20,000 evenly spaced quantiles of V (smooth, bounded integrand: error far below 1e-5).
    """
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    with warnings.catch_warnings(record=True) as caught:  # "series did not converge": not to be trusted
        warnings.simplefilter("always")
        p = float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))
    if math.isfinite(p) and 0 <= p <= 1 and not caught:
        return p
    v = stats.chi2.ppf((np.arange(20_000) + 0.5) / 20_000, df)
    c = crit * np.sqrt(v / df)
    return float(np.clip(np.mean(stats.norm.cdf(ncp - c) + stats.norm.cdf(-ncp - c)), 0.0, 1.0))


def power(n: int, effect: float, paired_design: bool = False, alpha: float = 0.05) -> float:
    """Power of the two-sided t-test, n seeds an arm (or n pairs), effect = Δ/σ, from the noncentral t."""
    if paired_design:
        return t_power(n - 1, abs(effect) * math.sqrt(n), alpha)
    return t_power(2 * n - 2, abs(effect) * math.sqrt(n / 2), alpha)


def min_detectable(se: float, df: float, alpha: float = 0.05, target: float = 0.8) -> float | None:
    """Smallest |Δ| a t test with this standard error and df detects with `target` power; None below 1 df."""
    if se is None or not se > 0 or df is None or df < 1:
        return None
    hi = 4.0
    while t_power(df, hi, alpha) < target:  # bracket the answer: power rises with the noncentrality
        if hi > 1e6:
            return None
        hi *= 4
    ncp = optimize.brentq(lambda x: t_power(df, x, alpha) - target, 0.0, hi, xtol=1e-9)
    return float(ncp * se)


def sd_upper(sd: float, df: float, confidence: float = CONFIDENCE) -> float | None:
    """One-sided upper confidence limit of an SD estimated with `df` degrees of freedom; None below 1 df."""
    if sd is None or df is None or df < 1:
        return None
    return float(sd * math.sqrt(df / stats.chi2.ppf(1 - confidence, df)))


def seeds_needed(delta: float, sd: float | None, paired_design: bool = False, alpha: float = 0.05,
                 target: float = 0.8, max_n: int = 1_000_000) -> int | None:
    """Fewest seeds an arm (or pairs) giving the t-test `target` power; None if undefined or > max_n."""
    if sd is None or sd <= 0 or delta == 0 or not math.isfinite(delta / sd):
        return None
    effect = delta / sd
    if power(2, effect, paired_design, alpha) >= target:
        return 2
    lo, hi = 2, 4  # power rises with n: double to bracket the answer, then bisect
    while power(hi, effect, paired_design, alpha) < target:
        if hi >= max_n:
            return None
        lo, hi = hi, min(2 * hi, max_n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power(mid, effect, paired_design, alpha) >= target else (mid, hi)
    return hi


@dataclass(frozen=True)
class TTest:
    """A t test of one difference: estimate, standard error, df, CI, t and two-sided p (None when undefined)."""

    estimate: float
    se: float | None
    df: float | None
    ci: tuple[float, float] | None
    t: float | None
    p: float | None


def _t_test(estimate: float, se: float, df: float, confidence: float) -> TTest:
    t = estimate / se
    half = float(stats.t.ppf(1 - (1 - confidence) / 2, df)) * se
    return TTest(estimate, se, df, (estimate - half, estimate + half), t, float(2 * stats.t.sf(abs(t), df)))


def paired_test(diffs: Sequence[float], confidence: float = CONFIDENCE) -> TTest:
    """One-sample t test of per-seed differences (arm − baseline), their own variance on n − 1 df.

    Valid whatever each arm's noise, as long as the differences are independent draws of one distribution.
    """
    d = np.asarray(diffs, float)
    if len(d) < 2:
        raise ValueError("a paired test needs at least two differences")
    mean = float(d.mean())
    if _no_spread(d):
        return TTest(mean, 0.0, None, None, None, None)
    return _t_test(mean, float(d.std(ddof=1)) / math.sqrt(len(d)), len(d) - 1, confidence)


def welch_test(arm: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE) -> TTest:
    """Two-sample t test (mean arm − mean baseline), each side its own variance (Welch's SE), on Hsu's
    conservative min(n_arm, n_baseline) − 1 df.

    Welch's Satterthwaite df is liberal when the smaller side has the larger variance (2 runs against 5 at
    3 × the noise: 8% false claims at α = 0.05); min(n) − 1 holds the level at any variance ratio.
    """
    return groups_contrast_test([arm, baseline], [1.0, -1.0], confidence)


def groups_contrast_test(groups: Sequence[Sequence[float]], coefficients: Sequence[float],
                         confidence: float = CONFIDENCE) -> TTest:
    """t test of Σ cⱼ · mean(groupⱼ) over independent groups, each its own variance, on min(nⱼ) − 1 df.

    Welch's SE generalised to any contrast (an interaction of arms that share no seeds), with Hsu's
    conservative df: the level holds whichever group is the noisiest.
    """
    arrays = [np.asarray(g, float) for g in groups]
    if any(len(a) < 2 for a in arrays):
        raise ValueError("a two-sample test needs at least two values a side")
    estimate = float(sum(c * a.mean() for c, a in zip(coefficients, arrays, strict=True)))
    var = sum(0.0 if _no_spread(a) else c * c * float(a.var(ddof=1)) / len(a)
              for c, a in zip(coefficients, arrays, strict=True))
    if var == 0:
        return TTest(estimate, 0.0, None, None, None, None)
    return _t_test(estimate, math.sqrt(var), min(len(a) for a in arrays) - 1, confidence)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (family-wise error), in input order; None entries stay None."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (len(idx) - rank) * pvalues[i]))  # step-down stays monotone
        out[i] = running
    return out


def _component_ci(ms_effect: float, df_effect: int, ms_res: float, df_res: int, k: int,
                  confidence: float) -> tuple[tuple[float, float] | None, float | None]:
    """Satterthwaite CI for the variance component (MS_effect - MS_res) / k, the usual approximation."""
    est = (ms_effect - ms_res) / k
    if est <= 0 or ms_res <= 0:
        return None, None
    df = (ms_effect - ms_res) ** 2 / (ms_effect**2 / df_effect + ms_res**2 / df_res)
    if df < 1:  # below 1 df the chi-square interval runs to absurd bounds (1e+116): not an interval
        return None, df
    alpha = 1 - confidence
    lo, hi = df * est / stats.chi2.ppf(1 - alpha / 2, df), df * est / stats.chi2.ppf(alpha / 2, df)
    return (float(lo), float(hi)), df


def two_way_anova(grid: Sequence[Sequence[float]], confidence: float = CONFIDENCE) -> Anova:
    """Variance components of an init_seed x train_seed grid (one run a cell), two-way random effects."""
    y = np.asarray(grid, float)
    a, b = y.shape
    if a < 2 or b < 2:
        raise ValueError("a variance decomposition needs at least 2 init seeds x 2 train seeds")
    grand, rows, cols = y.mean(), y.mean(axis=1), y.mean(axis=0)
    df_r, df_c, df_e = a - 1, b - 1, (a - 1) * (b - 1)
    ms_r = b * float(((rows - grand) ** 2).sum()) / df_r
    ms_c = a * float(((cols - grand) ** 2).sum()) / df_c
    resid = y - rows[:, None] - cols[None, :] + grand
    # residuals at rounding level mean an additive grid: treat as 0 rather than divide by 1e-32
    ms_e = 0.0 if np.abs(resid).max() <= 1e-12 * max(1.0, abs(grand)) else float((resid**2).sum()) / df_e
    res_ci, p_r, p_c = None, None, None
    if ms_e > 0:
        alpha = 1 - confidence
        res_ci = (float(df_e * ms_e / stats.chi2.ppf(1 - alpha / 2, df_e)),
                  float(df_e * ms_e / stats.chi2.ppf(alpha / 2, df_e)))
        p_r, p_c = float(stats.f.sf(ms_r / ms_e, df_r, df_e)), float(stats.f.sf(ms_c / ms_e, df_c, df_e))
    init_ci, df_init = _component_ci(ms_r, df_r, ms_e, df_e, b, confidence)
    train_ci, df_train = _component_ci(ms_c, df_c, ms_e, df_e, a, confidence)
    return Anova(a, b, float(grand), ms_r, ms_c, ms_e, df_r, df_c, df_e,
                 max(0.0, (ms_r - ms_e) / b), max(0.0, (ms_c - ms_e) / a), ms_e,
                 init_ci, train_ci, res_ci, df_init, df_train, p_r, p_c)
