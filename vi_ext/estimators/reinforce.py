"""REINFORCE (the score-function estimator), with baselines.

    d/dphi E_{q_phi}[F] = E[ (F - b) d/dphi log q_phi(z) ] + E[ dF/dphi ]

for any b independent of z (Williams, 1992). In the surrogate this is the DiCE term
(stop_grad(F) - b) * (log q(z) - stop_grad(log q(z))) (Foerster et al., 2018), added to F.

Baselines:
- ``None``: b = 0.
- ``"average"``: a decaying average of past values of the objective, b_t = bias-corrected
  EMA_decay(F_1..F_{t-1}), kept in the fit's strategy state (it only depends on earlier
  steps, so it is independent of the current draw). Outside ``fit`` it starts at 0.
- ``"loo"``: leave-one-out across particles (VIMCO, Mnih & Rezende, 2016). For a program that
  averages particles with :func:`vi_ext.program.logmeanexp`, the baseline of particle k is the
  objective with log-weight k replaced by the mean of the others; each particle's score is
  then weighted by its own learning signal.
- a callable ``b()``: a baseline of the user's, run inside the guide (so ``numpyro.param``
  sites in it are fitted). It is learned by regression: the surrogate adds
  -(stop_grad(F) - b)^2 / 2, whose gradient reaches only b's parameters.

:func:`reinforce_from` builds the same strategy from a sampler and a log density of the
user's, for distributions NumPyro cannot sample or score.

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
from vi_ext.estimators.continuation import value_shape
from vi_ext.program.context import current_frame
from vi_ext.program.records import LogMeanExpRecord, Record

sg = jax.lax.stop_gradient


@jax.tree_util.register_pytree_node_class
class ScoreRecord(Record):
    """The score term of one REINFORCE site (batched over particles when inside them)."""

    def __init__(self, log_prob, baseline_value, average=None, *, site: str, kind: str,
                 decay: float = 0.0):
        self.log_prob = log_prob
        self.baseline_value = baseline_value
        self.average = average  # (mean, count) before this estimate, for kind "average"
        self.site = site
        self.kind = kind
        self.decay = decay

    def tree_flatten(self):
        return (self.log_prob, self.baseline_value, self.average), (
            self.site, self.kind, self.decay)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, site=aux[0], kind=aux[1], decay=aux[2])

    def state_update(self, value: jax.Array) -> dict:
        if self.kind != "average":
            return {}
        # inside particles the record is batched, with equal copies of the state
        mean, count = (jnp.mean(x) for x in self.average)
        mean = self.decay * mean + (1.0 - self.decay) * value
        return {state_key(self.site): (mean, count + 1.0)}

    def surrogate_term(self, value: jax.Array, records: list) -> jax.Array:
        lp = self.log_prob
        score = lp - sg(lp)
        if self.kind == "none":
            return jnp.sum(value * score)
        if self.kind == "average":
            return jnp.sum((value - sg(self.baseline_value)) * score)
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


def state_key(site: str) -> str:
    """The strategy-state entry of a site's decaying-average baseline."""
    return f"reinforce/{site}"


