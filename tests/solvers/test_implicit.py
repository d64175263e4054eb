"""Implicit layers: custom_root, custom_fixed_point and fixed_point's three modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi_ext as vx
from vi_ext.solvers import custom_fixed_point, custom_root, fixed_point

RNG = np.random.default_rng(0)
X64 = RNG.normal(size=(20, 5))
Y64 = RNG.normal(size=20)


def F(w, lam, X, y):
    """Gradient of 1/2 ||X w - y||^2 + lam/2 ||w||^2."""
    return X.T @ (X @ w - y) + lam * w


def exact(lam, X, y):
    return jnp.linalg.solve(X.T @ X + lam * jnp.eye(X.shape[1], dtype=X.dtype), X.T @ y)


def _ridge(method):
    # the solver itself is opaque to autodiff: its gradient must come from custom_root
    def solver(init, lam, X, y):
        return jax.lax.stop_gradient(exact(lam, X, y))

    return custom_root(F, solve=method)(solver)


@pytest.mark.parametrize("method", ["cg", "gmres", "normal_cg", "bicgstab", "dense"])
def test_custom_root_derivatives_are_exact_in_both_modes(method):
    with jax.enable_x64(True):
        X, y = jnp.asarray(X64), jnp.asarray(Y64)
        ridge = _ridge(method)

        def loss(lam, X):
            return jnp.sum(ridge(None, lam, X, y) ** 2)

        def loss_exact(lam, X):
            return jnp.sum(exact(lam, X, y) ** 2)

        g, g_ref = jax.grad(loss, (0, 1))(2.0, X), jax.grad(loss_exact, (0, 1))(2.0, X)
        np.testing.assert_allclose(g[0], g_ref[0], rtol=1e-8)
        np.testing.assert_allclose(g[1], g_ref[1], rtol=1e-7, atol=1e-10)
        # forward mode equals reverse mode, and second derivatives work
        np.testing.assert_allclose(jax.jacfwd(loss)(2.0, X), g[0], rtol=1e-8)
        np.testing.assert_allclose(jax.hessian(loss)(2.0, X), jax.hessian(loss_exact)(2.0, X),
                                   rtol=1e-6)
        # and finite differences
        h = 1e-5
        fd = (loss(2.0 + h, X) - loss(2.0 - h, X)) / (2 * h)
        np.testing.assert_allclose(g[0], fd, rtol=1e-6)


def test_custom_root_is_float32_safe_and_vmaps():
    X, y = jnp.asarray(X64, jnp.float32), jnp.asarray(Y64, jnp.float32)
    ridge = _ridge("cg")
    lams = jnp.array([0.5, 1.0, 4.0], jnp.float32)
    grads = jax.vmap(jax.grad(lambda lam: jnp.sum(ridge(None, lam, X, y) ** 2)))(lams)
    ref = jax.vmap(jax.grad(lambda lam: jnp.sum(exact(lam, X, y) ** 2)))(lams)
    assert grads.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(grads)))
    np.testing.assert_allclose(grads, ref, rtol=1e-3)


def test_aux_outputs_are_passed_through_undifferentiated():
    def solver(init, lam, X, y):
        return exact(lam, X, y), {"iterations": jnp.asarray(7), "note": jnp.asarray(1.0)}

    ridge = custom_root(F, solve="dense", has_aux=True)(solver)
    X, y = jnp.asarray(X64, jnp.float32), jnp.asarray(Y64, jnp.float32)
    w, aux = ridge(None, 2.0, X, y)
    assert int(aux["iterations"]) == 7
    g = jax.grad(lambda lam: jnp.sum(ridge(None, lam, X, y)[0]))(2.0)
    assert np.isfinite(g)


def _gd_map(w, lam, X, y):
    return w - 0.01 * F(w, lam, X, y)


@pytest.mark.parametrize("diff", ["implicit", "unroll"])
def test_fixed_point_gradients_match_the_exact_ones(diff):
    with jax.enable_x64(True):
        X, y = jnp.asarray(X64), jnp.asarray(Y64)

        def loss(lam):
            w, info = fixed_point(_gd_map, jnp.zeros(5), lam, X, y, diff=diff, tol=1e-12,
                                  max_iterations=4000)
            return jnp.sum(w**2), info

        (value, info), g = jax.value_and_grad(loss, has_aux=True)(2.0)
        assert bool(info.converged) and int(info.iterations) < 4000
        g_ref = jax.grad(lambda lam: jnp.sum(exact(lam, X, y) ** 2))(2.0)
        np.testing.assert_allclose(g, g_ref, rtol=1e-6)
        np.testing.assert_allclose(jax.jacfwd(lambda lam: loss(lam)[0])(2.0), g_ref, rtol=1e-6)


def test_onestep_is_accurate_for_a_strong_contraction_only():
    with jax.enable_x64(True):
        c = 0.05
        A = jnp.asarray(np.linalg.qr(RNG.normal(size=(4, 4)))[0]) * c  # ||A|| = c

        def T(x, theta):
            return A @ x + theta

        theta = jnp.arange(4.0)
        jac = {d: jax.jacrev(lambda t, d=d: fixed_point(T, jnp.zeros(4), t, diff=d,
                                                         tol=1e-13)[0])(theta)
               for d in ("implicit", "onestep")}
        exact_jac = jnp.linalg.inv(jnp.eye(4) - A)
        np.testing.assert_allclose(jac["implicit"], exact_jac, atol=1e-10)
        # one step keeps only the first term I of the Neumann series (I - A)^{-1} = I + A + ...
        err = float(jnp.linalg.norm(jac["onestep"] - exact_jac, 2))
        assert err <= c / (1 - c) * (1 + 1e-6)
        np.testing.assert_allclose(jac["onestep"], jnp.eye(4), atol=1e-12)
        # ... and is far off for a slow contraction (the gradient-descent map above)
        X, y = jnp.asarray(X64), jnp.asarray(Y64)
        g1 = jax.grad(lambda lam: jnp.sum(fixed_point(_gd_map, jnp.zeros(5), lam, X, y,
                                                      diff="onestep", tol=1e-12,
                                                      max_iterations=4000)[0] ** 2))(2.0)
        g_ref = jax.grad(lambda lam: jnp.sum(exact(lam, X, y) ** 2))(2.0)
        assert abs(g1 - g_ref) > 0.5 * abs(g_ref)


def test_custom_fixed_point_and_non_convergence_is_a_flag_not_an_error():
    X, y = jnp.asarray(X64, jnp.float32), jnp.asarray(Y64, jnp.float32)
    w, info = fixed_point(_gd_map, jnp.zeros(5), 2.0, X, y, max_iterations=3)
    assert not bool(info.converged) and int(info.iterations) == 3
    assert bool(jnp.all(jnp.isfinite(w)))

    @custom_fixed_point(_gd_map, solve="gmres")
    def solver(init, lam, X, y):
        return exact(lam, X, y)

    g = jax.grad(lambda lam: jnp.sum(solver(None, lam, X, y) ** 2))(2.0)
    g_ref = jax.grad(lambda lam: jnp.sum(exact(lam, X, y) ** 2))(2.0)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3)


def test_bad_arguments_are_named():
    with pytest.raises(vx.ArgumentError, match="solve"):
        custom_root(F, solve="lu")
    with pytest.raises(vx.ArgumentError, match="diff"):
        fixed_point(_gd_map, jnp.zeros(5), 1.0, X64, Y64, diff="backprop")
    with pytest.raises(vx.ArgumentError, match="max_iterations"):
        fixed_point(_gd_map, jnp.zeros(5), 1.0, X64, Y64, max_iterations=0)
