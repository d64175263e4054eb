"""Stopping rules: when a stochastic optimization has converged.

A rule is a small object with three pure functions, evaluated inside the compiled step (so
rules see every step and cost no host round trip):

    state = rule.init(params)
    state = rule.update(state, loss, grads)    # called on accepted steps only
    done = rule.converged(state)               # a boolean scalar

``fit(..., stopping=[rule, ...])`` stops at the first step where any rule has converged;
``FitResult.stop_reason`` says which. Write your own rule with the same three methods.

References: the convergence criteria of TensorFlow Probability
(``tfp.optimizer.convergence_criteria``: ``LossNotDecreasing``,
``SuccessiveGradientsAreUncorrelated``); Pflug, "Non-asymptotic confidence bounds for
stochastic approximation algorithms with constant step size", 1990 (successive stochastic
gradients become negatively correlated once the iterates oscillate around the optimum).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class WindowState(NamedTuple):
    buffer: jax.Array  # the last 2 * window losses, a ring
    count: jax.Array  # accepted steps seen


class RelativeLossChange(NamedTuple):
    """Stop when the mean loss of the last ``window`` steps differs from the mean of the
    ``window`` steps before by less than ``rtol`` (relative) or ``atol`` (absolute):

        |mean(L[t-w+1..t]) - mean(L[t-2w+1..t-w])| <= max(atol, rtol * |mean(L[t-2w+1..t-w])|)

    Averaging over windows makes the rule robust to the noise of stochastic losses; choose
    ``window`` so that the noise of a window mean, sd(L) / sqrt(window), is below the change
    you care about.

    Attributes:
        window: steps per window (the rule looks at the last 2 * window steps).
        rtol: relative tolerance.
        atol: absolute tolerance (in the loss's units, nats for ELBO-type objectives).
        min_steps: never stop before this many accepted steps.
    """

    window: int = 200
    rtol: float = 1e-4
    atol: float = 0.0
    min_steps: int = 0
    name: str = "relative_loss_change"

    def init(self, params: Any) -> WindowState:
        _check_positive_int(self.window, "window")
        return WindowState(jnp.zeros(2 * self.window, jnp.float32), jnp.array(0, jnp.int32))

    def update(self, state: WindowState, loss: jax.Array, grads: Any) -> WindowState:
        i = state.count % (2 * self.window)
        return WindowState(state.buffer.at[i].set(loss.astype(jnp.float32)), state.count + 1)

    def converged(self, state: WindowState) -> jax.Array:
        w = self.window
        # age 0 is the newest entry
        age = (state.count - 1 - jnp.arange(2 * w)) % (2 * w)
        recent = jnp.sum(jnp.where(age < w, state.buffer, 0.0)) / w
        older = jnp.sum(jnp.where(age >= w, state.buffer, 0.0)) / w
        tol = jnp.maximum(self.atol, self.rtol * jnp.abs(older))
        enough = (state.count >= 2 * w) & (state.count >= self.min_steps)
        return enough & (jnp.abs(recent - older) <= tol)


class CorrelationState(NamedTuple):
    previous: Any  # the previous accepted gradient
    average: jax.Array  # moving average of cos(g_t, g_{t-1})
    count: jax.Array


class GradientsUncorrelated(NamedTuple):
    """Stop when successive gradients are no longer positively correlated.

    While the iterates travel towards an optimum, successive stochastic gradients point the
    same way; once they oscillate around it, successive gradients are uncorrelated or
    negatively correlated. The rule keeps an exponential moving average, with decay
    1 - 1/window, of the cosine between successive gradients,

        a_t = (1 - 1/w) a_{t-1} + (1/w) <g_t, g_{t-1}> / (|g_t| |g_{t-1}|),

    and stops once a_t < threshold (TFP's rule uses the raw inner product and threshold 0).

    Attributes:
        window: the moving average's time scale, in steps.
        threshold: stop when the average cosine falls below it.
        min_steps: never stop before this many accepted steps.
    """

    window: int = 50
    threshold: float = 0.0
    min_steps: int = 100
    name: str = "gradients_uncorrelated"

    def init(self, params: Any) -> CorrelationState:
        _check_positive_int(self.window, "window")
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return CorrelationState(zeros, jnp.array(1.0, jnp.float32), jnp.array(0, jnp.int32))

    def update(self, state: CorrelationState, loss: jax.Array, grads: Any) -> CorrelationState:
        dot = _tree_dot(grads, state.previous)
        norms = jnp.sqrt(_tree_dot(grads, grads) * _tree_dot(state.previous, state.previous))
        cos = jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1.0), 0.0)
        decay = 1.0 - 1.0 / self.window
        # the first gradient has no predecessor: keep the average where it is
        average = jnp.where(state.count > 0, decay * state.average + (1 - decay) * cos,
                            state.average)
        return CorrelationState(grads, average.astype(jnp.float32), state.count + 1)

    def converged(self, state: CorrelationState) -> jax.Array:
        return (state.count >= self.min_steps) & (state.average < self.threshold)


def _tree_dot(a: Any, b: Any) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: jnp.vdot(x, y), a, b))
    return sum(leaves, jnp.zeros((), jnp.float32))


def _check_positive_int(value: Any, name: str) -> None:
    from vi_ext.errors import ArgumentError

    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(name, f"a stopping rule's {name} must be an int >= 1, got {value!r}.")


def is_rule(obj: Any) -> bool:
    """Whether ``obj`` has the stopping-rule protocol (init, update, converged)."""
    return all(callable(getattr(obj, m, None)) for m in ("init", "update", "converged"))
