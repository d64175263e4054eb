"""Reparameterization (pathwise) gradients, and the two that hold log q's parameters still.

For z = T(eps, phi) with eps ~ p(eps) independent of phi,
    d/dphi E_{q_phi}[f(z)] = E_eps[ f'(T(eps, phi)) dT/dphi ].
NumPyro's ``rsample`` provides T for location-scale families and, through JAX's implicitly
differentiable samplers (Figurnov et al., 2018, "Implicit Reparameterization Gradients"),
for Gamma, Beta and Dirichlet.

:func:`stl` and :func:`dreg` draw the same way but score the draw with the guide's parameters
held constant (the values upstream of the site in the guide stay live, so a chain z1 -> z2 is
differentiated along its whole path). That drops the term E[h d/dphi log q_phi(z)], where h is
the sensitivity of the program's value to the draw's log q term. The two decide from the
program's structure whether that is allowed:

- when the value is affine in the draw's log q term with a coefficient free of randomness, h
  is a constant and the dropped term has mean zero: both are unbiased (sticking the landing);
- when the value depends on the draws of the draw's ``sim`` call only through a_L L with
  L = logmeanexp_k x_k over the particles in which it is drawn, x_k affine in the call's
  log q with a static coefficient c, DReG rewrites the dropped term by reparameterization:
  E_z[h_k d/dphi log q(z_k)] = E[grad_{z_k} h_k dz_k/dphi] with h_k = a_L c w~_k, which
  scales particle k's pathwise derivative by 1 + c (1 - w~_k) (w~ = softmax(x); for IWAE,
  c = -1, it is w~_k, the estimator of Tucker et al.). The program runs once more with the
  same random numbers to apply the scale. ``stl`` refuses this case (it would be biased).

References: Kingma & Welling (2014); Rezende, Mohamed & Wierstra (2014); Roeder, Wu &
Duvenaud, "Sticking the Landing", NeurIPS 2017; Tucker, Lawson, Gu & Maddison, "Doubly
Reparameterized Gradient Estimators for Monte Carlo Objectives", ICLR 2019.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from vi_ext.errors import SiteError
from vi_ext.estimators.base import Contribution, Draw, Site


def _check_rsample(name: str, site: Site) -> None:
    if not getattr(site.fn, "has_rsample", False):
        kind = type(site.fn).__name__
        support = getattr(site.fn, "support", None)
        discrete = bool(getattr(support, "is_discrete", False))
        why = "it is discrete" if discrete else "NumPyro has no differentiable sampler for it"
        raise SiteError(
            site.name,
            f"{name}() was asked of a {kind} distribution, but {why}. Choose a "
            "strategy that does not differentiate through the draw: "
            "vx.estimators.enum() for finite support, vx.estimators.reinforce() or "
            "vx.estimators.mvd(), e.g. estimators={'" + site.name + "': "
            "vx.estimators.enum()}.",
        )


def _pathwise_draw(name: str, site: Site, key: jax.Array, **flags) -> Draw:
    """A differentiable draw, with NumPyro's sampling intermediates (if any)."""
    _check_rsample(name, site)
    fn = site.fn
    if hasattr(fn, "sample_with_intermediates"):
        value, intermediates = fn.sample_with_intermediates(key, site.sample_shape)
        return Draw(value, intermediates=intermediates or None, **flags)
    return Draw(fn.rsample(key, site.sample_shape), **flags)


class Reparam(NamedTuple):
    """The pathwise strategy; see :func:`reparam`."""

    name: str = "reparam"

    def sample(self, site: Site, key: jax.Array) -> Draw:
        return _pathwise_draw(self.name, site, key)


class StickingTheLanding(NamedTuple):
    """A pathwise draw scored with log q's parameters held constant; see :func:`stl`."""

    name: str = "stl"

    def sample(self, site: Site, key: jax.Array) -> Draw:
        return _pathwise_draw(self.name, site, key, stop_params=True)

    def contribute(self, view) -> Contribution | None:
        if view.log_prob_affine:
            return None
        view.refuse(
            "it drops the score term of the draw's log q, which has mean zero only when the "
            "program's value is affine in that log q with a coefficient free of randomness "
            "(the ELBO, a mean of particles); here it is not (under a logmeanexp, as in "
            "IWAE, the dropped term is biased: Tucker et al., 2019). Use dreg() for "
            "importance-weighted bounds, or reparam().")
        return None


