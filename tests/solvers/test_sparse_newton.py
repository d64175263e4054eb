"""The Sparse-Newton stage of Sinkhorn: same optimum, far fewer iterations, three
differentiation modes, unbalanced marginals, float32, vmap, bad options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi_ext as vx
from vi_ext.solvers import SparseNewton, sinkhorn
from vi_ext.solvers.sparse_newton import truncate_rows

RNG = np.random.default_rng(3)
X = RNG.normal(size=(40, 2))
Y = RNG.normal(size=(50, 2)) + 1.0
W = RNG.normal(size=(40, 50))


def test_truncate_rows_keeps_the_largest_entries_of_each_row():
    lp = jnp.asarray(RNG.normal(size=(20, 60)) * 5.0)
    vals, cols = truncate_rows(lp, 6)
    expected = np.sort(np.asarray(lp), axis=1)[:, -6:]
    got = np.sort(np.log(np.asarray(vals)), axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(np.asarray(lp), np.asarray(cols), 1),
                               np.log(np.asarray(vals)), rtol=1e-5)


def test_newton_reaches_the_sinkhorn_optimum_in_far_fewer_iterations():
    with jax.enable_x64(True):
        x, y = jnp.asarray(X), jnp.asarray(Y)
        kw = {"epsilon": 0.02, "threshold": 1e-9, "max_iterations": 20000}
        plain = sinkhorn(x, y, **kw)
        newton = sinkhorn(x, y, newton=True, **kw)
        assert bool(plain.converged) and bool(newton.converged)
        assert int(newton.newton_steps) > 0
        assert int(newton.iterations) * 5 < int(plain.iterations)
        np.testing.assert_allclose(newton.reg_ot_cost, plain.reg_ot_cost, rtol=1e-9)
        np.testing.assert_allclose(newton.plan(), plain.plan(), atol=1e-9)
        row, col = newton.marginals()
        np.testing.assert_allclose(row, newton.a, atol=1e-12)
        np.testing.assert_allclose(col, newton.b, atol=1e-8)
        # the history records the Newton steps and nothing past the last update
        errs = np.asarray(newton.errors)
        assert np.all(np.isinf(errs[int(newton.iterations):]))
        assert errs[int(newton.iterations) - 1] <= 1e-9


def test_newton_unbalanced_first_order_conditions():
    with jax.enable_x64(True):
        eps, tau_a, tau_b = 0.02, 0.9, 0.8
        # no warm-up annealing and few warm-up updates: the Newton steps do the work
        opts = SparseNewton(warmup=20, anneal=None)
        out = sinkhorn(jnp.asarray(X), jnp.asarray(Y), epsilon=eps, tau_a=tau_a, tau_b=tau_b,
                       threshold=1e-10, max_iterations=5000, newton=opts)
        assert bool(out.converged) and int(out.newton_steps) > 0
        rho_a, rho_b = eps * tau_a / (1 - tau_a), eps * tau_b / (1 - tau_b)
        row, col = out.marginals()
        np.testing.assert_allclose(row, out.a * jnp.exp(-out.f / rho_a), atol=1e-10)
        np.testing.assert_allclose(col, out.b * jnp.exp(-out.g / rho_b), atol=1e-9)


def _loss(x, diff, newton=True, eps=0.05):
    out = sinkhorn(x, jnp.asarray(Y), epsilon=eps, threshold=1e-11, max_iterations=600,
                   diff=diff, newton=newton, danskin=False)
    return out.reg_ot_cost + jnp.sum(out.plan() * jnp.asarray(W))


def test_gradients_in_three_modes_match_finite_differences_and_forward_mode():
    with jax.enable_x64(True):
        x = jnp.asarray(X)
        v = jnp.asarray(RNG.normal(size=X.shape))
        h = 1e-6
        forward = jax.jit(lambda x: _loss(x, "implicit"))  # one program for both sides
        fd = (forward(x + h * v) - forward(x - h * v)) / (2 * h)
        grads = {}
        # each side compiled as one program (run eagerly, every operation and while loop of
        # the solver compiled on its own: ~400 programs)
        grad = jax.jit(jax.grad(_loss), static_argnums=1)
        for diff in ("implicit", "onestep", "unroll"):
            grads[diff] = grad(x, diff)
            np.testing.assert_allclose(jnp.vdot(grads[diff], v), fd, rtol=1e-5)
        # forward mode against reverse mode, on the implicit rule (onestep and unroll equal
        # its gradient below; one JVP compile instead of three keeps the suite short)
        _, tangent = jax.jit(lambda x, v: jax.jvp(lambda x: _loss(x, "implicit"), (x,),
                                                  (v,)))(x, v)
        np.testing.assert_allclose(tangent, jnp.vdot(grads["implicit"], v), rtol=1e-7)
        np.testing.assert_allclose(grads["onestep"], grads["implicit"], atol=1e-7)
        np.testing.assert_allclose(grads["unroll"], grads["implicit"], atol=1e-7)


def test_float32_small_epsilon_has_no_nan_and_vmaps():
    x = jnp.asarray(X, jnp.float32)
    ys = jnp.stack([jnp.asarray(Y, jnp.float32), jnp.asarray(Y, jnp.float32) - 0.5])

    def cost(y):
        return sinkhorn(x, y, epsilon=1e-3, threshold=1e-3, max_iterations=400,
                        newton=True).reg_ot_cost

    values = jax.jit(jax.vmap(cost))(ys)
    assert values.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(values)))
    grads = jax.jit(jax.vmap(jax.grad(cost)))(ys)
    assert bool(jnp.all(jnp.isfinite(grads)))
    np.testing.assert_allclose(values[1], jax.jit(cost)(ys[1]), rtol=1e-5)


@pytest.mark.parametrize("bad", ["yes", SparseNewton(entries_per_row=0),
                                 SparseNewton(cg_tol=2.0), SparseNewton(warmup=-1)])
def test_bad_newton_options_are_named(bad):
    with pytest.raises(vx.ArgumentError, match="newton"):
        sinkhorn(jnp.asarray(X), jnp.asarray(Y), newton=bad)
