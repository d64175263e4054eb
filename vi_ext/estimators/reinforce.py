"""REINFORCE (the score-function estimator), Rao-Blackwellized, with baselines.

    d/dphi E_{q_phi}[F] = E[ (F - b) d/dphi log q_phi(z) ] + E[ dF/dphi ]

for any b independent of z (Williams, 1992). In the surrogate this is the DiCE term
(stop_grad(F) - b) * (log q(z) - stop_grad(log q(z))) (Foerster et al., 2018), added to F.

F is replaced by the draw's *learning signal* (``view.signal``, see
:mod:`vi_ext.program.view`): the part of F that depends on the draw, position by position.
The terms of F that do not depend on it (other particles' log weights under a mean, other
positions of a plate, upstream factors) have zero covariance with its score and are dropped,
as in TraceGraph_ELBO, so that local latents in a plate each get their own signal; the
estimator stays unbiased for any program, since only independent terms are removed.

Baselines (subtracted from the signal):
- ``None``: b = 0.
- ``"average"``: a decaying average of the draw's past signals, per position, b_t =
  bias-corrected EMA_decay(signal_1..signal_{t-1}), kept in the fit's strategy state (it only
  depends on earlier steps, so it is independent of the current draw). Outside ``fit`` it
  starts at 0.
- ``"loo"``: leave-one-out across particles (VIMCO, Mnih & Rezende, 2016, generalized): when
  the program's value depends on the draw through a_L * logmeanexp over its particles of an
  input aligned with them, particle k's baseline is that term with x_k replaced by the mean
  of the others. Refused by name for programs without such a logmeanexp.
- a callable ``b()``: a baseline of the user's, run inside the guide (so ``numpyro.param``
  sites in it are fitted). It is learned by regression: the surrogate adds
  -(stop_grad(signal) - b)^2 / 2, whose gradient reaches only b's parameters.

:func:`reinforce_from` builds the same strategy from a sampler and a log density of the
user's, for distributions NumPyro cannot sample or score.

Reference: Williams, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 1992; Schulman, Heess, Weber & Abbeel, "Gradient
Estimation Using Stochastic Computation Graphs", NeurIPS 2015; Mnih & Rezende, "Variational
inference for Monte Carlo objectives", ICML 2016.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from vi_ext.errors import ArgumentError, SiteError
from vi_ext.estimators.base import Contribution, Draw, Site
from vi_ext.estimators.continuation import value_shape

sg = jax.lax.stop_gradient


def state_key(address: tuple) -> str:
    """The strategy-state entry of a draw's decaying-average baseline."""
    return "reinforce/" + "/".join(address)


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
        elif isinstance(baseline, str) and baseline in ("loo", "average"):
            self.kind = baseline
        elif callable(baseline):
            self.kind = "fn"
        else:
            raise ArgumentError(
                "baseline",
                "reinforce(): expected None, 'average', 'loo' or a callable, got "
                f"{baseline!r}.",
            )
        if not (isinstance(decay, (int, float)) and 0.0 <= decay < 1.0):
            raise ArgumentError("decay", f"reinforce(): expected a number in [0, 1), got "
                                f"{decay!r}.")
        self.baseline = baseline
        self.decay = float(decay)

    def __repr__(self) -> str:
        extra = f", decay={self.decay}" if self.kind == "average" else ""
        if self.sampler is not None:
            return (f"reinforce_from({self.sampler!r}, {self.log_prob!r}, "
                    f"baseline={self.baseline!r}{extra})")
        return f"reinforce(baseline={self.baseline!r}{extra})"

    def sample(self, site: Site, key: jax.Array) -> Draw:
        if self.sampler is None:
            value = sg(site.fn.sample(key, site.sample_shape))
            log_prob = None
        else:
            value = sg(jnp.asarray(self.sampler(site, key)))
            expected = value_shape(site)
            if tuple(value.shape) != expected:
                raise SiteError(site.name, f"reinforce_from(): the sampler returned shape "
                                f"{tuple(value.shape)}, the site needs {expected} "
                                "(sample_shape + batch_shape + event_shape).")
            log_prob = jnp.asarray(self.log_prob(site, value))
            per_position = tuple(site.sample_shape) + tuple(site.fn.batch_shape)
            if log_prob.shape != per_position:
                log_prob = jnp.sum(log_prob)  # one joint score for the whole site
        # a learned baseline runs inside the guide, so that its params are found and fitted
        data = jnp.asarray(self.baseline(), jnp.result_type(float)) if self.kind == "fn" \
            else None
        return Draw(value, log_prob=log_prob, signal=True, data=data)

    def contribute(self, view) -> Contribution:
        lp = view.position_log_prob
        score = lp - sg(lp)
        direct = view.without_direct_log_prob_gradient()
        if self.kind == "loo":
            return Contribution(jnp.sum(sg(view.leave_one_out()) * score) + direct)
        signal = sg(view.signal)
        if self.kind == "none":
            return Contribution(jnp.sum(signal * score) + direct)
        if self.kind == "fn":
            b = view.data
            b = jnp.reshape(b, jnp.shape(b) + (1,) * (signal.ndim - jnp.ndim(b))) \
                if jnp.ndim(b) < signal.ndim and jnp.ndim(b) > 0 else b
            regression = -0.5 * jnp.sum((signal - b) ** 2)
            return Contribution(jnp.sum((signal - sg(b)) * score) + regression + direct)
        # "average": a bias-corrected decaying average of past signals, per position
        key = state_key(view.address)
        zero = jnp.zeros(signal.shape, signal.dtype)
        mean, count = view.state.get(key, (zero, jnp.zeros((), signal.dtype)))
        b = jnp.where(count > 0, mean / (1.0 - self.decay ** jnp.maximum(count, 1.0)), 0.0)
        new = (self.decay * mean + (1.0 - self.decay) * signal, count + 1.0)
        return Contribution(jnp.sum((signal - sg(b)) * score) + direct, state={key: new})


def reinforce(baseline: None | str | Callable[[], Any] = None, decay: float = 0.9) -> Reinforce:
    """Score-function gradients, for any distribution NumPyro can sample and score.

    Args:
        baseline: ``None``; ``"average"`` (a decaying average of the draw's past learning
            signals, carried across fit steps); ``"loo"`` (leave-one-out across particles,
            VIMCO, for programs that combine particles with ``logmeanexp``); or a
            zero-argument callable returning a scalar baseline, e.g.
            ``lambda: numpyro.param("b", 0.0)``, fitted by regression on the signal.
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
    for name, fn in (("sample", sample), ("log_prob", log_prob)):
        if not callable(fn):
            raise ArgumentError(name, f"expected a function, got {fn!r}.")
    return Reinforce(baseline, decay, sampler=sample, log_prob=log_prob)
