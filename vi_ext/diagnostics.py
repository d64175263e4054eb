"""Diagnostics of a fitted guide: is q good enough, and how noisy were its gradients?

- :func:`log_weights`: log w_s = log p(x, z_s) - log q(z_s) for z_s ~ q, the raw material.
- :func:`elbo`: the ELBO, mean of log w, with its Monte Carlo standard error.
- :func:`psis_khat`: Pareto k-hat of the importance weights w (Yao, Vehtari, Simpson &
  Gelman, "Yes, but did it work?", ICML 2018), over several seeds: k < 0.5 good, 0.5-0.7
  usable, > 0.7 the guide misses mass the posterior has (ArviZ's PSIS,
  :func:`vi_ext.arviz_data.pareto_smooth`).
- :func:`gradient_variance`: per parameter, the trace of the covariance of the objective's
  gradient estimator at the fitted parameters (what the strategies are for).
- :func:`log_predictive`: log pointwise predictive density,
  sum_n log (1/S) sum_s p(y_n | z_s), z_s ~ q (Gelman, Hwang & Vehtari, 2014).

Each function takes a fitted guide (:class:`~vi_ext.traces.Fitted`: a
:class:`~vi_ext.result.FitResult`, boosted mixtures included); ``FitResult`` has them as
methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.infer import Predictive
from numpyro.infer.util import log_likelihood

from vi_ext.arviz_data import pareto_smooth
from vi_ext.keys import as_key
from vi_ext.program.enumerate import model_log_density
from vi_ext.program.sites import sample_sites, site_log_prob
from vi_ext.program.transform import estimate
from vi_ext.traces import Fitted, guide_trace, latent_values


class Estimate(NamedTuple):
    """A Monte Carlo estimate and its standard error."""

    value: float
    se: float


class KHat(NamedTuple):
    """Pareto k-hat over several seeds.

    Attributes:
        values: k-hat per seed.
        mean, max: over seeds.
        verdict: "good" (max < 0.5), "ok" (< 0.7) or "unreliable".
    """

    values: tuple
    mean: float
    max: float
    verdict: str


def khat_summary(values) -> KHat:
    """KHat of per-seed k-hat values: mean, max and the verdict of the worst one."""
    values = tuple(float(v) for v in values)
    worst = max(values)
    verdict = "good" if worst < 0.5 else "ok" if worst < 0.7 else "unreliable"
    return KHat(values, float(np.mean(values)), float(worst), verdict)


def _check_num(n: Any, name: str, least: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < least:
        raise ValueError(f"{name} must be an int >= {least}, got {n!r}")
    return int(n)


def weighted_draws(result: Fitted, num_samples: int = 1000,
                   key: Any = 0) -> tuple[dict, np.ndarray]:
    """Guide draws z_s of the latent sites and their log weights log p(x, z_s) - log q(z_s).

    Returns:
        ({site: [num_samples, ...]} constrained latent values, log weights [num_samples]).
    """
    num_samples = _check_num(num_samples, "num_samples")
    model, guide, params = result.model, result.guide, result.params
    args, kwargs = result.model_args, result.model_kwargs

    def one(k):
        kq, kp = jax.random.split(k)
        gtr = guide_trace(guide, params, args, kwargs, kq)
        latents = latent_values(gtr)
        log_q = sum((site_log_prob(s) for s in sample_sites(gtr)), jnp.zeros(()))
        # enumerated model sites the guide does not sample are summed out
        log_p = model_log_density(handlers.substitute(model, data=params), latents, kp,
                                  *args, **kwargs)
        return latents, log_p - log_q

    keys = jax.random.split(as_key(key), num_samples)
    latents, lw = jax.jit(jax.vmap(one))(keys)
    return latents, np.asarray(lw, dtype=np.float64)


def log_weights(result: Fitted, num_samples: int = 1000, key: Any = 0) -> np.ndarray:
    """log p(x, z_s) - log q(z_s) for ``num_samples`` draws z_s from the fitted guide."""
    return weighted_draws(result, num_samples, key)[1]


def elbo(result: Fitted, num_samples: int = 1000, key: Any = 0) -> Estimate:
    """The ELBO of the fitted guide, E_q[log p(x, z) - log q(z)], with its standard error."""
    num_samples = _check_num(num_samples, "num_samples", least=2)
    lw = log_weights(result, num_samples, key)
    if not np.all(np.isfinite(lw)):  # the mean says how (nan or -inf); no finite error bar
        return Estimate(float(np.mean(lw)), float("nan"))
    return Estimate(float(np.mean(lw)), float(np.std(lw, ddof=1) / np.sqrt(len(lw))))


def psis_khat(result: Fitted, num_samples: int = 1000,
              seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> KHat:
    """Pareto k-hat of the importance weights p/q, estimated once per seed.

    One seed's k-hat is noisy (its tail fit uses the largest ~20% of the weights); the spread
    over seeds shows how much to trust it. The weights are :func:`log_weights`; the fit is
    ArviZ's PSIS (:func:`vi_ext.arviz_data.pareto_smooth`).
    """
    num_samples = _check_num(num_samples, "num_samples", least=10)
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("psis_khat(): seeds must name at least one seed")
    return khat_summary(pareto_smooth(log_weights(result, num_samples, s))[1] for s in seeds)


def gradient_variance(result: Any, num_samples: int = 100, key: Any = 0) -> dict[str, float]:
    """Per parameter: the summed per-element variance of the gradient estimator.

    The estimator is the one the fit used (its objective and strategies), evaluated at the
    fitted (constrained) parameters over ``num_samples`` independent keys.
    """
    num_samples = _check_num(num_samples, "num_samples", least=2)

    def one(k):
        return estimate(result.objective, result.model, result.guide, result.params,
                        *result.model_args, key=k, estimators=dict(result.estimators),
                        **result.model_kwargs)[1]

    keys = jax.random.split(as_key(key), num_samples)
    grads = jax.jit(jax.vmap(one))(keys)
    return {n: float(jnp.sum(jnp.var(g, axis=0, ddof=1))) for n, g in grads.items()}


def log_predictive(result: Fitted, *args: Any, num_samples: int = 1000, key: Any = 0,
                   pointwise: bool = False, **kwargs: Any):
    """Log predictive density of data under the fitted guide's posterior predictive.

        lppd = sum_n log (1/S) sum_s p(y_n | z_s),   z_s ~ q

    Args:
        *args: the model's positional arguments with the data to score; with no arguments
            at all, the data the fit used (in-sample lppd).
        **kwargs: the model's keyword arguments (observations included).
        num_samples: draws S from the guide.
        key: a seed or key.
        pointwise: return ``{observed site: per-observation log density}`` instead of the
            total.

    The guide is run on the fit's own arguments (global latents do not depend on new data).
    """
    num_samples = _check_num(num_samples, "num_samples")
    if not args and not kwargs:
        args, kwargs = result.model_args, result.model_kwargs
    draws = Predictive(result.guide, params=result.params, num_samples=num_samples)(
        as_key(key), *result.model_args, **result.model_kwargs)
    model = handlers.substitute(result.model, data=result.params)
    ll = log_likelihood(model, draws, *args, **kwargs)
    if not ll:
        raise ValueError("log_predictive(): the model has no observed sites with these "
                         "arguments; pass the observations as model arguments.")
    per_site = {n: np.asarray(logsumexp(v, axis=0) - np.log(num_samples)) for n, v in
                ll.items()}
    if pointwise:
        return per_site
    return float(sum(np.sum(v) for v in per_site.values()))
