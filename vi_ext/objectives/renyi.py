"""The Renyi (variational Renyi, VR) bound.

    L_alpha(q) = 1/(1 - alpha) log E_q[ (p(x, z) / q(z))^(1 - alpha) ]

estimated with K particles by 1/(1 - alpha) log (1/K) sum_k w_k^(1 - alpha); the objective
maximized is the expectation of that estimator (as in NumPyro's RenyiELBO). alpha = 0 gives
the IWAE bound, alpha -> 1 the ELBO.

Reference: Li & Turner, "Renyi Divergence Variational Inference", NeurIPS 2016.
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp

from vi_ext.errors import require_int
from vi_ext.objectives.iwae import log_weight
from vi_ext.program import Objective, logmeanexp, particles


def renyi_program(model, guide, *args, alpha: float = 0.0, num_particles: int = 2, **kwargs):
    """One estimate of the VR bound."""
    logw = particles(num_particles, log_weight, model, guide, *args, **kwargs)
    if alpha == 1.0:
        return jnp.mean(logw)
    return logmeanexp((1.0 - alpha) * logw) / (1.0 - alpha)


def renyi(alpha: float = 0.0, num_particles: int = 2) -> Objective:
    """The variational Renyi bound of order ``alpha`` with ``num_particles`` particles.

    Example:
        >>> res = vx.fit(model, data, objective=vx.objectives.renyi(alpha=0.5, num_particles=4))
    """
    require_int(num_particles, "num_particles", 1, "renyi")
    alpha = float(alpha)
    return Objective(
        program=partial(renyi_program, alpha=alpha, num_particles=num_particles), name="renyi"
    )
