"""Log-domain Sinkhorn: the regularized cost, marginals, three differentiation modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import xlogy

import vi_ext as vx
from vi_ext.solvers import sinkhorn, sinkhorn_divergence

RNG = np.random.default_rng(0)
X = RNG.normal(size=(30, 2))
Y = RNG.normal(size=(40, 2)) + 1.0
TIGHT = {"threshold": 1e-11, "max_iterations": 3000}


def _kl(p, q):
    return jnp.sum(xlogy(p, p) - xlogy(p, q) - p + q)


def _primal(out, rho_a=None, rho_b=None):
    P, a, b = out.plan(), out.a, out.b
    value = jnp.sum(P * out.cost_matrix) + out.epsilon * _kl(P, a[:, None] * b[None, :])
    if rho_a is not None:
        value += rho_a * _kl(P.sum(1), a) + rho_b * _kl(P.sum(0), b)
    return value


@pytest.mark.parametrize("eps", [1.0, 0.1])
def test_balanced_cost_is_the_primal_optimum_and_marginals_match(eps):
    with jax.enable_x64(True):
        a = jnp.asarray(RNG.dirichlet(np.ones(30)))
        out = sinkhorn(jnp.asarray(X), jnp.asarray(Y), a=a, epsilon=eps, **TIGHT)
        assert bool(out.converged) and int(out.iterations) < 3000
        row, col = out.marginals()
        np.testing.assert_allclose(row, a, atol=1e-10)
        np.testing.assert_allclose(col, out.b, atol=1e-10)
        np.testing.assert_allclose(out.reg_ot_cost, _primal(out), rtol=1e-9)
        # the error history is recorded and ends below the threshold
        errs = np.asarray(out.errors)[: int(out.iterations)]
        assert errs[-1] <= 1e-11 and np.all(np.isinf(np.asarray(out.errors)[int(out.iterations):]))
        # a cost matrix gives the same answer as the point clouds
        same = sinkhorn(cost=out.cost_matrix, a=a, epsilon=eps, **TIGHT)
        np.testing.assert_allclose(same.reg_ot_cost, out.reg_ot_cost, rtol=1e-12)


def test_unbalanced_marginals_and_cost():
    with jax.enable_x64(True):
        eps, tau_a, tau_b = 0.1, 0.9, 0.8
        out = sinkhorn(jnp.asarray(X), jnp.asarray(Y), epsilon=eps, tau_a=tau_a, tau_b=tau_b,
                       **TIGHT)
        assert bool(out.converged)
        rho_a, rho_b = eps * tau_a / (1 - tau_a), eps * tau_b / (1 - tau_b)
        row, col = out.marginals()
        # first-order conditions: P 1 = a exp(-f / rho_a), P^T 1 = b exp(-g / rho_b) ...
        np.testing.assert_allclose(row, out.a * jnp.exp(-out.f / rho_a), atol=1e-10)
        np.testing.assert_allclose(col, out.b * jnp.exp(-out.g / rho_b), atol=1e-10)
        # ... so mass is not conserved, and the dual value is the unbalanced primal optimum
        assert float(jnp.max(jnp.abs(row - out.a))) > 1e-3
        np.testing.assert_allclose(out.reg_ot_cost, _primal(out, rho_a, rho_b), rtol=1e-9)


@pytest.fixture(scope="module")
def gradients():
    """Gradients of the cost and of a plan-based loss in x, by every mode, float64."""
    with jax.enable_x64(True):
        x, y = jnp.asarray(X), jnp.asarray(Y)
        W = jnp.asarray(RNG.normal(size=(30, 40)))
        v = jnp.asarray(RNG.normal(size=X.shape))

        def cost(x, diff):
            return sinkhorn(x, y, epsilon=0.1, diff=diff, **TIGHT).reg_ot_cost

        def plan_loss(x, diff):
            return jnp.sum(sinkhorn(x, y, epsilon=0.1, diff=diff, **TIGHT).plan() * W)

        h = 1e-5
        out = {"fd_cost": (cost(x + h * v, "implicit") - cost(x - h * v, "implicit")) / (2 * h),
               "fd_plan": (plan_loss(x + h * v, "implicit") - plan_loss(x - h * v, "implicit"))
               / (2 * h)}
        for d in ("implicit", "unroll", "onestep"):
            out[f"cost_{d}"] = jnp.sum(jax.grad(cost)(x, d) * v)
            out[f"plan_{d}"] = jnp.sum(jax.grad(plan_loss)(x, d) * v)
        for d in ("implicit", "onestep"):
            out[f"jvp_plan_{d}"] = jax.jvp(lambda x, d=d: plan_loss(x, d), (x,), (v,))[1]
        return {k: float(val) for k, val in out.items()}


def test_every_mode_gives_the_cost_gradient(gradients):
    # at the optimum the cost's gradient is the envelope one: all three modes agree with it
    for d in ("implicit", "unroll", "onestep"):
        np.testing.assert_allclose(gradients[f"cost_{d}"], gradients["fd_cost"], rtol=1e-6)


def test_plan_gradients_implicit_and_unrolled_match_finite_differences(gradients):
    for d in ("implicit", "unroll"):
        np.testing.assert_allclose(gradients[f"plan_{d}"], gradients["fd_plan"], rtol=1e-6)
    np.testing.assert_allclose(gradients["plan_implicit"], gradients["plan_unroll"], rtol=1e-8)
    # one step is only an approximation after plain Sinkhorn iterations, whose map is a weak
    # contraction at eps = 0.1 (it is accurate after a Newton finish); it is still finite
    assert np.isfinite(gradients["plan_onestep"])


def test_forward_mode_equals_reverse_mode(gradients):
    for d in ("implicit", "onestep"):
        np.testing.assert_allclose(gradients[f"jvp_plan_{d}"], gradients[f"plan_{d}"],
                                   rtol=1e-8)


def test_small_epsilon_in_float32_has_no_nan():
    x, y = jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)

    def cost(x):
        return sinkhorn(x, y, epsilon=1e-3, threshold=1e-3, max_iterations=20000,
                        epsilon_schedule=(1.0, 0.95)).reg_ot_cost

    out = sinkhorn(x, y, epsilon=1e-3, threshold=1e-3, max_iterations=20000,
                   epsilon_schedule=(1.0, 0.95))
    assert bool(out.converged)
    assert np.all(np.isfinite(np.asarray(out.f))) and np.isfinite(float(out.reg_ot_cost))
    g = jax.grad(cost)(x)
    assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))


def test_vmap_over_a_batch_of_problems():
    x = jnp.asarray(X, jnp.float32)
    ys = jnp.stack([jnp.asarray(Y, jnp.float32) + s for s in (0.0, 0.5, 1.0)])
    costs = jax.vmap(lambda y: sinkhorn(x, y, epsilon=0.1).reg_ot_cost)(ys)
    one = [float(sinkhorn(x, y, epsilon=0.1).reg_ot_cost) for y in ys]
    np.testing.assert_allclose(costs, one, rtol=1e-5)
    assert costs[0] < costs[1] < costs[2]


def test_sinkhorn_divergence_is_zero_on_equal_clouds_and_pulls_clouds_together():
    x, y = jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)
    assert abs(float(sinkhorn_divergence(x, x, epsilon=0.1))) < 1e-4
    d = sinkhorn_divergence(x, y, epsilon=0.1)
    assert float(d) > 0.5
    g = jax.grad(lambda x: sinkhorn_divergence(x, y, epsilon=0.1))(x)
    assert float(sinkhorn_divergence(x - 0.1 * g, y, epsilon=0.1)) < float(d)


def test_non_convergence_is_a_flag_and_bad_arguments_are_named():
    out = sinkhorn(jnp.asarray(X), jnp.asarray(Y), epsilon=0.01, max_iterations=3)
    assert not bool(out.converged) and int(out.iterations) == 3
    for kwargs, arg in [({"diff": "adjoint"}, "diff"), ({"tau_a": 1.5}, "tau_a"),
                        ({"max_iterations": 0}, "max_iterations"), ({"epsilon": -1.0}, "epsilon")]:
        with pytest.raises(vx.ArgumentError, match=arg):
            sinkhorn(X, Y, **kwargs)
    with pytest.raises(vx.ArgumentError, match="cost"):
        sinkhorn(X)
    with pytest.raises(vx.ArgumentError, match="balanced"):
        sinkhorn_divergence(X, Y, tau_a=0.5)