class DoublyReparameterized(NamedTuple):
    """Doubly reparameterized gradients; see :func:`dreg`."""

    name: str = "dreg"

    def sample(self, site: Site, key: jax.Array) -> Draw:
        return _pathwise_draw(self.name, site, key, stop_params=True)

    def contribute(self, view) -> Contribution | None:
        if view.log_prob_affine:
            return None  # sticking the landing: the dropped term has mean zero
        lme = view.logmeanexp()
        if isinstance(lme, str):
            view.refuse("it needs the program's value to be affine in the draw's log q "
                        "(as the ELBO is) or to depend on the draw through a logmeanexp of "
                        f"importance log weights over its particles (as IWAE does); {lme}. "
                        "Use reparam().")
        others = [a for a in view.sim_draws()
                  if getattr(view.draw_info(a).strategy, "name", None) != self.name]
        if others:
            view.refuse("DReG rescales the pathwise derivative of a whole sim call, and the "
                        f"site '{others[0][-1]}' of the same call uses another strategy; use "
                        "dreg() for every site of the guide, or reparam() for this one.")
        if not lme.only_channel:
            view.refuse("the program's value depends on this sim call's draws through more "
                        "than one logmeanexp over its particles (or also outside it); DReG's "
                        "rescaling is exact only for a_L * logmeanexp(x) + terms free of the "
                        "draws. Use reparam().")
        c = lme.log_q_coefficient
        if c is None:
            view.refuse("the logmeanexp's input is not affine in the sim call's log q with one "
                        "static coefficient (x_k = log p(x, z_k) - log q(z_k), or a constant "
                        "times it). Use reparam().")
        for a in view.downstream_draws():
            info = view.draw_info(a)
            d = info.draw
            if info.pinned or d.signal or d.continuation or d.integrate:
                view.refuse(f"the draw '{a[-1]}' downstream of it is not pathwise "
                            f"({view.draw_info(a).strategy.name}()); DReG's identity needs "
                            "every draw that depends on it to be differentiable in it. Use "
                            "reparam().")
        return Contribution(path_scale=1.0 + c * (1.0 - lme.weights))


def reparam() -> Reparam:
    """Pathwise gradients through a reparameterized draw.

    Works for every NumPyro distribution with ``has_rsample``: location-scale families and,
    by implicit reparameterization, Gamma, Beta and Dirichlet.

    Example:
        >>> import vi_ext as vx
        >>> strategies = {"theta": vx.estimators.reparam()}
    """
    return Reparam()


def stl() -> StickingTheLanding:
    """Sticking the landing: a pathwise draw, with log q's parameters held constant.

    The guide's log density at the draw is evaluated as log q_{stop_grad(phi)}(z(phi)), which
    drops the score term E_q[d/dphi log q_phi(z)] = 0 from the estimator: the gradient stays
    unbiased wherever the program's value is affine in the draw's log q with a coefficient
    free of randomness (the ELBO, one particle or the mean of several), and its variance
    vanishes as q approaches the posterior. Elsewhere (under a logmeanexp of particles, as in
    IWAE) it is refused with a named error: use :func:`dreg`.

    Reference: Roeder, Wu & Duvenaud, "Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference", NeurIPS 2017.

    Example:
        >>> vx.fit(model, data, estimators={"z": vx.estimators.stl()})
    """
    return StickingTheLanding()


def dreg() -> DoublyReparameterized:
    """Doubly reparameterized gradients (DReG) for importance-weighted objectives.

    For IWAE_K = E[log (1/K) sum_k w_k], w_k = p(x, z_k) / q_phi(z_k), z_k = z(eps_k, phi),
    the score part of the guide gradient is itself rewritten by reparameterization, giving

        d/dphi IWAE_K = E[ sum_k  w~_k^2  d log w_k / d z_k  dz_k / dphi ],

    with normalized weights w~_k = w_k / sum_j w_j, log q's parameters held constant, and
    dz_k/dphi the whole reparameterized path of the guide (dependent sites included).
    Model parameters keep the usual sum_k w~_k d log w_k / d theta. Unlike the plain IWAE
    gradient, its signal-to-noise ratio for the guide does not vanish as K grows.

    Validity is read from the program's structure (see the module docstring), under any
    objective name: a value affine in the draw's log q (the ELBO) gives :func:`stl`; a value
    a * logmeanexp(x) over the particles, x_k affine in the particle's log q with a static
    coefficient c, gives DReG with particle k's path scaled by 1 + c (1 - w~_k) (w~_k^2 for
    IWAE; Renyi and CUBO bounds are covered too); anything else is refused by name. Every
    site of the ``sim`` call must use ``dreg()``.

    Reference: Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient Estimators for
    Monte Carlo Objectives", ICLR 2019.

    Example:
        >>> vx.fit(model, data, objective=vx.objectives.iwae(16),
        ...        estimators={"z": vx.estimators.dreg()})
    """
    return DoublyReparameterized()
