"""One model of the whole design: loss = arm + initial-weight block + training noise, fitted by REML.

    y = X β + Z u + e,   u ~ N(0, σ²_init I) one per init block,   e ~ N(0, σ²_train I) one per run

X holds an intercept (the reference arm, the baseline) and one column per other arm, so β_arm is the
arm's Δ against the baseline; Z maps each run to its init block (runs that started from the same initial
weights). Both variance components are fitted by restricted maximum likelihood (REML); Δ is the
generalised-least-squares estimate, and its t test and CI take Satterthwaite's small-sample degrees of
freedom. A block shared by an arm and the baseline cancels σ²_init from their difference (pairing); an
arm in blocks of its own carries σ²_init, which then has to be estimable from the data, or the
comparison is not testable. docs/analysis.md derives every formula.

V is block diagonal, so the likelihood, its derivatives and the information are sums over blocks in
closed form (O(blocks · arms²)): a sweep of thousands of runs never forms an n × n matrix.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

from gptx.analysis.stats import CONFIDENCE, TTest

_LOG_RATIO = (-25.0, 8.0)  # search range of log(σ²_init / σ²_train): a ratio of SDs up to 55


@dataclass(frozen=True)
class Contrast(TTest):
    """A linear combination of arm effects, with its t test; `why` says why not testable when it is not."""

    why: str | None = None  # None when testable


@dataclass
class Fit:
    """A fitted design model: estimates, their covariance, and the variance components' uncertainty."""

    arms: list[str]  # arms[0] is the reference
    n: int
    n_blocks: int
    beta: np.ndarray | None
    cov: np.ndarray | None  # (X'V⁻¹X)⁻¹ at the estimates
    var_init: float | None
    var_train: float | None
    vc_cov: np.ndarray | None  # asymptotic covariance of (σ²_init, σ²_train), pseudo-inverse of the information
    null_dirs: np.ndarray | None  # directions in (σ²_init, σ²_train) the data carry no information about
    grad_mats: tuple | None  # X'V⁻¹ V_i V⁻¹X for i = init, train: d(cov)/dθ_i = cov · this · cov
    df_between: int | None  # block means left over after the arms: the most df σ²_init can have
    why: str | None = None  # why nothing can be tested, when that is so

    def contrast(self, c: Sequence[float], confidence: float = CONFIDENCE) -> Contrast:
        """Estimate c'β with Satterthwaite df; not testable when its variance needs a component not estimable."""
        c = np.asarray(c, float)
        estimate = float(c @ self.beta) if self.beta is not None else float("nan")
        if self.why:
            return Contrast(estimate, None, None, None, None, None, self.why)
        var = float(c @ self.cov @ c)
        g = np.array([float(c @ self.cov @ m @ self.cov @ c) for m in self.grad_mats])
        scale = np.abs(g).max()
        across_blocks = g[0] > 0.1 * g[1]  # the comparison leans on σ²_init
        if (across_blocks and self.df_between < 1) or (scale > 0 and self.null_dirs is not None
                                                       and len(self.null_dirs)
                                                       and np.abs(self.null_dirs @ g).max() > 1e-6 * scale):
            return Contrast(estimate, None, None, None, None, None,
                            "its runs differ from the baseline's by initial-weight noise that these runs "
                            "cannot estimate (no baseline init seeds varied that it could be judged against)")
        if var <= 1e-24 * max(1.0, float(np.abs(self.beta).max()) ** 2):
            return Contrast(estimate, 0.0, None, None, None, None, "no spread in the runs to test against")
        se = math.sqrt(var)
        spread = float(g @ self.vc_cov @ g)
        df = 2 * var * var / spread if spread > 0 else float(self.n - len(self.arms))
        df = min(max(df, 0.01), float(self.n - len(self.arms)))
        if across_blocks:
            # a comparison across init blocks leans on σ²_init; Satterthwaite overstates its df when σ²_init
            # is underestimated, so it is capped at the between-block df (calibration: simulate.py)
            df = min(df, float(self.df_between))
        t = estimate / se
        half = float(sps.t.ppf(1 - (1 - confidence) / 2, df)) * se
        return Contrast(estimate, se, df, (estimate - half, estimate + half), t, float(2 * sps.t.sf(abs(t), df)))

    def component_df(self, weights: Sequence[float]) -> float | None:
        """Satterthwaite df of w·(σ²_init, σ²_train): 2 est² / var; None when not estimable."""
        if self.why:
            return None
        w = np.asarray(weights, float)
        if self.null_dirs is not None and len(self.null_dirs) and np.abs(self.null_dirs @ w).max() > 1e-6:
            return None
        est = float(w @ np.array([self.var_init, self.var_train]))
        spread = float(w @ self.vc_cov @ w)
        return 2 * est * est / spread if spread > 0 and est > 0 else None


