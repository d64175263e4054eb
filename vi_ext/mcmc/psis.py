"""Pareto-smoothed importance resampling: guide draws corrected towards the posterior.

With z_s ~ q and raw weights w_s = p(x, z_s) / q(z_s), self-normalized importance sampling
reweights the guide's draws to the posterior. Its variance is ruled by the largest weights,
so PSIS (Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto Smoothed Importance Sampling", JMLR
2024) replaces the M largest weights, M = min(S / 5, 3 sqrt(S)), by the expected order
statistics of a generalized Pareto distribution fitted to them, and truncates them at the
largest raw weight. The fitted shape k-hat says whether the correction can be trusted:

- k-hat < min(1 - 1 / log10(S), 0.7): the corrected draws are reliable;
- above it, the weights' variance is effectively infinite: the guide misses posterior mass
  that no amount of resampling restores (use ``refine()``).

The generalized Pareto fit is the empirical-Bayes estimate of Zhang & Stephens
(Technometrics 2009), with the weakly informative prior on k of Vehtari et al.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vi_ext.result import FitResult


def _fit_generalized_pareto(x: np.ndarray) -> tuple[float, float]:
    """Shape k and scale sigma of a generalized Pareto fitted to exceedances ``x`` (sorted,
    ascending, positive): Zhang & Stephens' posterior mean over a grid of
    theta = -k / sigma, then k shrunk towards 0.5 by a prior worth 10 observations."""
    n = len(x)
    m = 30 + int(np.sqrt(n))
    grid = 1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    quartile = x[int(n / 4 + 0.5) - 1]
    theta = grid / (3.0 * quartile) + 1.0 / x[-1]
    k = np.mean(np.log1p(-theta[:, None] * x[None, :]), axis=1)
    profile = n * (np.log(-theta / k) - k - 1.0)
    weights = 1.0 / np.sum(np.exp(profile[None, :] - profile[:, None]), axis=1)
    keep = weights >= 10 * np.finfo(float).eps
    weights, theta = weights[keep], theta[keep]
    theta_hat = np.sum(theta * weights / weights.sum())
    k_hat = float(np.mean(np.log1p(-theta_hat * x)))
    sigma = -k_hat / theta_hat
    k_hat = (n * k_hat + 10 * 0.5) / (n + 10)
    return k_hat, float(sigma)


def _gpd_quantile(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    if abs(k) < 1e-12:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k


def smooth(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, self-normalized log weights and the shape k-hat.

    Args:
        log_weights: [S] raw log importance weights (any additive constant).

    Returns:
        (log of normalized smoothed weights [S], k-hat). k-hat is ``inf`` when the tail has
        too few distinct values to fit (then the weights are only truncated).
    """
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim != 1 or lw.size < 5:
        raise ValueError(f"smooth(): need a 1-d array of at least 5 log weights, got shape "
                         f"{lw.shape}")
    if not np.any(np.isfinite(lw)):
        raise ValueError("smooth(): every log weight is non-finite (-inf or nan); the guide "
                         "puts no mass where the model has density.")
    lw = np.where(np.isnan(lw), -np.inf, lw)
    lw = lw - np.max(lw)
    s = lw.size
    tail_len = int(np.ceil(min(0.2 * s, 3.0 * np.sqrt(s))))
    order = np.argsort(lw)
    cutoff = max(lw[order[-tail_len - 1]], np.log(np.finfo(float).tiny))
    tail = order[lw[order] > cutoff]
    k_hat = np.inf
    if tail.size > 4:
        exceed = np.exp(lw[tail]) - np.exp(cutoff)
        k_hat, sigma = _fit_generalized_pareto(exceed)
        if np.isfinite(k_hat):
            p = (np.arange(tail.size) + 0.5) / tail.size
            lw[tail] = np.log(_gpd_quantile(p, k_hat, sigma) + np.exp(cutoff))
    lw = np.minimum(lw, 0.0)
    lw = lw - np.logaddexp.reduce(lw)
    return lw, float(k_hat)


