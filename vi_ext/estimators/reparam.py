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

sg = jax.lax.stop_gradient


class Reparam(NamedTuple):
    """The pathwise strategy; see :func:`reparam` and :func:`stl`."""

    name: str = "reparam"
    stop_guide_params: bool = False
    doubly: bool = False

    def sample(self, site: Site, key: jax.Array) -> jax.Array:
        self._check(site)
        z = site.fn.rsample(key, site.sample_shape)
        if not self.stop_guide_params:
            return z
        from vi_ext.program.context import current_frame  # (estimators load before program)

        frame = current_frame(self.name)
        frame.path_sites[site.name] = (self.name, frame.depth)
        if not self.doubly or frame.tangent_scale is None:
            return z
        # scale the pathwise derivative dz/dphi of this particle by its normalized weight
        return sg(z) + sg(frame.tangent_scale) * (z - sg(z))

    def _check(self, site: Site) -> None:
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
    unbiased for the ELBO (one particle or the mean of several) and its variance vanishes as q
    approaches the posterior. Under a logmeanexp of particles (IWAE) the dropped term no
    longer has mean zero and STL is biased, so the transformation refuses it there: use
    :func:`dreg`, its unbiased counterpart.

    Reference: Roeder, Wu & Duvenaud, "Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference", NeurIPS 2017.

    Example:
        >>> vx.fit(model, data, estimators={"z": vx.estimators.stl()})
    """
    return Reparam(name="stl", stop_guide_params=True)


def dreg() -> Reparam:
    """Doubly reparameterized gradients (DReG) for importance-weighted objectives.

    For IWAE_K = E[log (1/K) sum_k w_k], w_k = p(x, z_k) / q_phi(z_k), z_k = z(eps_k, phi),
    the score part of the guide gradient is itself rewritten by reparameterization, giving

        d/dphi IWAE_K = E[ sum_k  w~_k^2  d log w_k / d z_k  dz_k / dphi ],

    with normalized weights w~_k = w_k / sum_j w_j and log q's parameters held constant (as in
    :func:`stl`). Model parameters keep the usual sum_k w~_k d log w_k / d theta. Unlike the
    plain IWAE gradient, its signal-to-noise ratio for the guide does not vanish as K grows.

    The transformation evaluates the program twice with the same random numbers: once to learn
    the weights w~_k, once to scale each particle's pathwise derivative by w~_k. It applies to
    programs whose value is ``logmeanexp`` of the log weights of one ``particles`` call (as in
    ``iwae``); with a single particle (``elbo``) it is :func:`stl`.

    Reference: Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient Estimators for
    Monte Carlo Objectives", ICLR 2019.

    Example:
        >>> vx.fit(model, data, objective=vx.objectives.iwae(16),
        ...        estimators={"z": vx.estimators.dreg()})
    """
    return Reparam(name="dreg", stop_guide_params=True, doubly=True)
