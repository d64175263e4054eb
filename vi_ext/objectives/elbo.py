"""The evidence lower bound.

    ELBO(q) = E_{z ~ q}[ log p(x, z) - log q(z) ] <= log p(x)

estimated with K independent particles, (1/K) sum_k [log p(x, z_k) - log q(z_k)].

Reference: Jordan, Ghahramani, Jaakkola & Saul (1999); Hoffman, Blei, Wang & Paisley,
"Stochastic Variational Inference", JMLR 2013.
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp

from vi_ext.errors import require_int
from vi_ext.program import Objective, density, particles, sim


def elbo_program(model, guide, *args, num_particles: int = 1, **kwargs):
    """One estimate of the ELBO from ``num_particles`` independent guide draws."""

    def one():
        q = sim(guide, *args, **kwargs)
        return density(model, q, *args, **kwargs) - q.log_density

    if num_particles == 1:
        return one()
    return jnp.mean(particles(num_particles, one))


def elbo(num_particles: int = 1) -> Objective:
    """The ELBO, E_q[log p(x, z) - log q(z)], averaged over ``num_particles`` draws.

    Args:
        num_particles: draws per estimate (vectorized).

    Example:
        >>> res = vx.fit(model, data, objective=vx.objectives.elbo(num_particles=4))
    """
    require_int(num_particles, "num_particles", 1, "elbo")
    return Objective(program=partial(elbo_program, num_particles=num_particles), name="elbo")
