"""Statistics behind the noise report: pure functions over lists of losses, no I/O.

Each function takes plain sequences of floats and returns numbers or small frozen dataclasses, so
every figure in a report can be checked against a textbook value (tests/test_stats.py). Undefined
quantities (an SD from one run, a z-score against zero noise) are `None`, never NaN or an exception:
the report says in words why they are missing. docs/analysis.md explains each statistic.
"""

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
# scipy 1.15 renamed bootstrap's `random_state` to `rng`; accept both so scipy>=1.11 works
_RNG_ARG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


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
class Test:
    """A difference (or contrast) with its confidence interval and two-sided test."""

    name: str
    estimate: float
    ci: tuple[float, float] | None
    statistic: float | None
    df: float | None
    p: float | None


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


def _t_test(name: str, estimate: float, r, confidence: float) -> Test:
    return Test(name, estimate, _ci(r.confidence_interval(confidence)), _finite(r.statistic), float(r.df),
                _finite(r.pvalue))


def welch(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Test:
    """Welch's unequal-variance t-test of mean(a) - mean(b), with its t CI and Welch-Satterthwaite df."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t-test needs at least two runs in each arm")
    delta = float(np.mean(a) - np.mean(b))
    if _no_spread(a) and _no_spread(b):
        return Test("welch", delta, None, None, None, None)
    return _t_test("welch", delta, stats.ttest_ind(a, b, equal_var=False), confidence)


def student(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Test:
    """Pooled-variance t-test of mean(a) - mean(b); with one run in `a`, is it outside the spread of `b`?"""
    delta = float(np.mean(a) - np.mean(b))
    if len(a) + len(b) < 3 or (_no_spread(a) and _no_spread(b)):
        return Test("student", delta, None, None, None, None)
    return _t_test("student", delta, stats.ttest_ind(a, b, equal_var=True), confidence)


def paired(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Test:
    """Paired t-test of the per-seed differences a_i - b_i: mean difference, its t CI and p."""
    return one_sample(np.asarray(a, float) - np.asarray(b, float), "paired", confidence)


def one_sample(d: Sequence[float], name: str = "one_sample", confidence: float = CONFIDENCE) -> Test:
    """One-sample t-test of mean(d) = 0 with its t CI; p is None when d has no spread."""
    d = np.asarray(d, float)
    if len(d) < 2:
        raise ValueError("a t-test of differences needs at least two pairs")
    if _no_spread(d):  # scipy answers p = 0 (t = inf); with no spread there is nothing to test against
        return Test(name, float(d[0]), None, None, len(d) - 1, None)
    return _t_test(name, float(d.mean()), stats.ttest_1samp(d, 0.0), confidence)


def bootstrap_delta_ci(a: Sequence[float], b: Sequence[float], seed: int = 0, n_resamples: int = 9999,
                       confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile bootstrap CI of mean(a) - mean(b), each arm resampled on its own, reproducible by seed."""
    if len(a) < 2 or len(b) < 2:
        return None
    if _no_spread(a) and _no_spread(b):
        d = float(np.mean(a) - np.mean(b))
        return d, d
    # percentile, not BCa: BCa's jackknife acceleration is undefined for the tiny, tied samples seeds give
    r = stats.bootstrap((np.asarray(a, float), np.asarray(b, float)),
                        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                        n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                        vectorized=True, **{_RNG_ARG: np.random.default_rng(seed)})
    return _ci((r.confidence_interval.low, r.confidence_interval.high))


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


def power(n: int, effect: float, paired_design: bool = False, alpha: float = 0.05) -> float:
    """Power of the two-sided t-test, n seeds an arm (or n pairs), effect = Δ/σ, from the noncentral t."""
    if paired_design:
        df, ncp = n - 1, abs(effect) * math.sqrt(n)
    else:
        df, ncp = 2 * n - 2, abs(effect) * math.sqrt(n / 2)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


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


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (family-wise error), in input order; None entries stay None."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (len(idx) - rank) * pvalues[i]))  # step-down stays monotone
        out[i] = running
    return out


def contrast(samples: Sequence[Sequence[float]], coefs: Sequence[float],
             confidence: float = CONFIDENCE) -> Test:
    """Contrast sum(c_i * mean_i) of independent arms: t CI with Welch-Satterthwaite df (every n >= 2)."""
    estimate = sum(c * float(np.mean(s)) for c, s in zip(coefs, samples, strict=True))
    if any(len(s) < 2 for s in samples):
        return Test("welch_contrast", estimate, None, None, None, None)
    parts = [0.0 if _no_spread(s) else c * c * float(np.var(s, ddof=1)) / len(s)
             for c, s in zip(coefs, samples, strict=True)]
    var = sum(parts)
    if var == 0:
        return Test("welch_contrast", estimate, None, None, None, None)
    df = var**2 / sum(p * p / (len(s) - 1) for p, s in zip(parts, samples, strict=True))
    se = math.sqrt(var)
    half = stats.t.ppf(1 - (1 - confidence) / 2, df) * se
    p = float(2 * stats.t.sf(abs(estimate / se), df))
    return Test("welch_contrast", estimate, (estimate - half, estimate + half), estimate / se, df, p)


def paired_contrast(rows: Sequence[Sequence[float]], coefs: Sequence[float],
                    confidence: float = CONFIDENCE) -> Test:
    """Contrast computed within each seed (a row holds every arm's loss at one seed), then a one-sample t."""
    d = np.asarray(rows, float) @ np.asarray(coefs, float)
    return one_sample(d, "paired_contrast", confidence)


def _component_ci(ms_effect: float, df_effect: int, ms_res: float, df_res: int, k: int,
                  confidence: float) -> tuple[tuple[float, float] | None, float | None]:
    """Satterthwaite CI for the variance component (MS_effect - MS_res) / k, the usual approximation."""
    est = (ms_effect - ms_res) / k
    if est <= 0 or ms_res <= 0:
        return None, None
    df = (ms_effect - ms_res) ** 2 / (ms_effect**2 / df_effect + ms_res**2 / df_res)
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
