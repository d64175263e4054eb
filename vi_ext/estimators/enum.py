"""Enumeration: exact expectation over a finite-support site.

    E_{q(z)}[F(z)] = sum_v q(v) F(v),   d/dphi = sum_v [ dq(v)/dphi F(v) + q(v) dF(v)/dphi ]

The program is re-run with the draw pinned (by its address: other draws of the same site,
in other ``sim`` calls, are left alone) to every value of its (joint) support, vectorized
with ``vmap``; the surrogate is sum_v q(v) S(v), where S(v) is the surrogate of the re-run.
Sites inside plates are enumerated jointly (K^N values for N positions with K values each);
past ``max_values`` joint values the strategy refuses with an error. Where the program's
value is affine in the site's terms (the ELBO), :func:`local_enum` takes the expectation
position by position instead (O(N K)).

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
from vi_ext.estimators.base import Contribution, Draw, Site
from vi_ext.estimators.continuation import (
    base_distribution,
    placeholder,
    run_many,
    value_shape,
)

sg = jax.lax.stop_gradient


def _check_enumerable(site: Site, strategy: str) -> None:
    fn = base_distribution(site.fn)
    if not getattr(fn, "has_enumerate_support", False):
        raise SiteError(
            site.name,
            f"{strategy}() was asked of a {type(fn).__name__} distribution, whose support is "
            "not finite. Use vx.estimators.reparam() for continuous sites, or "
            "reinforce()/mvd().",
        )
    if tuple(site.fn.event_shape) != ():
        raise SiteError(
            site.name,
            f"{strategy}() needs scalar-valued draws; {type(fn).__name__} has event shape "
            f"{tuple(site.fn.event_shape)}. Use Categorical instead of OneHotCategorical.",
        )


class Enum:
    """The enumeration strategy; see :func:`enum`."""

    name = "enum"

    def __init__(self, max_values: int = 4096):
        self.max_values = int(max_values)

    def __repr__(self) -> str:
        return f"enum(max_values={self.max_values})"

    def sample(self, site: Site, key: jax.Array) -> Draw:
        _check_enumerable(site, "enum")
        fn = base_distribution(site.fn)
        size = jnp.shape(fn.enumerate_support(expand=False))[0]
        positions = math.prod(value_shape(site))
        if size**positions > self.max_values:
            raise SiteError(
                site.name,
                f"enum() would need {size}^{positions} joint values (more than "
                f"max_values={self.max_values}). Use mvd() or reinforce() for this site, or "
                "raise max_values.",
            )
        return Draw(placeholder(site, key), continuation=True)

    def answer(self, view, run):
        site = view.site
        shape = value_shape(site)
        support = jnp.reshape(base_distribution(site.fn).enumerate_support(expand=False), (-1,))
        positions = math.prod(shape)
        # static joint index grid, [S^P, P]; the support values themselves may be traced
        grid = np.array(list(itertools.product(range(support.shape[0]), repeat=positions)))
        values = support[grid].astype(view.value.dtype).reshape((len(grid),) + shape)
        log_q = jax.vmap(lambda v: jnp.sum(site.fn.log_prob(v)))(values)
        weights = jnp.exp(log_q)
        surrogates, vals = run_many(run, view.address, values)
        return jnp.sum(weights * surrogates), jnp.sum(sg(weights) * vals)


class LocalEnum:
    """Plate-local enumeration of a guide site; see :func:`local_enum`."""

    name = "local_enum"

    def __repr__(self) -> str:
        return "local_enum()"

    def sample(self, site: Site, key: jax.Array) -> Draw:
        _check_enumerable(site, "local_enum")
        if tuple(site.sample_shape) != ():
            raise SiteError(site.name, "local_enum() needs the positions of a site to be "
                            "plates (numpyro.plate), not a sample_shape.")
        # a placeholder: sim replaces the site's log q by its exact expectation and density
        # averages the model's factors of the site over its support, position by position
        return Draw(placeholder(site, key), integrate=True)

    def contribute(self, view) -> Contribution | None:
        bad = view.terms_affine()
        if bad:
            view.refuse(
                "it replaces the draw's terms (its log q and the model factors that depend "
                "on it) by their exact expectation, which is unbiased only where the "
                "program's value is affine in them with coefficients free of randomness (as "
                f"the ELBO is); here it is not affine in {_describe(bad[0])}. Use enum() "
                "(joint enumeration), mvd() or reinforce() for this site.")
        if view.value_used:
            view.refuse(
                "the program (or another draw of the guide) uses the draw's value itself, "
                "which this strategy never draws: it must be a leaf of the guide whose "
                "value reaches the program only through density(model, choices). Use "
                "enum(), mvd() or reinforce() for this site.")
        return None


def _describe(label: tuple) -> str:
    if label[0] == "lq":
        return "its log q term"
    return f"the model factors averaged over it (density call {'/'.join(label[1])})"


def enum(max_values: int = 4096) -> Enum:
    """Exact enumeration of a finite-support site (Bernoulli, Categorical, Binomial, ...).

    Args:
        max_values: refuse (with an error) sites whose joint support is larger.

    Example:
        >>> vx.estimate(vx.objectives.elbo(), model, guide, params, data,
        ...             estimators={"z": vx.estimators.enum()})
    """
    return Enum(max_values)


def local_enum() -> LocalEnum:
    """Exact, plate-local expectation over a finite-support guide site.

    For a guide site z with independent positions z_n ~ q_n in its plates (no other guide
    site depending on it), the ELBO's expectation over z is taken exactly, position by
    position:

        E_q[log p(x, z, .) - log q(z)] = sum_n sum_k q_n(k) [ sum_{f in factors(z_n)} log f(k)
                                          - log q_n(k) ] + the other factors,

    O(N K) work where :func:`enum` needs K^N runs, with no sampling variance from z and a
    gradient by plain differentiation (the guide's probabilities appear explicitly). Valid
    wherever the program's value is affine in the site's log q term and in the model factors
    averaged over it, with coefficients free of randomness (the ELBO, a mean of particles, a
    user's ``density(model, q) - q.log_density`` under any name), and the program never uses
    the placeholder value; this is read from the program's structure, and anything else is
    refused by name. The model's factors that depend on z are those that broadcast over its
    support; a factor that depends on two enumerated sites is refused, as in model-side
    enumeration (:mod:`vi_ext.program.enumerate`).

    Reference: the guide-side half of Pyro's TraceEnum_ELBO (Obermeyer et al., "Tensor
    Variable Elimination for Plated Factor Graphs", ICML 2019), for guide sites that are
    leaves of the guide.

    Example:
        >>> vx.fit(model, data, guide=guide, estimators={"z": vx.estimators.local_enum()})
    """
    return LocalEnum()
