"""From a fitted guide to what BlackJAX needs to sample the same model exactly.

The sampler works on the flat unconstrained latent vector x in R^D (sites in the order of
``unravel``). The target is NumPyro's own potential energy U(x), built by
``numpyro.infer.util.initialize_model`` with the Jacobians of the bijections from R^D to
each site's support, so

    log pi(x) = -U(x) = log p(data, T(x)) + log |det J_T(x)|.

The fit supplies the two things a cold-started sampler spends its warmup learning:

- initial positions x_c ~ q, one per chain (guide draws, mapped to R^D with each model
  site's ``biject_to(support).inv``), already in the bulk of the posterior;
- an inverse mass matrix M^{-1} = Cov_q[x], the guide's covariance on R^D: the diagonal for
  mean-field guides, the full matrix for guides with correlations (``AutoContinuous``
  guides other than ``AutoDiagonalNormal``, boosted mixtures). It is estimated from
  ``num_draws`` guide draws under a fixed key, which works for any guide; the relative error
  of a variance estimate is sqrt(2 / num_draws), about 2% at the default, far below what
  matters for a mass matrix (Stan regularizes its own estimate more than that).

Discrete latent sites cannot move under HMC. A discrete site marked
``infer={"enumerate": "parallel"}`` is summed out of the log density (NumPyro's enumeration,
which needs ``funsor``); any other discrete site is refused with a :class:`SiteError` that
names it. Parameters of the model itself (``numpyro.param`` sites, e.g. fitted
hyperparameters) are held at their fitted values.

Reference: Hoffman & Gelman, "The No-U-Turn Sampler", JMLR 2014 (the mass matrix is the
posterior covariance on the unconstrained space); Stan Reference Manual, "HMC algorithm
parameters".
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer.autoguide import AutoContinuous, AutoDiagonalNormal

from vi_ext.errors import ArgumentError
from vi_ext.flat import from_model
from vi_ext.keys import as_key
from vi_ext.traces import Fitted, guide_trace, latent_values, prior_trace


class SamplingProblem(NamedTuple):
    """Everything BlackJAX needs to sample the fitted model, on the flat unconstrained space.

    Attributes:
        logdensity_fn: x [D] -> log pi(x), the unnormalized log posterior on R^D (with the
            Jacobians of the constraining maps).
        initial_positions: [num_chains, D] guide draws mapped to R^D.
        inverse_mass_matrix: [D] (diagonal) or [D, D] (dense), the guide's covariance on R^D.
        constrain: x [..., D] -> {site: value} with every latent and deterministic site of
            the model, in the constrained space (vectorized over leading axes).
        unravel: x [D] -> {site: unconstrained value}.
        dim: D.
        sites: names of the continuous latent sites that make up x, in order.
    """

    logdensity_fn: Callable
    initial_positions: jax.Array
    inverse_mass_matrix: jax.Array
    constrain: Callable
    unravel: Callable
    dim: int
    sites: tuple


def _nuts_advice(site: dict) -> str:
    advice = ("NUTS only moves continuous latents, so enumeration comes first. Mark the site "
              "infer={'enumerate': 'parallel'} (or wrap the model in "
              "numpyro.contrib.funsor.config_enumerate) so that it is summed out of the log "
              "density, or marginalize it by hand in the model.")
    if not site["fn"].has_enumerate_support:
        advice += (" This distribution has no finite support to enumerate: rewrite the model "
                   "so that the site is continuous or integrated out.")
    return advice


def sampling_model(result: Fitted) -> Callable:
    """The fitted model with its own ``numpyro.param`` sites held at the fitted values."""
    tr = prior_trace(result.model, result.model_args, result.model_kwargs, as_key(0))
    held = {n: result.params[n] for n, s in tr.items()
            if s["type"] == "param" and n in result.params}
    return handlers.substitute(result.model, data=held) if held else result.model


def _guide_draws(result: Fitted, num_draws: int, key) -> dict:
    """Constrained draws of the guide's latent sites, ``{site: [num_draws, ...]}``."""

    def one(k):
        return latent_values(guide_trace(result.guide, result.params, result.model_args,
                                         result.model_kwargs, k, validate=False))

    return jax.vmap(one)(jax.random.split(key, num_draws))


