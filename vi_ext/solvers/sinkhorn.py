"""Entropy-regularized optimal transport by log-domain Sinkhorn, differentiable three ways.

Between weights a (n) and b (m) with cost C (n x m), the regularized problem

    OT_eps(a, b) = min_P <P, C> + eps KL(P | a b^T)
                   + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b)

(balanced: rho = infinity, the marginals are constraints) has the dual potentials f, g and
the plan P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps). Sinkhorn's iterations in the log
domain, stable for any eps,

    f_i = tau_a * (-eps LSE_j [(g_j - C_ij) / eps + log b_j])
    g_j = tau_b * (-eps LSE_i [(f_i - C_ij) / eps + log a_i]),   tau = rho / (rho + eps),

stop when the marginal error sum_j |(P^T 1)_j - b_j| falls below ``threshold`` (it comes
free from the g update's LSE; in the unbalanced case the optimal marginals are
a exp(-f / rho_a) and b exp(-g / rho_b), and both are checked).

Derivatives (``diff``):

- ``"implicit"``: the fixed point g* = T(g*) of the composed update, through
  :func:`~vi_ext.solvers.implicit.custom_fixed_point`: one linear solve, memory independent
  of the iterations. In the balanced case the potentials are defined up to (f + c, g - c);
  the map is centered (g - mean(g)) so that I - dT/dg is nonsingular.
- ``"unroll"``: reverse mode through ``max_iterations`` updates in a ``lax.scan``, frozen once
  converged.
- ``"onestep"``: one differentiated update at the stopped-gradient solution.

f is computed from g* by one differentiated update in every mode. ``reg_ot_cost`` is the dual
objective at (f, g); by default (``danskin=True``, as in OTT-JAX) it is differentiated with
the potentials held fixed: at the optimum the dual's partial derivatives in (f, g) vanish, so
its gradient in C, a, b and eps is exact (Danskin's theorem; in C it is the plan) and needs
no linear solve. That matters at small eps: the Sinkhorn map is then a weak contraction,
I - dT/dg is ill-conditioned, and in float32 the implicit derivatives of the potentials can
be inaccurate or NaN while the cost's gradient stays exact.

Reference: Cuturi, "Sinkhorn Distances", NeurIPS 2013; Peyre & Cuturi, "Computational Optimal
Transport", 2019, ch. 4 (log domain) and 10.2 (unbalanced, Chizat et al. 2018); Feydy et al.,
"Interpolating between Optimal Transport and MMD using Sinkhorn Divergences", AISTATS 2019.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from vi_ext.errors import ArgumentError
from vi_ext.solvers.implicit import DIFF_MODES, custom_fixed_point


class SinkhornOutput(NamedTuple):
    """The solution of a Sinkhorn problem (a pytree: it vmaps and jits).

    Attributes:
        f, g: dual potentials [n], [m].
        reg_ot_cost: the regularized cost OT_eps(a, b) (the dual objective at (f, g)).
        converged: the marginal error fell below the threshold.
        iterations: Sinkhorn updates (pairs of f and g updates).
        errors: marginal error after each update, ``inf`` past ``iterations``
            [max_iterations].
        cost_matrix, a, b: the problem.
        epsilon, tau_a, tau_b: its regularization.
    """

    f: jax.Array
    g: jax.Array
    reg_ot_cost: jax.Array
    converged: jax.Array
    iterations: jax.Array
    errors: jax.Array
    cost_matrix: jax.Array
    a: jax.Array
    b: jax.Array
    epsilon: Any
    tau_a: float
    tau_b: float

    def plan(self) -> jax.Array:
        """P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps) [n, m]."""
        return jnp.exp(_log_plan(self.f, self.g, self.cost_matrix, self.a, self.b, self.epsilon))

    def marginals(self) -> tuple[jax.Array, jax.Array]:
        """(P 1, P^T 1)."""
        p = self.plan()
        return p.sum(1), p.sum(0)

    def transport_cost(self) -> jax.Array:
        """<P, C>, the unregularized cost of the plan."""
        return jnp.sum(self.plan() * self.cost_matrix)


def _log_plan(f, g, C, a, b, eps):
    return (f[:, None] + g[None, :] - C) / eps + jnp.log(a)[:, None] + jnp.log(b)[None, :]


def sqeuclidean(x: jax.Array, y: jax.Array) -> jax.Array:
    """C_ij = ||x_i - y_j||^2 for point clouds x [n, d], y [m, d]."""
    x2 = jnp.sum(x**2, axis=1)
    y2 = jnp.sum(y**2, axis=1)
    return jnp.maximum(x2[:, None] + y2[None, :] - 2 * x @ y.T, 0.0)


def _f_update(g, C, b, eps, tau_a):
    return -tau_a * eps * logsumexp((g[None, :] - C) / eps + jnp.log(b)[None, :], axis=1)


def _g_lse(f, C, a, eps):
    return logsumexp((f[:, None] - C) / eps + jnp.log(a)[:, None], axis=0)


def _target(w, p, eps, tau):
    """The optimal marginal: w itself for a constraint, w exp(-p / rho) for a KL penalty."""
    if tau == 1.0:
        return w
    return w * jnp.exp(-p * (1.0 - tau) / (eps * tau))


def _step(g, C, a, b, eps, tau_a, tau_b):
    """One pair of updates; returns (f, new g, marginal error of the (f, g) pair).

    The error is the L1 distance of the plan's marginals from their optimal values (a and b
    when balanced; a exp(-f / rho_a) and b exp(-g / rho_b) with a KL penalty, the first-order
    conditions of the unbalanced problem)."""
    f = _f_update(g, C, b, eps, tau_a)
    lse = _g_lse(f, C, a, eps)
    # column sums of the plan at (f, g): b_j exp(g_j / eps + lse_j)
    col = b * jnp.exp(g / eps + lse)
    err = jnp.sum(jnp.abs(col - _target(b, g, eps, tau_b)))
    if tau_a < 1.0:  # rows are exact after the f update only in the balanced case
        row = a * jnp.exp(f / eps + logsumexp((g[None, :] - C) / eps + jnp.log(b)[None, :],
                                              axis=1))
        err = err + jnp.sum(jnp.abs(row - _target(a, f, eps, tau_a)))
    return f, -tau_b * eps * lse, err


def _balanced(tau_a, tau_b):
    return tau_a == 1.0 and tau_b == 1.0


def _map(g, C, a, b, eps, tau_a, tau_b):
    """The fixed-point map of g (centered in the balanced case)."""
    _, g_new, _ = _step(g, C, a, b, eps, tau_a, tau_b)
    if _balanced(tau_a, tau_b):
        g_new = g_new - jnp.mean(g_new)
    return g_new


def _iterate(g0, C, a, b, eps, tau_a, tau_b, threshold, max_iterations, schedule):
    errors0 = jnp.full((max_iterations,), jnp.inf, dtype=C.dtype)

    def eps_at(it):
        if schedule is None:
            return eps
        init, decay = schedule
        return jnp.maximum(eps, init * decay ** it.astype(C.dtype))

    def cond(state):
        _, err, it, _ = state
        return (err > threshold) & (it < max_iterations)

    def body(state):
        g, _, it, errors = state
        e = eps_at(it)
        _, g_new, err = _step(g, C, a, b, e, tau_a, tau_b)
        if _balanced(tau_a, tau_b):
            g_new = g_new - jnp.mean(g_new)
        # during an epsilon schedule the error is not yet the target's
        err = jnp.where(e > eps, jnp.inf, err)
        return g_new, err, it + 1, errors.at[it].set(err)

    inf = jnp.asarray(jnp.inf, C.dtype)
    g, err, it, errors = lax.while_loop(cond, body, (g0, inf, jnp.asarray(0), errors0))
    return g, (err, it, errors)


def _unrolled(g0, C, a, b, eps, tau_a, tau_b, threshold, max_iterations):
    def body(state, it):
        g, err = state
        active = err > threshold
        g_new = _map(g, C, a, b, eps, tau_a, tau_b)
        _, _, new_err = _step(g, C, a, b, eps, tau_a, tau_b)
        g = jnp.where(active, g_new, g)
        err = jnp.where(active, lax.stop_gradient(new_err), err)
        return (g, err), jnp.where(active, err, jnp.inf)

    inf = jnp.asarray(jnp.inf, C.dtype)
    (g, err), errors = lax.scan(body, (g0, inf), jnp.arange(max_iterations))
    it = jnp.sum(jnp.isfinite(errors)).astype(jnp.int32)
    return g, (err, it, errors)


def _dual(f, g, C, a, b, eps, tau_a, tau_b):
    """The dual objective at (f, g): OT_eps at the optimum."""
    mass = jnp.sum(jnp.exp(_log_plan(f, g, C, a, b, eps)))

    def div(p, w, tau):
        if tau == 1.0:
            return jnp.sum(w * p)
        rho = eps * tau / (1.0 - tau)
        return jnp.sum(w * rho * (1.0 - jnp.exp(-p / rho)))

    return div(f, a, tau_a) + div(g, b, tau_b) - eps * (mass - jnp.sum(a) * jnp.sum(b))


def _check(x, y, cost, a, b, epsilon, tau_a, tau_b, threshold, max_iterations, diff):
    if (cost is None) == (x is None or y is None):
        raise ArgumentError("cost", "pass either point clouds x and y, or a cost matrix.")
    if diff not in DIFF_MODES:
        raise ArgumentError("diff", f"expected one of {DIFF_MODES}, got {diff!r}.")
    for name, tau in (("tau_a", tau_a), ("tau_b", tau_b)):
        if not isinstance(tau, (int, float)) or not 0.0 < tau <= 1.0:
            raise ArgumentError(name, f"expected a float in (0, 1] (1 = balanced), got {tau!r}.")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) \
            or max_iterations < 1:
        raise ArgumentError("max_iterations", f"expected an int >= 1, got {max_iterations!r}.")
    if isinstance(epsilon, (int, float)) and not epsilon > 0:
        raise ArgumentError("epsilon", f"expected a positive number, got {epsilon!r}.")
    if not (isinstance(threshold, (int, float)) and threshold > 0):
        raise ArgumentError("threshold", f"expected a positive number, got {threshold!r}.")


def sinkhorn(x: jax.Array | None = None, y: jax.Array | None = None, *,
             cost: jax.Array | None = None, a: jax.Array | None = None,
             b: jax.Array | None = None, epsilon: float = 0.1, tau_a: float = 1.0,
             tau_b: float = 1.0, threshold: float = 1e-3, max_iterations: int = 2000,
             epsilon_schedule: tuple[float, float] | None = None, diff: str = "implicit",
             solve: str = "gmres", init: jax.Array | None = None,
             danskin: bool = True) -> SinkhornOutput:
    """Solve entropic optimal transport between two weighted point clouds or for a cost.

    Args:
        x: the source point cloud [n, d] (cost: squared Euclidean); or give ``cost``.
        y: the target point cloud [m, d].
        cost: a cost matrix [n, m], in place of ``x`` and ``y``.
        a: source weights [n] (default uniform); positive.
        b: target weights [m] (default uniform); positive.
        epsilon: the absolute entropic regularization.
        tau_a: 1 for a marginal constraint on the source, rho / (rho + epsilon) in (0, 1)
            for a KL penalty of strength rho (unbalanced transport).
        tau_b: the same for the target marginal.
        threshold: stop when the marginal error (L1) is below it.
        max_iterations: the cap; a run that reaches it has ``converged`` false (it never
            raises: inside a model, check ``converged``).
        epsilon_schedule: ``(init, decay)``: iteration t uses max(epsilon, init * decay^t)
            (annealing, for small epsilon).
        diff: ``"implicit"``, ``"unroll"`` or ``"onestep"`` (see the module docstring).
        solve: the linear solve of ``diff="implicit"``.
        init: a starting g [m] (warm start); not differentiated.
        danskin: differentiate ``reg_ot_cost`` with the potentials held fixed (exact at the
            optimum, robust at small epsilon); False differentiates it through the
            potentials by ``diff``.

    Returns:
        a :class:`SinkhornOutput`.
    """
    _check(x, y, cost, a, b, epsilon, tau_a, tau_b, threshold, max_iterations, diff)
    C = sqeuclidean(jnp.asarray(x), jnp.asarray(y)) if cost is None else jnp.asarray(cost)
    if not jnp.issubdtype(C.dtype, jnp.floating):
        C = C.astype(jnp.float32)
    n, m = C.shape
    a = jnp.full((n,), 1.0 / n, C.dtype) if a is None else jnp.asarray(a, C.dtype)
    b = jnp.full((m,), 1.0 / m, C.dtype) if b is None else jnp.asarray(b, C.dtype)
    if a.shape != (n,) or b.shape != (m,):
        raise ArgumentError("a", f"weights of shapes {a.shape} and {b.shape} do not match the "
                                 f"cost matrix {C.shape}.")
    eps = jnp.asarray(epsilon, C.dtype)
    tau_a, tau_b = float(tau_a), float(tau_b)
    g0 = jnp.zeros((m,), C.dtype) if init is None else lax.stop_gradient(jnp.asarray(init))
    args = (C, a, b, eps)

    if diff == "unroll":
        g, (err, it, errors) = _unrolled(g0, *args, tau_a, tau_b, threshold, max_iterations)
    else:
        def solver(g_init, C, a, b, eps):
            return _iterate(g_init, C, a, b, eps, tau_a, tau_b, threshold, max_iterations,
                            epsilon_schedule)

        if diff == "implicit":
            def fp(g, C, a, b, eps):
                return _map(g, C, a, b, eps, tau_a, tau_b)

            g, (err, it, errors) = custom_fixed_point(fp, solve=solve, has_aux=True)(solver)(
                g0, *args)
        else:  # onestep
            g_star, (err, it, errors) = solver(g0, *lax.stop_gradient(args))
            g = _map(lax.stop_gradient(g_star), *args, tau_a, tau_b)
    f = _f_update(g, C, b, eps, tau_a)
    if danskin:
        cost_value = _dual(lax.stop_gradient(f), lax.stop_gradient(g), C, a, b, eps, tau_a,
                           tau_b)
    else:
        cost_value = _dual(f, g, C, a, b, eps, tau_a, tau_b)
    return SinkhornOutput(f, g, cost_value, err <= threshold, it, errors, C, a, b, eps,
                          tau_a, tau_b)


def sinkhorn_divergence(x: jax.Array, y: jax.Array, a: jax.Array | None = None,
                        b: jax.Array | None = None, **kwargs: Any) -> jax.Array:
    """S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2 between point clouds
    (Feydy et al. 2019): nonnegative, zero iff a = b, a metric-like loss for fitting clouds.

    Keyword arguments go to :func:`sinkhorn` (balanced only).
    """
    if kwargs.get("tau_a", 1.0) != 1.0 or kwargs.get("tau_b", 1.0) != 1.0:
        raise ArgumentError("tau_a", "sinkhorn_divergence is defined here for balanced "
                                     "transport only (tau_a = tau_b = 1).")
    xy = sinkhorn(x, y, a=a, b=b, **kwargs).reg_ot_cost
    xx = sinkhorn(x, x, a=a, b=a, **kwargs).reg_ot_cost
    yy = sinkhorn(y, y, a=b, b=b, **kwargs).reg_ot_cost
    return xy - 0.5 * (xx + yy)