class Reinforce:
    """The score-function strategy; see :func:`reinforce`."""

    name = "reinforce"

    def __init__(self, baseline: None | str | Callable[[], Any] = None, decay: float = 0.9,
                 sampler: Callable[[Site, jax.Array], jax.Array] | None = None,
                 log_prob: Callable[[Site, jax.Array], jax.Array] | None = None):
        self.sampler = sampler
        self.log_prob = log_prob
        if baseline is None:
            self.kind = "none"
        elif baseline == "loo":
            self.kind = "loo"
        elif baseline == "average":
            self.kind = "average"
        elif callable(baseline):
            self.kind = "fn"
        else:
            raise ValueError(
                "reinforce(): baseline must be None, 'average', 'loo' or a callable, got "
                f"{baseline!r}"
            )
        if not (isinstance(decay, (int, float)) and 0.0 <= decay < 1.0):
            raise ValueError(f"reinforce(): decay must be in [0, 1), got {decay!r}")
        self.baseline = baseline
        self.decay = float(decay)

    def __repr__(self) -> str:
        extra = f", decay={self.decay}" if self.kind == "average" else ""
        if self.sampler is not None:
            return (f"reinforce_from({self.sampler!r}, {self.log_prob!r}, "
                    f"baseline={self.baseline!r}{extra})")
        return f"reinforce(baseline={self.baseline!r}{extra})"

    def sample(self, site: Site, key: jax.Array) -> jax.Array:
        frame = current_frame("reinforce")
        if self.sampler is None:
            value = sg(site.fn.sample(key, site.sample_shape))
            log_prob = jnp.sum(site.fn.log_prob(value))
        else:
            value = sg(jnp.asarray(self.sampler(site, key)))
            expected = value_shape(site)
            if tuple(value.shape) != expected:
                raise SiteError(site.name, f"reinforce_from(): the sampler returned shape "
                                f"{tuple(value.shape)}, the site needs {expected} "
                                "(sample_shape + batch_shape + event_shape).")
            log_prob = jnp.sum(self.log_prob(site, value))
        zero = jnp.zeros_like(log_prob)
        average = None
        if self.kind == "fn":
            b = jnp.asarray(self.baseline(), dtype=log_prob.dtype)
        elif self.kind == "average":
            mean, count = frame.state.get(state_key(site.name), (zero, zero))
            # bias-corrected, as Adam's moments: exact mean of the past values' EMA weights
            b = jnp.where(count > 0, mean / (1.0 - self.decay ** jnp.maximum(count, 1.0)), 0.0)
            average = (mean, count)
        else:
            b = zero
        frame.records.append(
            ScoreRecord(log_prob, b, average, site=site.name, kind=self.kind, decay=self.decay)
        )
        return value


def reinforce(baseline: None | str | Callable[[], Any] = None, decay: float = 0.9) -> Reinforce:
    """Score-function gradients, for any distribution NumPyro can sample and score.

    Args:
        baseline: ``None``; ``"average"`` (a decaying average of the objective's past values,
            carried across fit steps); ``"loo"`` (leave-one-out across particles, VIMCO, for
            programs that combine particles with ``logmeanexp``); or a zero-argument callable
            returning a scalar baseline, e.g. ``lambda: numpyro.param("b", 0.0)``, fitted by
            regression on the objective.
        decay: the decay of the ``"average"`` baseline, in [0, 1).

    Example:
        >>> vx.fit(model, guide=guide, estimators={"z": vx.estimators.reinforce("loo")},
        ...        objective=vx.objectives.iwae(num_particles=8))
    """
    return Reinforce(baseline, decay)


def reinforce_from(sample: Callable[[Site, jax.Array], jax.Array],
                   log_prob: Callable[[Site, jax.Array], jax.Array],
                   baseline: None | str | Callable[[], Any] = None,
                   decay: float = 0.9) -> Reinforce:
    """A score-function strategy from a sampler and a log density of your own.

    For distributions whose sampler or density NumPyro lacks, or that you want computed
    another way: the site's value is ``sample(site, key)`` (no gradient flows through it),
    and the score term uses ``log_prob(site, value)``, which must be the log density of the
    distribution ``sample`` draws from, as a differentiable function of the guide's
    parameters (through ``site.fn``'s arguments or ``numpyro.param``). Then

        d/dphi E_q[F] = E[(F - b) d/dphi log_prob(site, z)] + E[dF/dphi]

    exactly as for :func:`reinforce`, with the same baselines.

    Args:
        sample: ``(site, key) -> value`` of shape sample_shape + batch_shape + event_shape
            (``site`` is a :class:`~vi_ext.estimators.base.Site`: name, fn, sample_shape,
            infer).
        log_prob: ``(site, value) -> log density`` (summed to a scalar if it is not one).
        baseline: as for :func:`reinforce`.
        decay: as for :func:`reinforce`.

    Example (a Bernoulli drawn by inverting its CDF)::

        def sample(site, key):
            u = jax.random.uniform(key, site.fn.batch_shape)
            return (u < site.fn.probs).astype(jnp.float32)

        def log_prob(site, z):
            p = site.fn.probs
            return z * jnp.log(p) + (1 - z) * jnp.log1p(-p)

        vx.estimate(vx.objectives.elbo(), model, guide, params,
                    estimators={"z": vx.estimators.reinforce_from(sample, log_prob)})
    """
    from vi_ext.errors import ArgumentError

    for name, fn in (("sample", sample), ("log_prob", log_prob)):
        if not callable(fn):
            raise ArgumentError(name, f"expected a function, got {fn!r}.")
    return Reinforce(baseline, decay, sampler=sample, log_prob=log_prob)
