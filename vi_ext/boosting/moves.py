"""The moves of one boosting iteration: a direction, its :class:`~vi_ext.boosting.steps.Line`,
the step a rule chooses along it, and the new mixture.

- :func:`frank_wolfe_line`: d = s - q_t for a new component s. f(q_t + gamma d) is estimated
  with common random numbers, one set of draws from q_t and one from s reused for every
  gamma through the stratified identity f(q_gamma) = (1 - gamma) E_q[h_gamma] +
  gamma E_s[h_gamma], h_gamma = log q_gamma - log p; the gap is
  g = E_q[log q - log p] - E_s[log q - log p]; ||d||^2 is closed form for Gaussian
  families, else a Monte Carlo estimate from the same draws.
- :func:`frank_wolfe_move`, :func:`away_move`, :func:`pairwise_move`: the step of each
  variant (the away and pairwise estimates are in :mod:`vi_ext.boosting.away`), each a
  :class:`Move`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vi_ext.boosting import away
from vi_ext.boosting import mixture as mx
from vi_ext.boosting.settings import Settings
from vi_ext.boosting.steps import Line, Step, StepRule
from vi_ext.flat import as_density


class Move(NamedTuple):
    """One step of boosting: the new mixture and the record of how it was chosen.

    Attributes:
        mixture: the mixture after the move.
        step: the rule's :class:`~vi_ext.boosting.steps.Step` (gamma, tries, ...).
        f_before, f_after: the estimate of KL(q || p) - log Z before and after, on the
            move's own draws.
        kind: ``"frank_wolfe"``, ``"away"``, ``"drop"`` (an away step that removes a
            component), ``"pairwise"`` or ``"pairwise_drop"``.
    """

    mixture: mx.Mixture
    step: Step
    f_before: float
    f_after: float
    kind: str


class LineDraws(NamedTuple):
    """What the Frank-Wolfe line's estimates need, at n draws from q_t (``q``) and from the
    new component (``s``): (log p, log q_t, log s) at each."""

    q: tuple
    s: tuple


def frank_wolfe_line(density, mix: mx.Mixture, params: dict, key: jax.Array,
                     settings: Settings) -> tuple[Line, LineDraws]:
    """The Frank-Wolfe direction towards the member ``params`` of ``mix.family``, as a
    :class:`~vi_ext.boosting.steps.Line` estimated on ``settings.num_samples`` draws, and
    those draws."""
    draws, log_d2 = _line_draws(as_density(density), mix, params, key, settings=settings)
    line = Line(lambda gamma: f_estimate(draws, gamma), float(gap(draws)),
                float(f_estimate(draws, 0.0)), float(log_d2))
    return line, draws


@functools.partial(jax.jit, static_argnames=("settings",))
def _line_draws(density, mix, params, key, *, settings):
    kq, ks = jax.random.split(key)
    n = settings.num_samples
    family = mix.family
    out = {}
    for name, z in (("q", mx.sample(mix, kq, n)), ("s", mx.member_sample(family, params, ks, n))):
        out[name] = (jax.vmap(density)(z), mx.log_prob(mix, z),
                     mx.member_log_prob(family, params, z))
    if mx.has_closed_form(family):
        log_d2 = mx.log_sq_distance(mx.single(params, family), mix)
    else:
        (_, lq_q, ls_q), (_, lq_s, ls_s) = out["q"], out["s"]
        log_d2 = mx.log_sq_distance_mc(ls_s, lq_s, ls_q, lq_q)
    return LineDraws(out["q"], out["s"]), log_d2


@jax.jit
def f_estimate(draws: LineDraws, gamma) -> jax.Array:
    """Monte Carlo f(q_gamma) - log Z = E_{q_gamma}[log q_gamma - log p] (common random
    numbers: the same draws for every gamma), stratified over the two mixture parts."""
    gamma = jnp.asarray(gamma)

    def h(part):
        log_p, log_q, log_s = part
        lq = jnp.logaddexp(jnp.log1p(-gamma) + log_q, jnp.log(gamma) + log_s)
        lq = jnp.where(gamma == 0, log_q, jnp.where(gamma == 1, log_s, lq))
        return jnp.mean(lq - log_p)

    hq, hs = h(draws.q), h(draws.s)
    return jnp.where(gamma == 0, hq, jnp.where(gamma == 1, hs, (1 - gamma) * hq + gamma * hs))


def gap(draws: LineDraws) -> jax.Array:
    """g = E_q[log q - log p] - E_s[log q - log p]: the Frank-Wolfe gap estimate."""
    lp_q, lq_q, _ = draws.q
    lp_s, lq_s, _ = draws.s
    return jnp.mean(lq_q - lp_q) - jnp.mean(lq_s - lp_s)


def frank_wolfe_move(mix: mx.Mixture, slot: int, params: dict, line: Line, rule: StepRule,
                     t: int, log_L: float | None) -> Move:
    """The Frank-Wolfe step q + gamma (s - q), with s (``params``) written into ``slot``."""
    step = rule(line, t, log_L)
    if step.gamma > 0:
        mix = mx.add(mix, slot, params, jnp.asarray(step.gamma))
    return Move(mix, step, line.f0, float(line.f(step.gamma)), "frank_wolfe")


def away_move(density, mix: mx.Mixture, g_fw: float, rule: StepRule, t: int,
              log_L: float | None, key: jax.Array, settings: Settings) -> Move | None:
    """The away step from the worst component, if its gap beats the Frank-Wolfe gap
    ``g_fw`` (else None); a full away step drops that component."""
    draws = away.component_draws(density, mix, key, n=settings.num_samples)
    v, g_a = away.away_vertex(draws, mix.log_weights)
    g_a = float(g_a)
    if not (g_a > g_fw) or not math.isfinite(g_a):
        return None
    lw = mix.log_weights
    cap = float(away.gamma_max(lw, v))

    def f(gm):
        return away.objective(draws, away.away_log_weights(lw, v, gm))

    if mx.has_closed_form(mix.family):
        log_d2 = float(mx.log_sq_distance(mix, mx.single(mix.component(v), mix.family)))
    else:
        log_d2 = float(away.log_sq_distance_away(draws, lw, v))
    line = Line(f, g_a, float(f(0.0)), log_d2, cap=cap, adds_mass=False)
    step = rule(line, t, log_L)
    kind = "drop" if step.gamma >= cap * (1 - 1e-6) else "away"
    if step.gamma > 0:
        mix = mix.replace(log_weights=away.away_log_weights(lw, v, jnp.asarray(step.gamma)))
    return Move(mix, step, line.f0, float(f(step.gamma)), kind)


def pairwise_move(density, mix: mx.Mixture, slot: int, params: dict, rule: StepRule, t: int,
                  log_L: float | None, key: jax.Array, settings: Settings) -> Move:
    """The pairwise step from the away vertex to the new component s (``params``, written
    into ``slot``); with one active component it is the Frank-Wolfe step."""
    base = mx.add(mix, slot, params, jnp.asarray(0.0))  # s written in, weight 0
    draws = away.component_draws(density, base, key, n=settings.num_samples)
    s = jnp.asarray(slot)
    v, g_p = away.pairwise_vertex(draws, base.log_weights, s)
    lw = base.log_weights
    cap = float(jnp.exp(lw[v]))

    def f(gm):
        return away.objective(draws, away.pairwise_log_weights(lw, s, v, gm))

    if mx.has_closed_form(base.family):
        log_d2 = float(mx.log_sq_distance(mx.single(params, base.family),
                                          mx.single(base.component(v), base.family)))
    else:
        log_d2 = float(away.log_sq_distance_pair(draws, s, v))
    # like the Frank-Wolfe step, this one adds mass where q may have none
    line = Line(f, float(g_p), float(f(0.0)), log_d2, cap=cap, adds_mass=True)
    step = rule(line, t, log_L)
    kind = "pairwise_drop" if step.gamma >= cap * (1 - 1e-6) else "pairwise"
    if step.gamma > 0:
        mix = base.replace(log_weights=away.pairwise_log_weights(lw, s, v,
                                                                  jnp.asarray(step.gamma)))
    return Move(mix, step, line.f0, float(f(step.gamma)), kind)
