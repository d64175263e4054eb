"""The pure guarded step: one optimizer step that a non-finite loss or gradient cannot spoil.

    (state, xs) -> (state, loss)

Each step draws a fresh key from the state, evaluates ``loss_and_grad`` at the state's
parameters, and applies an optax update, unless the loss or a gradient leaf is non-finite:
then parameters and optimizer state stay as they were, the key still moves on (a fresh draw
may succeed), and counters record the rejection. A step that is inactive (padding at the end
of a chunk, or any step after a stopping rule fired) changes nothing. The step is a pure
function of its state, made for ``lax.scan``: :func:`vi_ext.fit` scans it in compiled
chunks, and boosting's component fits scan the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class FitState(NamedTuple):
    """The complete state of a fit; a pytree, printable, resumable.

    Attributes:
        params: unconstrained parameters u.
        opt_state: the optax state.
        strategy_state: state kept by gradient strategies between steps (e.g. the running
            averages of ``reinforce(baseline="average")``), site-keyed.
        monitor: the states of the stopping rules (a tuple, one per rule).
        converged: whether a stopping rule has fired (later steps change nothing).
        key: the PRNG key for the next step.
        step: number of steps taken.
        num_rejected: steps rejected so far (non-finite loss or gradient).
        consecutive_rejected: length of the current run of rejected steps.
        first_rejected_step: index of the first rejected step of the fit (-1: none).
        run_start_step: index of the first step of the current run of rejections (-1: none).
        run_start_key: the key that step used (to diagnose it afterwards).
    """

    params: dict
    opt_state: Any
    strategy_state: dict
    monitor: tuple
    converged: jax.Array
    key: jax.Array
    step: jax.Array
    num_rejected: jax.Array
    consecutive_rejected: jax.Array
    first_rejected_step: jax.Array
    run_start_step: jax.Array
    run_start_key: jax.Array


def all_finite(tree: Any) -> jax.Array:
    """True when every leaf of ``tree`` is finite everywhere (a scalar bool array)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def init_state(params: Any, optimizer: optax.GradientTransformation, key: jax.Array, *,
               strategy_state: Any = None, rules: tuple = ()) -> FitState:
    """The :class:`FitState` at step 0, every leaf with a strong dtype (so that a scan's
    carry keeps one type and its program compiles once)."""
    state = FitState(
        params=params,
        opt_state=optimizer.init(params),
        strategy_state={} if strategy_state is None else strategy_state,
        monitor=tuple(r.init(params) for r in rules),
        converged=jnp.array(False),
        key=key,
        step=jnp.array(0, jnp.int32),
        num_rejected=jnp.array(0, jnp.int32),
        consecutive_rejected=jnp.array(0, jnp.int32),
        first_rejected_step=jnp.array(-1, jnp.int32),
        run_start_step=jnp.array(-1, jnp.int32),
        run_start_key=key,
    )
    return jax.tree_util.tree_map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), state)


def make_step(
    loss_and_grad: Callable[..., tuple[jax.Array, Any, Any]],
    optimizer: optax.GradientTransformation,
    rules: tuple = (),
) -> Callable[[FitState, Any], tuple[FitState, jax.Array]]:
    """One guarded optimizer step, ``(state, xs) -> (state, loss)``, for ``lax.scan``.

    Args:
        loss_and_grad: ``(params, key, strategy_state, batch) -> (loss, grads,
            strategy_state)``; the loss is minimized.
        optimizer: an optax ``GradientTransformation``; one that takes extra arguments
            (``GradientTransformationExtraArgs``, e.g. Polyak step sizes or a line search)
            receives the step's loss as ``value``.
        rules: stopping rules (:mod:`vi_ext.stopping`), updated on accepted steps.

    ``xs`` is ``active`` (a bool) or, when data are streamed, ``(active, batch)`` with the
    step's minibatch (a dict of model keyword arguments); ``loss_and_grad`` gets the batch,
    or None. The returned loss is NaN for an inactive step.

    Example:
        >>> step = make_step(loss_and_grad, optax.adam(1e-2))
        >>> state, losses = jax.lax.scan(step, init_state(u0, optax.adam(1e-2), key),
        ...                              jnp.ones(100, bool))
    """

    optimizer = optax.with_extra_args_support(optimizer)

    def step(state: FitState, xs: Any):
        active, batch = xs if isinstance(xs, tuple) else (xs, None)
        active = active & ~state.converged
        key, sub = jax.random.split(state.key)
        loss, grads, strategy_state = loss_and_grad(state.params, sub, state.strategy_state,
                                                    batch)
        finite = jnp.isfinite(loss) & all_finite(grads)
        accept = active & finite

        # one branch per outcome, not selects: the common accepted step runs only the update
        # and its own bookkeeping (each scalar select is an op of its own in the compiled
        # loop, which costs at the microsecond steps of small models)
        def accepted(_):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params,
                                                  value=loss)
            monitor = tuple(r.update(m, loss, grads) for r, m in zip(rules, state.monitor,
                                                                      strict=True))
            converged = state.converged
            for r, m in zip(rules, monitor, strict=True):
                converged = converged | r.converged(m)
            return state._replace(
                params=optax.apply_updates(state.params, updates),
                opt_state=opt_state,
                strategy_state=strategy_state,
                monitor=monitor,
                converged=converged,
                key=key,
                step=state.step + 1,
                consecutive_rejected=jnp.zeros_like(state.consecutive_rejected),
                run_start_step=jnp.full_like(state.run_start_step, -1),
            )

        def not_accepted(_):
            # a rejected step (active, non-finite) or an inactive one (nothing changes)
            reject = active
            starts_run = reject & (state.consecutive_rejected == 0)
            count = reject.astype(jnp.int32)
            return state._replace(
                key=jnp.where(active, key, state.key),
                step=state.step + active.astype(state.step.dtype),
                num_rejected=state.num_rejected + count,
                consecutive_rejected=state.consecutive_rejected + count,
                first_rejected_step=jnp.where(reject & (state.first_rejected_step < 0),
                                              state.step, state.first_rejected_step),
                run_start_step=jnp.where(starts_run, state.step, state.run_start_step),
                run_start_key=jnp.where(starts_run, sub, state.run_start_key),
            )

        new_state = jax.lax.cond(accept, accepted, not_accepted, None)
        return new_state, jnp.where(active, loss, jnp.nan)

    return step