def fit(y: Sequence[float], arm_of: Sequence[str], block_of: Sequence, arms: list[str]) -> Fit:
    """REML fit of y = arm + init block + residual; `arms[0]` is the reference arm."""
    y = np.asarray(y, float)
    n, p = len(y), len(arms)
    col = {a: i for i, a in enumerate(arms)}
    x = np.zeros((n, p))
    x[:, 0] = 1.0
    for r, a in enumerate(arm_of):
        if col[a]:
            x[r, col[a]] = 1.0
    blocks = {b: i for i, b in enumerate(dict.fromkeys(block_of))}
    bidx = np.array([blocks[b] for b in block_of])
    nb = len(blocks)
    empty = Fit(arms, n, nb, None, None, None, None, None, None, None, None)
    if n - p <= 0:
        ols = np.linalg.lstsq(x, y, rcond=None)[0] if n else None
        return _with(empty, beta=ols, why="no runs left over to measure noise: each run is needed for an arm mean")
    counts = np.bincount(bidx, minlength=nb).astype(float)
    s = np.zeros((nb, p))
    np.add.at(s, bidx, x)
    df_between = nb - int(np.linalg.matrix_rank(s))
    t = np.bincount(bidx, weights=y, minlength=nb)
    xtx, xty, yty = x.T @ x, x.T @ y, float(y @ y)
    centre = float(y.mean())
    ols = np.linalg.lstsq(x, y, rcond=None)[0]
    if float(((y - x @ ols) ** 2).sum()) <= 1e-24 * max(1.0, centre * centre) * n:
        return _with(empty, beta=ols, why="no spread in the runs to test against")

    def parts(gamma: float):
        k = gamma / (1 + gamma * counts)
        a = xtx - (s * k[:, None]).T @ s
        b = xty - (s * (k * t)[:, None]).sum(axis=0)
        c = yty - float((k * t * t).sum())
        beta = np.linalg.solve(a, b)
        return a, beta, max(c - float(b @ beta), 0.0)

    def objective(log_gamma: float) -> float:
        gamma = math.exp(log_gamma)
        a, _, rss = parts(gamma)
        if rss <= 0:
            return math.inf
        return (n - p) * math.log(rss) + float(np.log1p(gamma * counts).sum()) + np.linalg.slogdet(a)[1]

    grid = np.linspace(*_LOG_RATIO, 21)
    values = [objective(g) for g in grid]
    # where the likelihood is flat (components not separable) prefer a ratio of 1: well-conditioned
    best = int(np.argmin([v + 1e-9 * abs(g) for v, g in zip(values, grid)]))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    res = optimize.minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    log_gamma = float(res.x) if res.fun <= values[best] else float(grid[best])
    gamma = math.exp(log_gamma) if log_gamma > _LOG_RATIO[0] + 1e-3 else 0.0
    a, beta, rss = parts(gamma)
    sigma2 = rss / (n - p)
    cov = sigma2 * np.linalg.inv(a)
    var_init, var_train = gamma * sigma2, sigma2
    m_init, m_train, info = _information(xtx, s, counts, sigma2, gamma, cov)
    vals, vecs = np.linalg.eigh(info)
    tol = 1e-9 * max(float(vals.max()), 1e-300)
    null = vecs[:, vals <= tol].T
    vc_cov = np.linalg.pinv(info, hermitian=True, rcond=1e-9)
    return Fit(arms, n, nb, beta, cov, var_init, var_train, vc_cov, null, (m_init, m_train), df_between)


def _information(xtx: np.ndarray, s: np.ndarray, counts: np.ndarray, sigma2: float, gamma: float,
                 cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X'V⁻¹ V_i V⁻¹X for i = init, train, and the expected REML information ½ tr(P V_i P V_j), per block.

    In a block of n runs V⁻¹ = (I − k 11')/σ² and (I − k 11')^m = I − (1 − q^m)/n · 11', q = 1/(1 + γn),
    so every trace reduces to sums over blocks of p × p terms: no n × n matrix is ever formed.
    """
    q = 1 / (1 + gamma * counts)
    a = q / sigma2  # V_b⁻¹ 1 = a_b 1

    def x_vinv_x(m: int) -> np.ndarray:  # X'V⁻ᵐX
        return (xtx - (s * ((1 - q**m) / counts)[:, None]).T @ s) / sigma2**m

    m_train, v3 = x_vinv_x(2), x_vinv_x(3)
    m_init = (s * (a * a)[:, None]).T @ s  # X'V⁻¹ZZ'V⁻¹X
    scs = np.einsum("bi,ij,bj->b", s, cov, s)
    tr_v2 = float((counts - 1 + q * q).sum()) / sigma2**2
    i_tt = tr_v2 - 2 * np.trace(cov @ v3) + np.trace(cov @ m_train @ cov @ m_train)
    i_it = float((counts * a * a).sum()) - 2 * float((a**3 * scs).sum()) + np.trace(cov @ m_train @ cov @ m_init)
    i_ii = float(((counts * a) ** 2).sum()) - 2 * float((counts * a**3 * scs).sum()) \
        + np.trace(cov @ m_init @ cov @ m_init)
    return m_init, m_train, 0.5 * np.array([[i_ii, i_it], [i_it, i_tt]])


def _with(f: Fit, **changes) -> Fit:
    """A copy of a Fit with some fields changed."""
    return Fit(**{**f.__dict__, **changes})
