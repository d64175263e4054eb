"""fit as a layer: hypergradients through the VI optimum (models/empirical_bayes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi_ext as vx
from models import empirical_bayes as eb


@pytest.fixture(scope="module")
def problem():
    with jax.enable_x64(True):
        train, val = eb.data(num_train=60, num_features=3)
        train = {"X": jnp.asarray(train["X"], jnp.float64), "y": jnp.asarray(train["y"])}
        val = {"X": jnp.asarray(val["X"], jnp.float64), "y": jnp.asarray(val["y"])}
        layer = vx.vi_layer(eb.model, eb.guide, num_particles=8, tol=1e-10)
        yield layer, eb.objective(layer, train, val), train


def test_the_layer_solves_the_fixed_sample_stationarity_condition(problem):
    layer, _, train = problem
    with jax.enable_x64(True):
        opt = jax.jit(layer)(jnp.asarray(0.3), train["X"], train["y"])
        assert bool(opt.converged) and float(opt.grad_norm) <= 1e-10 * abs(float(opt.objective))
        assert set(opt.params) == {"alpha_loc", "alpha_scale", "beta_loc", "beta_scale"}
        assert bool(jnp.all(opt.params["beta_scale"] > 0))


def test_hypergradient_matches_finite_differences_and_forward_mode(problem):
    _, loss, _ = problem
    with jax.enable_x64(True):
        s = jnp.asarray(0.3)
        value_and_grad = jax.jit(jax.value_and_grad(loss))
        value, grad = value_and_grad(s)

        def f(s):  # (the same compiled program serves the finite differences)
            return value_and_grad(s)[0]

        h = 1e-4
        fd = (f(s + h) - f(s - h)) / (2 * h)
        # the FD error is O(h^2) plus the inner tolerance over h, both far below 1e-4 here
        np.testing.assert_allclose(grad, fd, rtol=1e-4)
        assert abs(float(grad)) > 1e-3  # the hyperparameter matters: not a trivial zero
        _, tangent = jax.jit(lambda s: jax.jvp(loss, (s,), (jnp.asarray(1.0),)))(s)
        np.testing.assert_allclose(tangent, grad, rtol=1e-8)
        np.testing.assert_allclose(value, f(s), rtol=1e-12)


def test_a_layer_that_stops_short_says_so_and_bad_arguments_are_named(problem):
    _, _, train = problem
    with jax.enable_x64(True):
        short = vx.vi_layer(eb.model, eb.guide, num_particles=8, max_iterations=2, tol=1e-12)
        opt = jax.jit(short)(jnp.asarray(0.3), train["X"], train["y"])
        assert not bool(opt.converged) and int(opt.iterations) == 2
    for kwargs, name in (({"num_particles": 0}, "num_particles"),
                         ({"max_iterations": 0}, "max_iterations"), ({"tol": -1.0}, "tol")):
        with pytest.raises(vx.ArgumentError, match=name):
            vx.vi_layer(eb.model, eb.guide, **kwargs)
    with pytest.raises(vx.ArgumentError, match="init_params"):
        vx.vi_layer(eb.model, eb.guide, init_params={"nope": 1.0})(
            jnp.asarray(0.0), train["X"], train["y"])


def test_the_old_spelling_under_solvers_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="vx.vi_layer"):
        assert vx.solvers.vi_layer is vx.vi_layer
