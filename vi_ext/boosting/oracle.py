"""The linear minimization oracle: the next component of the mixture.

The component s_t maximizes the residual ELBO

    RELBO(s) = E_s[log p(x, z) - log q_t(z)] - lambda_t E_s[log s(z)],

fitted by stochastic gradient ascent (reparameterized draws, Adam) with fit's own guarded
step (:func:`vi_ext.fit.step.make_step`), scanned in one compiled program. Inside the
residual, q_t is replaced by a defensive mixture (1 - rho) q_t + rho r, r heavy-tailed (see
:class:`~vi_ext.boosting.settings.Settings`), so that the residual falls in every tail. The
first component (t = 0, no q yet) is a plain ELBO fit. Where the oracle starts
(:func:`initial_component`) is the best-residual draw near the target's mass.

Each function here is compiled once per target, family and settings: the log density is a
pytree (:mod:`vi_ext.flat`), so a later call on the same model reuses the program.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax

from vi_ext.boosting import mixture as mx
from vi_ext.boosting.settings import Settings
from vi_ext.fit.step import init_state, make_step


@functools.partial(jax.jit, static_argnames=("settings", "steps", "learning_rate"))
def fit_component(density, mix, has_mix, lam, init, key, *, settings, steps, learning_rate):
    """The member s of ``mix.family`` maximizing the RELBO, by Adam from ``init`` for
    ``steps`` guarded steps; returns (params, the mean RELBO estimate over the last tenth
    of the steps)."""
    family = mix.family
    # (an empty mixture has only -inf weights: give the unused branch finite ones, or its NaN
    # gradient would leak through the where); the defensive proposal depends on q_t only,
    # so it is built once here, not at every step of the scan
    safe = mix.replace(log_weights=jnp.where(has_mix, mix.log_weights, 0.0))
    defensive = defensive_proposal(safe, settings)

    def negative_relbo(params, key):
        z = mx.member_sample(family, params, key, settings.relbo_samples)
        log_p = jax.vmap(density)(z)
        log_q = jnp.where(has_mix, defensive_log_prob(safe, defensive, z, settings), 0.0)
        log_s = mx.member_log_prob(family, params, z)
        return -jnp.mean(log_p - log_q - lam * log_s)

    def loss_and_grad(params, key, strategy_state, batch):
        loss, grads = jax.value_and_grad(negative_relbo)(params, key)
        return loss, grads, strategy_state

    optimizer = optax.adam(learning_rate)
    step = make_step(loss_and_grad, optimizer)
    state, losses = jax.lax.scan(step, init_state(init, optimizer, key), jnp.ones(steps, bool))
    tail = losses[-max(1, steps // 10):]
    return state.params, -jnp.nanmean(tail)


def defensive_proposal(mix: mx.Mixture, settings: Settings) -> dist.Distribution:
    """r: independent Student-t coordinates (``defensive_df``, Cauchy by default) at q_t's
    mean, ``defensive_width`` times q_t's standard deviations (moment-matched)."""
    w = mix.weights / jnp.sum(mix.weights)
    means, variances = mx.moments(mix)
    mean = jnp.sum(w[:, None] * means, axis=0)
    var = jnp.sum(w[:, None] * (variances + (means - mean) ** 2), axis=0)
    return dist.StudentT(settings.defensive_df, mean, settings.defensive_width * jnp.sqrt(var))


def defensive_log_prob(mix: mx.Mixture, r: dist.Distribution, z: jax.Array,
                       settings: Settings) -> jax.Array:
    """log((1 - rho) q_t(z) + rho r(z)) with r from :func:`defensive_proposal`: the
    oracle's residual log p - log q_t then stays bounded in the tails, since log r decays
    only logarithmically (defensive importance sampling, Hesterberg, 1995)."""
    log_r = jnp.sum(r.log_prob(z), axis=-1)
    rho = settings.defensive_weight
    return jnp.logaddexp(jnp.log1p(-rho) + mx.log_prob(mix, z), jnp.log(rho) + log_r)


@functools.partial(jax.jit, static_argnames=("settings",))
def initial_component(density, mix, key, *, settings):
    """Where the oracle starts for a later component: the draw, among ``candidates`` from
    q_t's components widened threefold about their means, with the largest residual
    log p - log q_t, with q_t's typical per-coordinate scale."""
    k1, k2 = jax.random.split(key)
    c = jax.random.categorical(k1, mix.log_weights, shape=(settings.candidates,))
    means, variances = mx.moments(mix)
    x = mix.family.distribution(mix.component(c)).sample(k2)
    z = means[c] + 3.0 * (x - means[c])
    log_p = jax.vmap(density)(z)
    resid = log_p - mx.log_prob(mix, z)
    # only where the target has mass: within init_window nats of the best candidate's log p
    # (far in the tails log p - log q_t grows without bound where q_t decays faster than p)
    near = log_p >= jnp.max(jnp.where(jnp.isfinite(log_p), log_p, -jnp.inf)) - settings.init_window
    resid = jnp.where(jnp.isfinite(resid) & near, resid, -jnp.inf)
    best = z[jnp.argmax(resid)]
    w = mix.weights
    log_scale = jnp.sum(w[:, None] * 0.5 * jnp.log(variances), axis=0) / jnp.sum(w)
    return mix.family.init(best, log_scale)
