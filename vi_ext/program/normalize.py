"""Approximate normalization by self-normalized importance sampling (SIR).

With K draws z_k ~ r from a proposal and weights w_k = p(x, z_k) / r(z_k),

    p(z | x) ~= sum_k w~_k delta_{z_k},   w~_k = w_k / sum_j w_j,
    log p(x) ~= log (1/K) sum_k w_k.

The proposal is a fixed sampler: its draws and its density are taken at the current
parameters held constant (no gradient flows through them), and its sites are drawn with
NumPyro's own samplers, so discrete sites need no strategy. The model's density is live:
``log_evidence`` and ``weights`` are differentiable in the model's parameters, so that

    d/dtheta log_evidence = sum_k w~_k d/dtheta log p_theta(x, z_k),

the model's wake-phase gradient of reweighted wake-sleep (and exactly the theta-gradient of
the K-particle importance-weighted bound, which does not depend on theta through the draws).
:meth:`Normalized.expect` averages any function of the draws under the weights, the guide's
wake-phase objective being ``expect(lambda z: density(guide, z))``.

Reference: Bornschein & Bengio, "Reweighted Wake-Sleep", ICLR 2015; Le, Kosiorek,
Siddharth, Teh & Wood, "Revisiting Reweighted Wake-Sleep for Models with Stochastic Control
Flow", UAI 2019; Becker et al., PLDI 2024 (normalize as a language construct).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from numpyro import handlers

from vi_ext.errors import require_int
from vi_ext.program.context import current_frame
from vi_ext.program.primitives import density, particles
from vi_ext.program.sites import sample_sites, site_log_prob

sg = jax.lax.stop_gradient


class Normalized(NamedTuple):
    """A weighted particle approximation of the posterior.

    Attributes:
        values: site name -> draws, shape [K, ...] (no gradient).
        weights: self-normalized importance weights, shape [K], summing to one
            (differentiable in the model's parameters).
        log_evidence: log (1/K) sum_k w_k, an estimate of log p(x) (differentiable in the
            model's parameters).
    """

    values: dict[str, jax.Array]
    weights: jax.Array
    log_evidence: jax.Array

    def resample(self, key: jax.Array) -> dict[str, jax.Array]:
        """One draw from the weighted particles (the R of SIR)."""
        k = jax.random.categorical(key, jnp.log(sg(self.weights)))
        return {n: v[k] for n, v in self.values.items()}

    def expect(self, fn: Callable[[dict], jax.Array], *, stop_weights: bool = True
               ) -> jax.Array:
        """sum_k w~_k fn(z_k), with ``fn`` run once per particle inside the program (so it
        may call :func:`~vi_ext.program.density`). ``stop_weights``: hold the weights
        constant (the guide's wake phase differentiates fn only)."""
        out = particles(self.values_count, fn, over=self.values)
        w = sg(self.weights) if stop_weights else self.weights
        return jnp.sum(w * out)

    @property
    def values_count(self) -> int:
        return int(jnp.shape(self.weights)[0])


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
    require_int(num_particles, "num_particles", 1, "normalize")
    frame = current_frame("normalize")
    still = jax.tree_util.tree_map(sg, frame.params)

    def one():
        key = current_frame("normalize").next_key()
        fn = handlers.seed(handlers.substitute(proposal, data=still), key)
        with handlers.block():
            trace = handlers.trace(fn).get_trace(*args, **kwargs)
        latent = list(sample_sites(trace, observed=False))
        values = {s["name"]: sg(s["value"]) for s in latent}
        log_r = sg(sum((site_log_prob(s) for s in latent), jnp.zeros(())))
        return values, density(model, values, *args, **kwargs) - log_r

    values, log_w = particles(num_particles, one)
    weights = jnp.exp(log_w - logsumexp(log_w))
    return Normalized(values, weights, logsumexp(log_w) - jnp.log(num_particles))
