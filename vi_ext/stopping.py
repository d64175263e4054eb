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


class TrendState(NamedTuple):
    means: jax.Array  # the last ``num_batches`` batch means of the loss, a ring
    batch_sum: jax.Array
    batch_count: jax.Array
    num_means: jax.Array  # batch means written so far
    count: jax.Array  # accepted steps seen


class NoImprovement(NamedTuple):
    """Stop once the loss has stopped improving, by a test on its trend.

    The losses are averaged in batches of ``batch`` steps (batch means are nearly
    independent even when successive losses are not), and the last ``num_batches`` batch
    means m_1..m_n are regressed on their index: slope b, standard error se(b) from the
    residuals. The fit has stopped improving when the improvement is not significant, or
    too small to matter, at one-sided level ``z``:

        -b - z se(b) <= 0   (no significant decrease),  or
        (-b + z se(b)) n <= atol   (the upper bound of the improvement over the next
                                    window is below ``atol`` nats).

    A linear trend test on batch means is the loss-side stationarity check of RABVI/RAABBVI
    (Welandawe et al.), which test iterates; the loss is what a user watches.

    Attributes:
        batch: steps per batch mean.
        num_batches: batch means in the window (the rule looks at batch * num_batches steps).
        z: the one-sided normal quantile (1.645: 5%).
        atol: improvement over the next window (nats) that is not worth waiting for.
        min_steps: never stop before this many accepted steps.

    References:
        Welandawe, Andersen, Vehtari, Huggins. A framework for improving the reliability of
        black-box variational inference. JMLR 2024.
        Schmeiser. Batch size effects in the analysis of simulation output. Oper. Res. 1982.
    """

    batch: int = 50
    num_batches: int = 20
    z: float = 1.645
    atol: float = 0.5
    min_steps: int = 1000
    name: str = "no_improvement"

    def init(self, params: Any) -> TrendState:
        _check_positive_int(self.batch, "batch")
        if isinstance(self.num_batches, bool) or not isinstance(self.num_batches, int) \
                or self.num_batches < 3:
            from vi_ext.errors import ArgumentError

            raise ArgumentError("num_batches", f"must be an int >= 3, got {self.num_batches!r}.")
        z = jnp.zeros((), jnp.float32)
        zi = jnp.zeros((), jnp.int32)
        return TrendState(jnp.zeros(self.num_batches, jnp.float32), z, zi, zi, zi)

    def update(self, state: TrendState, loss: jax.Array, grads: Any) -> TrendState:
        s = state.batch_sum + loss.astype(jnp.float32)
        c = state.batch_count + 1
        full = c >= self.batch
        i = state.num_means % self.num_batches
        means = jnp.where(full, state.means.at[i].set(s / c), state.means)
        return TrendState(means, jnp.where(full, 0.0, s), jnp.where(full, 0, c),
                          state.num_means + full.astype(jnp.int32), state.count + 1)

    def statistics(self, state: TrendState) -> tuple[jax.Array, jax.Array]:
        """(slope, its standard error) per batch, oldest batch mean first."""
        n = self.num_batches
        age = (state.num_means - 1 - jnp.arange(n)) % n  # 0: newest
        x = (n - 1 - age).astype(jnp.float32)  # time order
        y = state.means
        xc = x - jnp.mean(x)
        sxx = jnp.sum(xc * xc)
        slope = jnp.sum(xc * (y - jnp.mean(y))) / sxx
        resid = y - jnp.mean(y) - slope * xc
        se = jnp.sqrt(jnp.sum(resid * resid) / (n - 2) / sxx)
        return slope, se

    def converged(self, state: TrendState) -> jax.Array:
        slope, se = self.statistics(state)
        n = self.num_batches
        flat = -slope - self.z * se <= 0.0
        small = (-slope + self.z * se) * n <= self.atol
        enough = (state.num_means >= n) & (state.count >= self.min_steps)
        return enough & (flat | small)


class Stationary(NamedTuple):
    """Stop after the iterates have been found stationary ``events`` times, by the test of
    :func:`vi_ext.optim.plateau` (:class:`vi_ext.optim.StationarityTest`: the same
    statistic, blocks and phases, so with the same arguments the rule counts exactly that
    optimizer's step-size cuts, and fires at its ``events``-th).

    S = |sum g|^2 / sum |g|^2 over a block of gradients is about 1 when they are pure noise
    around an optimum and grows with the block while the iterates travel.

    Attributes:
        events: stationarity events to wait for.
        block, threshold, min_phase, max_block: as in :class:`vi_ext.optim.StationarityTest`.
    """

    events: int = 5
    block: int = 100
    threshold: float = 2.0
    min_phase: int = 200
    max_block: int = 3200
    name: str = "stationary"

    def _test(self):
        from vi_ext.optim import StationarityTest

        return StationarityTest(self.block, self.threshold, self.min_phase, self.max_block)

    def init(self, params: Any) -> tuple:
        _check_positive_int(self.events, "events")
        return self._test().init(params), jnp.zeros((), jnp.int32)

    def update(self, state: tuple, loss: jax.Array, grads: Any) -> tuple:
        test_state, event = self._test().update(state[0], grads)
        return test_state, state[1] + event.astype(jnp.int32)

    def converged(self, state: tuple) -> jax.Array:
        return state[1] >= self.events


class AllOf(NamedTuple):
    """Converged when every one of ``rules`` has converged (fit's list means any of them).

    Example:
        >>> stopping = vx.stopping.AllOf((vx.stopping.Stationary(3),
        ...                               vx.stopping.NoImprovement()))
    """

    rules: tuple
    name: str = "all_of"

    def init(self, params: Any) -> tuple:
        return tuple(r.init(params) for r in self.rules)

    def update(self, state: tuple, loss: jax.Array, grads: Any) -> tuple:
        return tuple(r.update(s, loss, grads) for r, s in zip(self.rules, state, strict=True))

    def converged(self, state: tuple) -> jax.Array:
        out = jnp.array(True)
        for r, s in zip(self.rules, state, strict=True):
            out = out & r.converged(s)
        return out
