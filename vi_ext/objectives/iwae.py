"""The importance-weighted bound (IWAE).

    IWAE_K(q) = E_{z_1..K ~ q}[ log (1/K) sum_k p(x, z_k) / q(z_k) ],
    ELBO = IWAE_1 <= IWAE_K <= IWAE_{K+1} <= log p(x).

Reference: Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

from functools import partial

from vi_ext.errors import require_int
from vi_ext.program import Objective, density, logmeanexp, particles, sim


def log_weight(model, guide, *args, **kwargs):
    """log p(x, z) - log q(z) at one guide draw z."""
    q = sim(guide, *args, **kwargs)
    return density(model, q, *args, **kwargs) - q.log_density


def iwae_program(model, guide, *args, num_particles: int = 5, **kwargs):
    """One estimate of the K-particle importance-weighted bound."""
    return logmeanexp(particles(num_particles, log_weight, model, guide, *args, **kwargs))


def iwae(num_particles: int = 5) -> Objective:
    """The importance-weighted bound with ``num_particles`` = K particles.

    Pair it with ``reinforce(baseline="loo")`` (VIMCO) for discrete sites.

    Example:
        >>> res = vx.fit(model, data, objective=vx.objectives.iwae(num_particles=8))
    """
    require_int(num_particles, "num_particles", 1, "iwae")
    return Objective(program=partial(iwae_program, num_particles=num_particles), name="iwae")
