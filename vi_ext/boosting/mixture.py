"""Mixtures of diagonal Gaussians over a flat unconstrained latent space.

    q(z) = sum_t w_t N(z; m_t, diag(s_t^2)),    w on the simplex

stored with a fixed capacity T (unused slots have weight 0, log weight -inf), so every
boosting iteration reuses one compiled program. The log density is computed in log space,
log q(z) = logsumexp_t [log w_t + log N(z; m_t, s_t)], and is exact.

The squared L2 distance between mixtures, ||q - r||^2 = <q,q> - 2<q,r> + <r,r>, is closed
form because int N(z; a, A) N(z; b, B) dz = N(a; b, A + B); it is returned as a log, since
in many dimensions it under- or overflows.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

_LOG_2PI = jnp.log(2.0 * jnp.pi)


class Mixture(NamedTuple):
    """A mixture of diagonal Gaussians (a pytree).

    Attributes:
        log_weights: [T] log mixture weights (-inf for unused slots).
        locs: [T, D] component means.
        log_scales: [T, D] log standard deviations.
    """

    log_weights: jax.Array
    locs: jax.Array
    log_scales: jax.Array

    @property
    def weights(self) -> jax.Array:
        return jnp.exp(self.log_weights)

    @property
    def num_active(self) -> jax.Array:
        return jnp.sum(jnp.isfinite(self.log_weights))


def empty(capacity: int, dim: int) -> Mixture:
    """A mixture with no components yet (capacity slots of dimension dim)."""
    return Mixture(jnp.full((capacity,), -jnp.inf), jnp.zeros((capacity, dim)),
                   jnp.zeros((capacity, dim)))


def gaussian_log_prob(z: jax.Array, loc: jax.Array, log_scale: jax.Array) -> jax.Array:
    """log N(z; loc, diag(exp(log_scale))^2), summed over the last axis."""
    eps = (z - loc) * jnp.exp(-log_scale)
    return jnp.sum(-0.5 * eps**2 - log_scale - 0.5 * _LOG_2PI, axis=-1)


def log_prob(mix: Mixture, z: jax.Array) -> jax.Array:
    """log q(z) for z of shape [..., D]."""
    lp = gaussian_log_prob(z[..., None, :], mix.locs, mix.log_scales)  # [..., T]
    return logsumexp(lp + mix.log_weights, axis=-1)


def sample(mix: Mixture, key: jax.Array, n: int) -> jax.Array:
    """n draws [n, D] from the mixture."""
    kc, kz = jax.random.split(key)
    c = jax.random.categorical(kc, mix.log_weights, shape=(n,))
    eps = jax.random.normal(kz, (n, mix.locs.shape[1]))
    return mix.locs[c] + jnp.exp(mix.log_scales[c]) * eps


def add(mix: Mixture, slot: int, loc: jax.Array, log_scale: jax.Array,
        gamma: jax.Array) -> Mixture:
    """(1 - gamma) q + gamma s, with the component s written into ``slot``."""
    w = jnp.exp(mix.log_weights) * (1.0 - gamma)
    w = w.at[slot].set(gamma)
    return Mixture(jnp.log(w), mix.locs.at[slot].set(loc),
                   mix.log_scales.at[slot].set(log_scale))


def _log_overlaps(locs_a, log_scales_a, locs_b, log_scales_b) -> jax.Array:
    """log int N(z; a_i) N(z; b_j) dz = log N(a_i; b_j, A_i + B_j), shape [Ta, Tb]."""
    var = jnp.exp(2 * log_scales_a)[:, None, :] + jnp.exp(2 * log_scales_b)[None, :, :]
    diff = locs_a[:, None, :] - locs_b[None, :, :]
    return jnp.sum(-0.5 * diff**2 / var - 0.5 * jnp.log(var) - 0.5 * _LOG_2PI, axis=-1)


def log_inner(p: Mixture, q: Mixture) -> jax.Array:
    """log <p, q> = log int p(z) q(z) dz."""
    lo = _log_overlaps(p.locs, p.log_scales, q.locs, q.log_scales)
    return logsumexp(lo + p.log_weights[:, None] + q.log_weights[None, :])


def log_sq_distance(p: Mixture, q: Mixture) -> jax.Array:
    """log ||p - q||^2 in L2, from the three inner products, stably in log space."""
    a, b, c = log_inner(p, p), log_inner(p, q), log_inner(q, q)
    m = jnp.maximum(jnp.maximum(a, b), c)
    d = jnp.exp(a - m) - 2.0 * jnp.exp(b - m) + jnp.exp(c - m)
    return m + jnp.log(jnp.maximum(d, jnp.finfo(d.dtype).tiny))


def single(loc: jax.Array, log_scale: jax.Array) -> Mixture:
    """The one-component mixture N(loc, diag(exp(log_scale))^2)."""
    return Mixture(jnp.zeros((1,)), loc[None], log_scale[None])