def _is_dense(guide) -> bool:
    return isinstance(guide, AutoContinuous) and not isinstance(guide, AutoDiagonalNormal)


def to_blackjax(result: Fitted, num_chains: int = 4, key: Any = 0, dense: bool | None = None,
                num_draws: int = 1000) -> SamplingProblem:
    """The fitted model as a :class:`SamplingProblem` for BlackJAX, warmed by the guide.

    Args:
        result: a fitted guide (a :class:`~vi_ext.result.FitResult`).
        num_chains: how many initial positions to draw from the guide.
        key: a seed or key for the initial positions and the covariance draws.
        dense: dense (True) or diagonal (False) inverse mass matrix; by default it matches
            the guide (dense for guides with correlations).
        num_draws: guide draws used to estimate the covariance.

    Raises:
        SiteError: for a discrete latent site that is not marked for enumeration, or a
            continuous latent site the guide does not sample.

    Example::

        problem = res.to_blackjax(num_chains=4)
        nuts = blackjax.nuts(problem.logdensity_fn, step_size=0.5,
                             inverse_mass_matrix=problem.inverse_mass_matrix)
        state = nuts.init(problem.initial_positions[0])
        state, info = nuts.step(jax.random.key(1), state)
        problem.constrain(state.position)          # {site: constrained value}
    """
    for name, n, least in (("num_chains", num_chains, 1), ("num_draws", num_draws, 2)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < least:
            raise ArgumentError(name, f"expected an int >= {least}, got {n!r}.")
    if dense is not None and not isinstance(dense, bool):
        raise ArgumentError("dense", f"expected True, False or None, got {dense!r}.")
    dense = _is_dense(result.guide) if dense is None else dense
    k_init, k_pos, k_cov = jax.random.split(as_key(key), 3)
    flat = from_model(sampling_model(result), result.model_args, result.model_kwargs, k_init,
                      discrete=_nuts_advice, allow_enumerated=True)

    def flat_draws(k, n):
        return jax.vmap(flat.to_flat)(_guide_draws(result, n, k))

    positions = flat_draws(k_pos, num_chains)
    x = flat_draws(k_cov, num_draws)
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ArgumentError("result", "guide draws map to non-finite unconstrained values; "
                                      "the fitted guide is broken (check res.params).")
    imm = _covariance(x, dense)
    dim = flat.dim

    def constrain(xs):
        xs = jnp.asarray(xs)
        out = jax.vmap(flat.constrain)(xs.reshape(-1, dim))
        return {n: v.reshape(xs.shape[:-1] + v.shape[1:]) for n, v in out.items()}

    return SamplingProblem(flat.log_density, positions, imm, constrain, flat.unravel, dim,
                           flat.sites)


def _covariance(x: jax.Array, dense: bool) -> jax.Array:
    """Cov[x] from draws ``[n, D]``, diagonal or full; directions the guide does not spread
    (a point-mass guide) get variance 1 with a warning."""
    n = x.shape[0]
    centered = x - jnp.mean(x, axis=0)
    var = jnp.sum(centered**2, axis=0) / (n - 1)
    flat = var <= 1e-12 * jnp.maximum(1.0, jnp.max(var))
    if bool(jnp.any(flat)):
        warnings.warn(f"the guide has no spread in {int(jnp.sum(flat))} of {x.shape[1]} "
                      "unconstrained directions (a point-mass guide such as AutoDelta?); the "
                      "inverse mass matrix uses 1.0 there. refine(adapt='window') learns it.",
                      UserWarning, stacklevel=3)
    if not dense:
        return jnp.where(flat, 1.0, var)
    cov = centered.T @ centered / (n - 1)
    fix = jnp.where(flat, 1.0, 0.0)
    cov = jnp.where(flat[:, None] | flat[None, :], 0.0, cov) + jnp.diag(fix)
    return 0.5 * (cov + cov.T)
