"""Approximate normalization by self-normalized importance sampling (SIR).

With K draws z_k ~ r from a proposal and weights w_k = p(x, z_k) / r(z_k),

    p(z | x) ~= sum_k w~_k delta_{z_k},   w~_k = w_k / sum_j w_j,
    log p(x) ~= log (1/K) sum_k w_k.

Draws and weights carry no gradient: the wake-sleep objectives differentiate only the
densities they evaluate at the draws. Sites are drawn with NumPyro's own samplers (no
gradient strategy is involved), so discrete sites need nothing special.

Reference: Bornschein & Bengio, "Reweighted Wake-Sleep", ICLR 2015; Le, Kosiorek,
Siddharth, Teh & Wood, "Revisiting Reweighted Wake-Sleep for Models with Stochastic Control
Flow", UAI 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from numpyro import handlers

from vi_ext.errors import ArgumentError
from vi_ext.program.context import current_frame
from vi_ext.program.primitives import density
from vi_ext.program.sites import sample_sites, site_log_prob

sg = jax.lax.stop_gradient


class Normalized(NamedTuple):
    """A weighted particle approximation of the posterior.

    Attributes:
        values: site name -> draws, shape [K, ...] (no gradient).
        weights: self-normalized importance weights, shape [K], summing to one.
        log_evidence: log (1/K) sum_k w_k, an estimate of log p(x) (no gradient).
    """

    values: dict[str, jax.Array]
    weights: jax.Array
    log_evidence: jax.Array

    def resample(self, key: jax.Array) -> dict[str, jax.Array]:
        """One draw from the weighted particles (the R of SIR)."""
        k = jax.random.categorical(key, jnp.log(self.weights))
        return {n: v[k] for n, v in self.values.items()}


def normalize(
    model: Callable, proposal: Callable, *args: Any, num_particles: int = 5, **kwargs: Any
) -> Normalized:
    """Weighted draws approximating the model's posterior, with proposal ``proposal``.

    Args:
        model: the NumPyro model (observations in its arguments).
        proposal: a NumPyro guide that samples every latent site of the model.
        *args: positional arguments of model and proposal.
        num_particles: K.
        **kwargs: keyword arguments of model and proposal.
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ArgumentError("num_particles", f"expected an int >= 1, got {num_particles!r}")
    frame = current_frame("normalize")
    keys = jax.random.split(frame.next_key(), num_particles)
    params = jax.tree_util.tree_map(sg, frame.params)

    def draw(key):
        fn = handlers.seed(handlers.substitute(proposal, data=params), key)
        trace = handlers.trace(fn).get_trace(*args, **kwargs)
        latent = list(sample_sites(trace, observed=False))
        values = {s["name"]: sg(s["value"]) for s in latent}
        log_r = sum((site_log_prob(s) for s in latent), jnp.zeros(()))
        return values, sg(log_r)

    values, log_r = jax.vmap(draw)(keys)
    log_p = jax.vmap(lambda v: sg(density(model, v, *args, **kwargs)))(values)
    log_w = log_p - log_r
    weights = jnp.exp(log_w - logsumexp(log_w))
    return Normalized(values, weights, logsumexp(log_w) - jnp.log(num_particles))
