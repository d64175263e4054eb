"""Helpers for strategies that need "the rest of the program" (``Draw(continuation=True)``).

Enumeration needs the program's value for every value of a draw; measure-valued derivatives
need it at coupled pairs of values. In the surrogate route the rest of the program is
obtained by running the whole program again with the draw's value pinned, by its address,
with the same key, so that every other draw sees the same random numbers (common random
numbers keep the estimate unbiased: the other draws' noise is independent of the pinned
value's choice). The transformation hands the strategy's ``answer(view, run)`` a function
``run({address: value}) -> (surrogate, value)`` that does this (answering later continuation
draws recursively).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vi_ext.estimators.base import Site


def base_distribution(fn):
    """The distribution under ExpandedDistribution (plates) and Independent wrappers."""
    import numpyro.distributions as dist

    while isinstance(fn, (dist.ExpandedDistribution, dist.Independent)):
        fn = fn.base_dist
    return fn


def value_shape(site: Site) -> tuple[int, ...]:
    """sample_shape + batch_shape + event_shape of a site."""
    return tuple(site.sample_shape) + tuple(site.fn.batch_shape) + tuple(site.fn.event_shape)


def placeholder(site: Site, key: jax.Array) -> jax.Array:
    """A draw of the site with its gradient stopped (for strategies that pin the value)."""
    return jax.lax.stop_gradient(site.fn.sample(key, site.sample_shape))


def with_positions(value: jax.Array, replacements: jax.Array) -> jax.Array:
    """Stack of copies of ``value``, copy i with flat position i set to replacements[i].

    Args:
        value: shape S.
        replacements: shape [prod(S)].

    Returns:
        shape [prod(S), *S].
    """
    flat = value.reshape(-1)
    n = flat.shape[0]
    eye = jnp.eye(n, dtype=bool)
    stacked = jnp.where(eye, replacements[:, None].astype(flat.dtype), flat[None, :])
    return stacked.reshape((n,) + value.shape)


def run_many(run, address: tuple, values: jax.Array):
    """Vectorized re-runs with the draw at ``address`` pinned to each of ``values``."""
    return jax.vmap(lambda v: run({address: v}))(values)
