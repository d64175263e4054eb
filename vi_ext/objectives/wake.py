"""Reweighted wake-sleep: the wake phases for the model (pwake) and the guide (qwake).

With z_k ~ q and self-normalized weights w~_k (see :func:`vi_ext.program.normalize`):

    pwake:  value  log (1/K) sum_k w_k  (the IWAE estimate of log p(x), ``log_evidence``),
            gradient in the model's params  sum_k w~_k d/dtheta log p_theta(x, z_k),
            which is exactly the theta-gradient of IWAE_K (q does not depend on theta);
            the guide (a fixed sampler in ``normalize``) gets no gradient.
    qwake:  value  sum_k w~_k log q_phi(z_k),
            gradient  sum_k w~_k d/dphi log q_phi(z_k)  ~=  -d/dphi KL(p(z | x) || q_phi(z)),
            a self-normalized estimate, consistent as K grows (its bias is O(1/K)).

Fit the two phases by alternating fits, or sum them in a user-written objective. Neither
needs a differentiable sampler, so discrete latents work as they are.

Reference: Bornschein & Bengio, "Reweighted Wake-Sleep", ICLR 2015; Le et al., UAI 2019.
"""

from __future__ import annotations

from functools import partial

from vi_ext.errors import require_int
from vi_ext.program import Objective, density
from vi_ext.program.normalize import normalize


def pwake_program(model, guide, *args, num_particles: int = 5, **kwargs):
    """IWAE value; model-parameter gradient of reweighted wake-sleep."""
    return normalize(model, guide, *args, num_particles=num_particles, **kwargs).log_evidence


def qwake_program(model, guide, *args, num_particles: int = 5, **kwargs):
    """sum_k w~_k log q(z_k): the guide's wake-phase objective (weights held constant)."""
    post = normalize(model, guide, *args, num_particles=num_particles, **kwargs)
    return post.expect(lambda v: density(guide, v, *args, **kwargs))


def pwake(num_particles: int = 5) -> Objective:
    """The model's wake phase of reweighted wake-sleep (K = ``num_particles``)."""
    require_int(num_particles, "num_particles", 1, "pwake")
    return Objective(partial(pwake_program, num_particles=num_particles), name="pwake")


def qwake(num_particles: int = 5) -> Objective:
    """The guide's wake phase of reweighted wake-sleep (K = ``num_particles``)."""
    require_int(num_particles, "num_particles", 1, "qwake")
    return Objective(partial(qwake_program, num_particles=num_particles), name="qwake")