def threshold(num_samples: int) -> float:
    """The largest k-hat at which PSIS is reliable with ``num_samples`` draws."""
    return float(min(1.0 - 1.0 / np.log10(num_samples), 0.7))


def systematic_resample(log_weights: np.ndarray, num: int, rng: np.random.Generator):
    """``num`` indices drawn in proportion to exp(log_weights) by systematic resampling (one
    uniform; lower variance than multinomial; Douc, Cappe & Moulines 2005)."""
    w = np.exp(log_weights - np.logaddexp.reduce(log_weights))
    cdf = np.cumsum(w)
    cdf[-1] = 1.0
    u = (rng.uniform() + np.arange(num)) / num
    return np.searchsorted(cdf, u, side="right").clip(0, len(w) - 1)


class Draws(dict):
    """Draws ``{site: [S, ...]}`` (a dict, like ``FitResult.sample``'s), with how they were
    corrected.

    Attributes:
        khat: Pareto k-hat of the importance weights (None for uncorrected draws).
        ess: effective sample size of the smoothed weights, 1 / sum_s w_s^2.
        num_proposals: guide draws the resample was taken from.
    """

    def __init__(self, draws, khat=None, ess=None, num_proposals=None):
        super().__init__(draws)
        self.khat = khat
        self.ess = ess
        self.num_proposals = num_proposals

    def __repr__(self) -> str:
        shapes = {k: tuple(np.shape(v)) for k, v in self.items()}
        return (f"Draws({shapes}, khat={self.khat}, ess={self.ess}, "
                f"num_proposals={self.num_proposals})")


def psis_sample(result: FitResult, num_samples: int, key,
                num_proposals: int | None = None) -> Draws:
    """``num_samples`` draws from the fitted guide, importance-resampled with PSIS weights.

    ``num_proposals`` guide draws (default ``max(4 * num_samples, 1000)``) are weighted by
    w = p(x, z) / q(z), Pareto-smoothed, and ``num_samples`` of them resampled
    systematically; deterministic sites are recomputed by the model. Warns when k-hat is
    above :func:`threshold`.
    """
    import warnings

    import jax
    from numpyro.infer import Predictive

    from vi_ext.diagnostics import weighted_draws
    from vi_ext.keys import as_key

    proposals = max(4 * num_samples, 1000) if num_proposals is None else num_proposals
    if isinstance(proposals, bool) or not isinstance(proposals, (int, np.integer)) \
            or proposals < 10:
        raise ValueError(f"sample(): num_proposals must be an int >= 10, got {proposals!r}")
    k_draw, k_pick, k_model = jax.random.split(as_key(key), 3)
    latents, lw = weighted_draws(result, int(proposals), k_draw)
    smoothed, khat = smooth(lw)
    seed = int(jax.random.randint(k_pick, (), 0, 2**31 - 1))
    idx = systematic_resample(smoothed, num_samples, np.random.default_rng(seed))
    chosen = {n: np.asarray(v)[idx] for n, v in latents.items()}
    names = result.site_names()
    out = Predictive(result.model, posterior_samples=chosen, params=result.params,
                     return_sites=names, batch_ndims=1)(k_model, *result.model_args,
                                                        **result.model_kwargs)
    draws = {n: np.asarray(out[n]) if n in out else chosen[n] for n in names
             if n in out or n in chosen}
    ess = float(1.0 / np.sum(np.exp(2 * smoothed)))
    limit = threshold(int(proposals))
    if not khat < limit:
        warnings.warn(
            f"PSIS k-hat = {khat:.2f} > {limit:.2f}: the importance weights have (nearly) "
            "infinite variance, so these corrected draws cannot be trusted. The guide misses "
            "posterior mass; use res.refine() for exact draws, or a richer guide.",
            UserWarning, stacklevel=3)
    return Draws(draws, khat=float(khat), ess=ess, num_proposals=int(proposals))
