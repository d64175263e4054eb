"""The chi-square upper bound (CUBO): the worked example of writing a new objective.

    CUBO_n(q) = (1/n) log E_q[ (p(x, z) / q(z))^n ]  >=  log p(x),     n >= 1 (n = 2: chi^2)

Minimizing it fits q by the chi^n divergence, which, unlike the ELBO's KL(q || p), punishes
guides that miss posterior mass: CUBO and ELBO together sandwich log p(x). Objectives in
vi_ext are maximized, so the program returns -CUBO; with K particles its estimate is
-(1/n) log (1/K) sum_k w_k^n. That is the whole objective, written in the language:

    def cubo_program(model, guide, *args, n=2.0, num_particles=8, **kwargs):
        logw = particles(num_particles, log_weight, model, guide, *args, **kwargs)
        return -logmeanexp(n * logw) / n

Reference: Dieng, Tran, Ranganath, Paisley & Blei, "Variational Inference via chi Upper
Bound Minimization", NeurIPS 2017.
"""

from __future__ import annotations

from functools import partial

from vi_ext.errors import ArgumentError, require_int
from vi_ext.objectives.iwae import log_weight
from vi_ext.program import Objective, logmeanexp, particles


def cubo_program(model, guide, *args, n: float = 2.0, num_particles: int = 8, **kwargs):
    """One estimate of -CUBO_n."""
    logw = particles(num_particles, log_weight, model, guide, *args, **kwargs)
    return -logmeanexp(n * logw) / n


def cubo(n: float = 2.0, num_particles: int = 8) -> Objective:
    """Negative chi^n upper bound (maximized; i.e. the CUBO is minimized).

    Example:
        >>> res = vx.fit(model, data, objective=vx.objectives.cubo(n=2, num_particles=16))
    """
    if n < 1:
        raise ArgumentError("n", f"cubo(): expected >= 1, got {n!r}.")
    require_int(num_particles, "num_particles", 1, "cubo")
    return Objective(partial(cubo_program, n=float(n), num_particles=num_particles), name="cubo")
