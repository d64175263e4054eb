"""Continuation requests: how a strategy asks for "the rest of the program".

Enumeration needs the program's value for every value of a site; measure-valued derivatives
need it at coupled pairs of values. In the surrogate route the rest of the program is
obtained by running the program again with the site's value fixed (an *override*), with the
same key, so that every other site sees the same random numbers (common random numbers keep
the estimate unbiased: the other sites' draws are independent of the fixed value's choice).

A strategy that needs this returns a placeholder value from ``sample`` and files a
:class:`Request` with the frame; the transformation then calls
``strategy.answer(request, run)``, where ``run(overrides) -> (surrogate, value)`` evaluates
the whole program with ``overrides`` fixed (answering later requests recursively).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vi_ext.errors import SiteError
from vi_ext.estimators.base import Site
from vi_ext.program.context import current_frame


class Request(NamedTuple):
    """A site whose strategy needs re-runs of the program.

    Attributes:
        site: the site.
        value: the value drawn in the run that filed the request (gradient stopped).
        key: a key reserved for the strategy's own draws (coupled samples).
        strategy: the strategy that will answer.
    """

    site: Site
    value: jax.Array
    key: jax.Array
    strategy: Any


def file_request(strategy: Any, site: Site, key: jax.Array) -> jax.Array:
    """Draw a placeholder value and file a request; errors inside particles."""
    frame = current_frame(strategy.name)
    if frame.in_particles:
        raise SiteError(
            site.name,
            f"{strategy.name}() re-runs the rest of the program, which is not supported for "
            "sites drawn inside vx.program.particles (the joint re-runs grow exponentially "
            "with the number of particles). Use it with a single-particle objective such as "
            "vx.objectives.elbo(), or use vx.estimators.reinforce('loo') here.",
        )
    k_draw, k_own = jax.random.split(key)
    value = jax.lax.stop_gradient(site.fn.sample(k_draw, site.sample_shape))
    frame.requests.append(Request(site, value, k_own, strategy))
    return value


def base_distribution(fn):
    """The distribution under ExpandedDistribution (plates) and Independent wrappers."""
    import numpyro.distributions as dist

    while isinstance(fn, (dist.ExpandedDistribution, dist.Independent)):
        fn = fn.base_dist
    return fn


def value_shape(site: Site) -> tuple[int, ...]:
    """sample_shape + batch_shape + event_shape of a site."""
    return tuple(site.sample_shape) + tuple(site.fn.batch_shape) + tuple(site.fn.event_shape)


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


def run_many(run, name: str, values: jax.Array):
    """Vectorized re-runs with the site fixed to each of ``values`` (leading axis)."""
    return jax.vmap(lambda v: run({name: v}))(values)
