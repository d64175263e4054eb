"""Measure-valued derivatives (MVD).

For a parameter theta of q, d/dtheta q_theta = c_theta (q+_theta - q-_theta) with two
probability measures q+ and q-, so

    d/dtheta E_q[F] = c_theta ( E_{q+}[F] - E_{q-}[F] ).

The program is re-run with the draw's value (pinned by its address) replaced, one position
at a time, by coupled draws from q+ and q- (same key elsewhere); the surrogate adds
sum_i stop_grad(c_i (F+_i - F-_i)) * (theta_i - stop_grad(theta_i)).

Decompositions used:
- Bernoulli(p): d/dp = delta_1 - delta_0 (c = 1).
- Categorical(pi): d/dpi_k E[F] = F(k), so the term is sum_k F(k) (pi_k - stop_grad(pi_k)).
- Normal(mu, sigma): d/dmu: c = 1 / (sigma sqrt(2 pi)), q+- = mu +- sigma R, R ~ Rayleigh(1);
  d/dsigma: c = 1 / sigma, q+ = mu + sigma M with M double-sided Maxwell, q- = q itself.

Reference: Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in Machine
Learning", JMLR 2020, section 6; Pflug, "Sampling derivatives of probabilities", 1989.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from vi_ext.errors import SiteError
from vi_ext.estimators.base import Draw, Site
from vi_ext.estimators.continuation import (
    base_distribution,
    placeholder,
    run_many,
    value_shape,
    with_positions,
)

sg = jax.lax.stop_gradient
BERNOULLI = (dist.BernoulliProbs, dist.BernoulliLogits)
CATEGORICAL = (dist.CategoricalProbs, dist.CategoricalLogits)
SUPPORTED = BERNOULLI + CATEGORICAL + (dist.Normal,)


_base = base_distribution


class MVD:
    """The measure-valued-derivative strategy; see :func:`mvd`."""

    name = "mvd"

    def __repr__(self) -> str:
        return "mvd()"

    def sample(self, site: Site, key: jax.Array) -> Draw:
        if not isinstance(_base(site.fn), SUPPORTED):
            raise SiteError(
                site.name,
                f"mvd() supports Bernoulli, Categorical and Normal sites, not "
                f"{type(_base(site.fn)).__name__}. Use reparam(), enum() or reinforce().",
            )
        k_draw, k_own = jax.random.split(key)
        return Draw(placeholder(site, k_draw), continuation=True, data=k_own)

    def answer(self, view, run):
        site, z = view.site, view.value
        name, shape = view.address, value_shape(site)
        surrogate, value = run({name: z})
        base = _base(site.fn)
        n = math.prod(shape)
        if isinstance(base, BERNOULLI):
            p = jnp.broadcast_to(site.fn.mean, shape).reshape(-1)
            _, f1 = run_many(run, name, with_positions(z, jnp.ones(n)))
            _, f0 = run_many(run, name, with_positions(z, jnp.zeros(n)))
            term = jnp.sum(sg(f1 - f0) * (p - sg(p)))
        elif isinstance(base, CATEGORICAL):
            probs = jnp.broadcast_to(base.probs, shape + base.probs.shape[-1:])
            probs = probs.reshape(n, -1)
            k = probs.shape[-1]
            values = jax.vmap(lambda c: with_positions(z, jnp.full(n, c)))(jnp.arange(k))
            _, fk = jax.vmap(lambda vs: run_many(run, name, vs))(values)  # [k, n]
            term = jnp.sum(sg(fk.T) * (probs - sg(probs)))
        else:  # Normal
            mu = jnp.broadcast_to(base.loc, shape).reshape(-1)
            sigma = jnp.broadcast_to(base.scale, shape).reshape(-1)
            k_r, k_m, k_e, k_s = jax.random.split(view.data, 4)
            r = jnp.sqrt(2.0 * jax.random.exponential(k_r, (n,)))
            maxwell = jnp.linalg.norm(jax.random.normal(k_m, (n, 3)), axis=-1)
            maxwell = maxwell * jnp.where(jax.random.bernoulli(k_s, 0.5, (n,)), 1.0, -1.0)
            eps = jax.random.normal(k_e, (n,))
            mu_s, sigma_s = sg(mu), sg(sigma)
            _, f_plus = run_many(run, name, with_positions(z, mu_s + sigma_s * r))
            _, f_minus = run_many(run, name, with_positions(z, mu_s - sigma_s * r))
            _, f_maxwell = run_many(run, name, with_positions(z, mu_s + sigma_s * maxwell))
            _, f_normal = run_many(run, name, with_positions(z, mu_s + sigma_s * eps))
            c_mu = 1.0 / (sigma_s * jnp.sqrt(2.0 * jnp.pi))
            term = jnp.sum(sg(c_mu * (f_plus - f_minus)) * (mu - mu_s))
            term = term + jnp.sum(sg((f_maxwell - f_normal) / sigma_s) * (sigma - sigma_s))
        return surrogate + term, value


def mvd() -> MVD:
    """Measure-valued derivatives for Bernoulli, Categorical and Normal sites.

    Costs re-runs of the program per position of the site (2 for Bernoulli, K for
    Categorical, 4 for Normal), with low variance and no differentiability needed downstream.

    Example:
        >>> vx.estimate(vx.objectives.elbo(), model, guide, params, data,
        ...             estimators={"z": vx.estimators.mvd()})
    """
    return MVD()
