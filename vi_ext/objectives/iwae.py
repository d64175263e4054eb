"""The importance-weighted bound (IWAE).

    IWAE_K(q) = E_{z_1..K ~ q}[ log (1/K) sum_k p(x, z_k) / q(z_k) ],
    ELBO = IWAE_1 <= IWAE_K <= IWAE_{K+1} <= log p(x).

Reference: Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

from functools import partial

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
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"iwae(): num_particles must be an int >= 1, got {num_particles!r}")
    return Objective(program=partial(iwae_program, num_particles=num_particles), name="iwae")
