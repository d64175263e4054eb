"""Objectives for hierarchical guides: HVI, IWHVI and DIWHVI.

With a hierarchical guide q(z, u) and the marginal estimate q_hat of
:func:`vi_ext.program.marginal`,

    HVI    = E[ log p(x, z) - log q_hat_0(z) ]                         (M = 0)
    IWHVI  = E[ log p(x, z) - log q_hat_M(z) ]
    DIWHVI = E[ log (1/K) sum_k p(x, z_k) / q_hat_M(z_k) ]

all lower bounds of log p(x), tightening with K and M.

References: Ranganath, Tran & Blei, "Hierarchical Variational Models", ICML 2016; Sobolev &
Vetrov, "Importance Weighted Hierarchical Variational Inference", NeurIPS 2019; Becker et
al., PLDI 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from vi_ext.errors import require_int
from vi_ext.program import Objective, density, logmeanexp, particles
from vi_ext.program.marginal import Marginal, model_latent_names
from vi_ext.program.primitives import sim


def hierarchical_log_weight(model, guide, *args, keep=None, proposal=None, num_inner=0,
                            **kwargs):
    """log p(x, z) - log q_hat(z) for one draw of a hierarchical guide (the kept sites,
    when not given, are the guide's sites that the model samples: read from the guide's own
    draw, no extra one)."""
    if keep is None:
        def keep(values):
            return sorted(model_latent_names(model, values, args, kwargs))
    q = sim(Marginal(guide, keep, proposal, num_inner), *args, **kwargs)
    return density(model, q, *args, **kwargs) - q.log_density


def diwhvi_program(model, guide, *args, num_particles=1, keep=None, proposal=None,
                   num_inner=0, **kwargs):
    """One estimate of the doubly importance-weighted bound (K = 1: HVI/IWHVI)."""
    one = partial(hierarchical_log_weight, model, guide, *args, keep=keep, proposal=proposal,
                  num_inner=num_inner, **kwargs)
    if num_particles == 1:
        return one()
    return logmeanexp(particles(num_particles, one))


def _make(name, num_particles, num_inner, keep, proposal):
    require_int(num_particles, "num_particles", 1, name)
    require_int(num_inner, "num_inner", 0, name)
    program = partial(diwhvi_program, num_particles=num_particles, keep=keep,
                      proposal=proposal, num_inner=num_inner)
    return Objective(program=program, name=name)


def hvi(proposal: Callable | None = None, keep: Sequence[str] | None = None) -> Objective:
    """The hierarchical ELBO with a reverse model r(u | z) (``proposal``).

    Args:
        proposal: the reverse model, ``proposal(kept_values, *args, **kwargs)``; None uses
            the guide's own auxiliary distribution.
        keep: the model's latent sites; None infers them (guide sites the model samples).
    """
    return _make("hvi", 1, 0, keep, proposal)


def iwhvi(num_inner: int = 5, proposal: Callable | None = None,
          keep: Sequence[str] | None = None) -> Objective:
    """Importance-weighted HVI with ``num_inner`` = M proposal draws per marginal estimate."""
    return _make("iwhvi", 1, num_inner, keep, proposal)


def diwhvi(num_particles: int = 5, num_inner: int = 5, proposal: Callable | None = None,
           keep: Sequence[str] | None = None) -> Objective:
    """Doubly importance-weighted HVI: K outer particles, M inner proposal draws each."""
    return _make("diwhvi", num_particles, num_inner, keep, proposal)
