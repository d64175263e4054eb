"""The pure guarded step: accepted, rejected and inactive steps, by the public names."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vi_ext.fit import FitState, all_finite, init_state, make_step


def _loss_and_grad(params, key, strategy_state, batch):
    """x^2 where x <= 1, NaN beyond (so a step from x > 1 is rejected)."""
    x = params["x"]
    return jnp.where(x > 1.0, jnp.nan, x**2), {"x": 2 * x}, strategy_state


def _state(x):
    return init_state({"x": jnp.asarray(x)}, optax.adam(0.1), jax.random.PRNGKey(0))


def test_all_finite_looks_at_every_leaf():
    assert bool(all_finite({"a": jnp.ones(3), "b": (jnp.zeros(2), 1.0)}))
    assert not bool(all_finite({"a": jnp.ones(3), "b": jnp.array([0.0, jnp.inf])}))
    assert bool(all_finite({}))


def test_an_accepted_step_updates_params_and_counts():
    step = make_step(_loss_and_grad, optax.adam(0.1))
    state, loss = step(_state(0.5), jnp.asarray(True))
    assert isinstance(state, FitState)
    assert float(loss) == 0.25 and float(state.params["x"]) < 0.5
    assert int(state.step) == 1 and int(state.num_rejected) == 0


def test_a_rejected_step_keeps_params_and_optimizer_state_and_moves_the_key():
    start = _state(2.0)
    state, loss = make_step(_loss_and_grad, optax.adam(0.1))(start, jnp.asarray(True))
    assert np.isnan(float(loss))
    assert float(state.params["x"]) == 2.0
    for a, b in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(start.opt_state),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(state.key, start.key)  # a fresh draw may succeed
    assert int(state.step) == 1 and int(state.num_rejected) == 1
    assert int(state.consecutive_rejected) == 1 and int(state.first_rejected_step) == 0
    assert int(state.run_start_step) == 0


def test_an_inactive_step_changes_nothing():
    start = _state(0.5)
    state, loss = make_step(_loss_and_grad, optax.adam(0.1))(start, jnp.asarray(False))
    assert np.isnan(float(loss))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(start), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_step_scans_and_passes_the_loss_to_optimizers_that_take_it():
    seen = []

    def update(updates, state, params=None, *, value=None, **extra):
        seen.append(value)
        return jax.tree.map(lambda g: -0.1 * g, updates), state

    opt = optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)
    state, losses = jax.lax.scan(make_step(_loss_and_grad, opt), _state(0.5),
                                 jnp.ones(3, bool))
    assert losses.shape == (3,) and int(state.step) == 3
    assert seen and seen[0] is not None  # the loss reached the optimizer (as ``value``)
