"""Reparameterization (pathwise) gradients.

For z = T(eps, phi) with eps ~ p(eps) independent of phi,
    d/dphi E_{q_phi}[f(z)] = E_eps[ f'(T(eps, phi)) dT/dphi ].
NumPyro's ``rsample`` provides T for location-scale families and, through JAX's implicitly
differentiable samplers (Figurnov et al., 2018, "Implicit Reparameterization Gradients"),
for Gamma, Beta and Dirichlet.

References: Kingma & Welling (2014); Rezende, Mohamed & Wierstra (2014).
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from vi_ext.errors import SiteError
from vi_ext.estimators.base import Site


class Reparam(NamedTuple):
    """The pathwise strategy; see :func:`reparam` and :func:`stl`."""

    name: str = "reparam"
    stop_guide_params: bool = False

    def sample(self, site: Site, key: jax.Array) -> jax.Array:
        if not getattr(site.fn, "has_rsample", False):
            kind = type(site.fn).__name__
            support = getattr(site.fn, "support", None)
            discrete = bool(getattr(support, "is_discrete", False))
            why = "it is discrete" if discrete else "NumPyro has no differentiable sampler for it"
            raise SiteError(
                site.name,
                f"reparam() was asked of a {kind} distribution, but {why}. Choose a "
                "strategy that does not differentiate through the draw: "
                "vx.estimators.enum() for finite support, vx.estimators.reinforce() or "
                "vx.estimators.mvd(), e.g. estimators={'" + site.name + "': "
                "vx.estimators.enum()}.",
            )
        return site.fn.rsample(key, site.sample_shape)


def reparam() -> Reparam:
    """Pathwise gradients through a reparameterized draw.

    Works for every NumPyro distribution with ``has_rsample``: location-scale families and,
    by implicit reparameterization, Gamma, Beta and Dirichlet.

    Example:
        >>> import vi_ext as vx
        >>> strategies = {"theta": vx.estimators.reparam()}
    """
    return Reparam()


def stl() -> Reparam:
    """Sticking the landing: a pathwise draw, with log q's parameters held constant.

    The guide's log density at the draw is evaluated as log q_{stop_grad(phi)}(z(phi)), which
    drops the score term E_q[d/dphi log q_phi(z)] = 0 from the estimator: the gradient stays
    unbiased for the ELBO and IWAE-family objectives and its variance vanishes as q
    approaches the posterior.

    Reference: Roeder, Wu & Duvenaud, "Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference", NeurIPS 2017.

    Example:
        >>> vx.fit(model, data, estimators={"z": vx.estimators.stl()})
    """
    return Reparam(name="stl", stop_guide_params=True)
