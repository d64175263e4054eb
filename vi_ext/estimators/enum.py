"""Enumeration: exact expectation over a finite-support site.

    E_{q(z)}[F(z)] = sum_v q(v) F(v),   d/dphi = sum_v [ dq(v)/dphi F(v) + q(v) dF(v)/dphi ]

The program is re-run with the site fixed to every value of its (joint) support, vectorized
with ``vmap``; the surrogate is sum_v q(v) S(v), where S(v) is the surrogate of the re-run.
Sites inside plates are enumerated jointly (K^N values for N positions with K values each);
past ``max_values`` joint values the strategy refuses with an error.

Reference: Lew et al., "ADEV", POPL 2023 (enumeration as a strategy with a continuation);
NumPyro's TraceEnum_ELBO for enumeration in variational inference.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vi_ext.errors import SiteError
from vi_ext.estimators.base import Site
from vi_ext.estimators.continuation import (
    Request,
    base_distribution,
    file_request,
    run_many,
    value_shape,
)

sg = jax.lax.stop_gradient


class Enum:
    """The enumeration strategy; see :func:`enum`."""

    name = "enum"

    def __init__(self, max_values: int = 4096):
        self.max_values = int(max_values)

    def __repr__(self) -> str:
        return f"enum(max_values={self.max_values})"

    def sample(self, site: Site, key: jax.Array) -> jax.Array:
        fn = base_distribution(site.fn)
        if not getattr(fn, "has_enumerate_support", False):
            raise SiteError(
                site.name,
                f"enum() was asked of a {type(fn).__name__} distribution, whose support is not "
                "finite. Use vx.estimators.reparam() for continuous sites, or reinforce()/mvd().",
            )
        if tuple(fn.event_shape) != ():
            raise SiteError(
                site.name,
                f"enum() needs scalar-valued draws; {type(fn).__name__} has event shape "
                f"{tuple(fn.event_shape)}. Use Categorical instead of OneHotCategorical.",
            )
        size = jnp.shape(fn.enumerate_support(expand=False))[0]
        positions = math.prod(value_shape(site))
        if size**positions > self.max_values:
            raise SiteError(
                site.name,
                f"enum() would need {size}^{positions} joint values (more than "
                f"max_values={self.max_values}). Use mvd() or reinforce() for this site, or "
                "raise max_values.",
            )
        return file_request(self, site, key)

    def answer(self, request: Request, run):
        site = request.site
        shape = value_shape(site)
        support = jnp.reshape(base_distribution(site.fn).enumerate_support(expand=False), (-1,))
        positions = math.prod(shape)
        # static joint index grid, [S^P, P]; the support values themselves may be traced
        grid = np.array(list(itertools.product(range(support.shape[0]), repeat=positions)))
        values = support[grid].astype(request.value.dtype).reshape((len(grid),) + shape)
        log_q = jax.vmap(lambda v: jnp.sum(site.fn.log_prob(v)))(values)
        weights = jnp.exp(log_q)
        surrogates, vals = run_many(run, site.name, values)
        return jnp.sum(weights * surrogates), jnp.sum(sg(weights) * vals)


def enum(max_values: int = 4096) -> Enum:
    """Exact enumeration of a finite-support site (Bernoulli, Categorical, Binomial, ...).

    Args:
        max_values: refuse (with an error) sites whose joint support is larger.

    Example:
        >>> vx.estimate(vx.objectives.elbo(), model, guide, params, data,
        ...             estimators={"z": vx.estimators.enum()})
    """
    return Enum(max_values)
