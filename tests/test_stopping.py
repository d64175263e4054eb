"""Stopping rules, one update at a time (vi_ext.stopping)."""


import jax.numpy as jnp

import vi_ext as vx


def test_relative_loss_change_rule():
    rule = vx.stopping.RelativeLossChange(window=10, rtol=1e-3)
    s = rule.init({})
    for _ in range(19):
        s = rule.update(s, jnp.array(5.0), None)
        assert not bool(rule.converged(s))  # fewer than 2 windows seen
    s = rule.update(s, jnp.array(5.0), None)
    assert bool(rule.converged(s))
    s = rule.init({})
    for i in range(60):  # a steady 1% decrease per step never converges
        s = rule.update(s, jnp.array(100.0 * 0.99**i), None)
        assert not bool(rule.converged(s))


def test_gradients_uncorrelated_rule():
    rule = vx.stopping.GradientsUncorrelated(window=5, min_steps=10)
    p = {"a": jnp.zeros(2)}
    s = rule.init(p)
    for _ in range(40):  # all pointing the same way: still travelling
        s = rule.update(s, jnp.array(0.0), {"a": jnp.array([1.0, 0.5])})
    assert not bool(rule.converged(s))
    s = rule.init(p)
    for i in range(40):  # oscillating: arrived
        s = rule.update(s, jnp.array(0.0), {"a": jnp.array([1.0, 0.5]) * (-1.0) ** i})
    assert bool(rule.converged(s))
