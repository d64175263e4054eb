"""REINFORCE (the score-function estimator), with baselines.

    d/dphi E_{q_phi}[F] = E[ (F - b) d/dphi log q_phi(z) ] + E[ dF/dphi ]

for any b independent of z (Williams, 1992). In the surrogate this is the DiCE term
(stop_grad(F) - b) * (log q(z) - stop_grad(log q(z))) (Foerster et al., 2018), added to F.

Baselines:
- ``None``: b = 0.
- ``"loo"``: leave-one-out across particles (VIMCO, Mnih & Rezende, 2016). For a program that
  averages particles with :func:`vi_ext.program.logmeanexp`, the baseline of particle k is the
  objective with log-weight k replaced by the mean of the others; each particle's score is
  then weighted by its own learning signal.
- a callable ``b()``: a baseline of the user's, run inside the guide (so ``numpyro.param``
  sites in it are fitted). It is learned by regression: the surrogate adds
  -(stop_grad(F) - b)^2 / 2, whose gradient reaches only b's parameters.

Reference: Williams, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 1992; Mnih & Rezende, "Variational inference for
Monte Carlo objectives", ICML 2016.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from vi_ext.errors import SiteError
from vi_ext.estimators.base import Site
from vi_ext.program.context import current_frame
from vi_ext.program.records import LogMeanExpRecord, Record

sg = jax.lax.stop_gradient


@jax.tree_util.register_pytree_node_class
class ScoreRecord(Record):
    """The score term of one REINFORCE site (batched over particles when inside them)."""

    def __init__(self, log_prob, baseline_value, *, site: str, kind: str):
        self.log_prob = log_prob
        self.baseline_value = baseline_value
        self.site = site
        self.kind = kind

    def tree_flatten(self):
        return (self.log_prob, self.baseline_value), (self.site, self.kind)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, site=aux[0], kind=aux[1])

    def surrogate_term(self, value: jax.Array, records: list) -> jax.Array:
        lp = self.log_prob
        score = lp - sg(lp)
        if self.kind == "none":
            return jnp.sum(value * score)
        if self.kind == "fn":
            b = self.baseline_value
            regression = -0.5 * jnp.sum((value - b) ** 2)
            return jnp.sum((value - sg(b)) * score) + regression
        if self.kind == "loo":
            return jnp.sum(sg(_leave_one_out(self, records)) * score)
        raise ValueError(f"unknown baseline kind {self.kind!r}")


def _leave_one_out(record: ScoreRecord, records: list) -> jax.Array:
    """Per-particle learning signals F - b_k of VIMCO for the particle axis of ``record``."""
    lmes = [r for r in records if isinstance(r, LogMeanExpRecord)]
    shape = jnp.shape(record.log_prob)
    if len(lmes) != 1 or len(shape) != 1 or lmes[0].x.shape != shape or shape[0] < 2:
        raise SiteError(
            record.site,
            "reinforce(baseline='loo') needs the program to combine K >= 2 particles with one "
            "vx.program.logmeanexp over the particles in which this site is drawn (as iwae() "
            "does). Use baseline=None or a callable baseline for this objective.",
        )
    x = sg(lmes[0].x)
    k = x.shape[0]
    full = logsumexp(x) - jnp.log(k)
    others_mean = (jnp.sum(x) - x) / (k - 1)
    swapped = jnp.where(jnp.eye(k, dtype=bool), others_mean[:, None], x[None, :])
    baseline = logsumexp(swapped, axis=1) - jnp.log(k)
    return full - baseline


class Reinforce:
    """The score-function strategy; see :func:`reinforce`."""

    name = "reinforce"

    def __init__(self, baseline: None | str | Callable[[], Any] = None):
        if baseline is None:
            self.kind = "none"
        elif baseline == "loo":
            self.kind = "loo"
        elif callable(baseline):
            self.kind = "fn"
        else:
            raise ValueError(
                f"reinforce(): baseline must be None, 'loo' or a callable, got {baseline!r}"
            )
        self.baseline = baseline

    def __repr__(self) -> str:
        return f"reinforce(baseline={self.baseline!r})"

    def sample(self, site: Site, key: jax.Array) -> jax.Array:
        frame = current_frame("reinforce")
        value = sg(site.fn.sample(key, site.sample_shape))
        log_prob = jnp.sum(site.fn.log_prob(value))
        b = jnp.asarray(self.baseline(), dtype=log_prob.dtype) if self.kind == "fn" else None
        b = jnp.zeros_like(log_prob) if b is None else b
        frame.records.append(ScoreRecord(log_prob, b, site=site.name, kind=self.kind))
        return value


def reinforce(baseline: None | str | Callable[[], Any] = None) -> Reinforce:
    """Score-function gradients, for any distribution NumPyro can sample and score.

    Args:
        baseline: ``None``; ``"loo"`` (leave-one-out across particles, VIMCO, for programs
            that combine particles with ``logmeanexp``); or a zero-argument callable returning
            a scalar baseline, e.g. ``lambda: numpyro.param("b", 0.0)``, fitted by regression
            on the objective.

    Example:
        >>> vx.fit(model, guide=guide, estimators={"z": vx.estimators.reinforce("loo")},
        ...        objective=vx.objectives.iwae(num_particles=8))
    """
    return Reinforce(baseline)
