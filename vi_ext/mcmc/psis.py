"""Pareto-smoothed importance resampling: guide draws corrected towards the posterior.

With z_s ~ q and raw weights w_s = p(x, z_s) / q(z_s), self-normalized importance sampling
reweights the guide's draws to the posterior. Its variance is ruled by the largest weights,
so PSIS (Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto Smoothed Importance Sampling", JMLR
2024) smooths them; the fitted shape k-hat says whether the correction can be trusted:

- k-hat < min(1 - 1 / log10(S), 0.7): the corrected draws are reliable;
- above it, the weights' variance is effectively infinite: the guide misses posterior mass
  that no amount of resampling restores (use ``refine()``).

The smoothing is ArviZ's (:func:`vi_ext.arviz_data.pareto_smooth`), the one PSIS of vi_ext.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
from numpyro.infer import Predictive

from vi_ext.arviz_data import pareto_smooth as smooth
from vi_ext.arviz_data import psis_threshold as threshold
from vi_ext.diagnostics import weighted_draws
from vi_ext.keys import as_key
from vi_ext.traces import Fitted, replayed_traces, site_names

__all__ = ["Draws", "psis_sample", "smooth", "systematic_resample", "threshold"]


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


def psis_sample(result: Fitted, num_samples: int, key,
                num_proposals: int | None = None) -> Draws:
    """``num_samples`` draws from the fitted guide, importance-resampled with PSIS weights.

    ``num_proposals`` guide draws (default ``max(4 * num_samples, 1000)``) are weighted by
    w = p(x, z) / q(z), Pareto-smoothed, and ``num_samples`` of them resampled
    systematically; deterministic sites are recomputed by the model. Warns when k-hat is
    above :func:`threshold`.
    """
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
    names = site_names(replayed_traces(result.model, result.guide, result.params,
                                       result.model_args, result.model_kwargs, as_key(0))[1])
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
