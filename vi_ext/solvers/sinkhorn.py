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
from vi_ext.solvers.sparse_newton import (
    SparseNewton,
    newton_direction,
    sparse_matvec,
    truncate_rows,
)


class SinkhornOutput(NamedTuple):
    """The solution of a Sinkhorn problem (a pytree: it vmaps and jits).

    Attributes:
        f, g: dual potentials [n], [m].
        reg_ot_cost: the regularized cost OT_eps(a, b) (the dual objective at (f, g)).
        converged: the marginal error fell below the threshold.
        iterations: updates: Sinkhorn updates (pairs of f and g updates) and Newton steps.
        newton_steps: of which Newton steps (0 without ``newton``).
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
    newton_steps: jax.Array
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


def _iterate(g0, C, a, b, eps, tau_a, tau_b, threshold, max_iterations, schedule,
             it0=None, errors0=None, stop=None, err0=None):
    """Sinkhorn updates from g0 until the error is below ``threshold`` or the iteration
    counter reaches ``stop`` (default ``max_iterations``); continues a history (it0,
    errors0) when given."""
    if errors0 is None:
        errors0 = jnp.full((max_iterations,), jnp.inf, dtype=C.dtype)
    it0 = jnp.asarray(0) if it0 is None else it0
    stop = max_iterations if stop is None else stop

    def cond(state):
        _, err, it, _ = state
        return (err > threshold) & (it < stop)

    def body(state):
        g, _, it, errors = state
        e = _eps_at(it, eps, schedule, C.dtype)
        _, g_new, err = _step(g, C, a, b, e, tau_a, tau_b)
        if _balanced(tau_a, tau_b):
            g_new = g_new - jnp.mean(g_new)
        # during an epsilon schedule the error is not yet the target's
        err = jnp.where(e > eps, jnp.inf, err)
        return g_new, err, it + 1, errors.at[it].set(err)

    err0 = jnp.asarray(jnp.inf, C.dtype) if err0 is None else err0
    g, err, it, errors = lax.while_loop(cond, body, (g0, err0, it0, errors0))
    return g, (err, it, errors)


def _eps_at(it, eps, schedule, dtype):
    if schedule is None:
        return eps
    init, decay = schedule
    return jnp.maximum(eps, init * decay ** it.astype(dtype))


def _unrolled(g0, C, a, b, eps, tau_a, tau_b, threshold, max_iterations, schedule=None):
    def body(state, it):
        g, err = state
        e = _eps_at(it, eps, schedule, C.dtype)
        active = err > threshold
        g_new = _map(g, C, a, b, e, tau_a, tau_b)
        _, _, new_err = _step(g, C, a, b, e, tau_a, tau_b)
        new_err = jnp.where(e > eps, jnp.inf, lax.stop_gradient(new_err))
        g = jnp.where(active, g_new, g)
        err = jnp.where(active, new_err, err)
        return (g, err), (jnp.where(active, err, jnp.inf), active)

    inf = jnp.asarray(jnp.inf, C.dtype)
    (g, err), (errors, active) = lax.scan(body, (g0, inf), jnp.arange(max_iterations))
    it = jnp.sum(active).astype(jnp.int32)
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


def _newton_parts(f, g, C, a, b, eps, tau_a, tau_b):
    """At (f, g): the log plan, the plan's marginals, the optimal marginals, and the
    gradient of the dual (their difference)."""
    lp = _log_plan(f, g, C, a, b, eps)
    p = jnp.exp(lp)
    r, c = p.sum(1), p.sum(0)
    ta, tb = _target(a, f, eps, tau_a), _target(b, g, eps, tau_b)
    return lp, r, c, ta, tb


def _hessian_diagonal(r, t, eps, tau):
    """eps times the diagonal of the dual's negative Hessian: P's marginal, plus eps t / rho
    under a KL penalty (rho = eps tau / (1 - tau))."""
    return r if tau == 1.0 else r + t * (1.0 - tau) / tau


def _line_search(f, g, df, dg, slope, C, a, b, eps, tau_a, tau_b, max_backtracks):
    """Backtracking (Armijo) on the dual: the largest alpha in 1, 1/2, ... with
    D(x + alpha d) >= D(x) + 1e-4 alpha <grad D, d>; 0 if none in ``max_backtracks``."""
    d0 = _dual(f, g, C, a, b, eps, tau_a, tau_b)

    def cond(state):
        _, ok, t = state
        return (~ok) & (t < max_backtracks)

    def body(state):
        alpha, _, t = state
        alpha = alpha * 0.5
        d1 = _dual(f + alpha * df, g + alpha * dg, C, a, b, eps, tau_a, tau_b)
        return alpha, d1 >= d0 + 1e-4 * alpha * slope, t + 1

    one = jnp.asarray(2.0, C.dtype)
    alpha, ok, _ = lax.while_loop(cond, body, (one, slope <= 0, 0))
    return jnp.where(ok & (slope > 0), alpha, 0.0)


def _newton_step(f, g, parts, C, a, b, eps, tau_a, tau_b, opts):
    """One Sparse-Newton step on the dual (see :mod:`vi_ext.solvers.sparse_newton`); where
    the line search fails, one Sinkhorn update instead. The Hessian and the step length are
    held fixed under differentiation (the step is differentiated through grad D only)."""
    lp, r, c, ta, tb = parts
    sg = lax.stop_gradient
    vals, cols = truncate_rows(sg(lp), opts.entries_per_row)
    mv, rmv = sparse_matvec(vals, cols, C.shape[1])
    df, dg = newton_direction(ta - r, tb - c, sg(_hessian_diagonal(r, ta, eps, tau_a)),
                              sg(_hessian_diagonal(c, tb, eps, tau_b)), mv, rmv, sg(eps),
                              _balanced(tau_a, tau_b), opts.cg_tol, opts.cg_iterations)
    slope = jnp.vdot(ta - r, df) + jnp.vdot(tb - c, dg)
    alpha = _line_search(*sg((f, g, df, dg, slope, C, a, b, eps)), tau_a, tau_b,
                         opts.max_backtracks)
    def newton_update(f, g):
        return f + alpha * df, g + alpha * dg

    def sinkhorn_update(f, g):
        f, g, _ = _step(g, C, a, b, eps, tau_a, tau_b)
        return f, g

    f, g = lax.cond(alpha > 0, newton_update, sinkhorn_update, f, g)
    return f, g, _newton_parts(f, g, C, a, b, eps, tau_a, tau_b)


def _residual(parts):
    _, r, c, ta, tb = parts
    return jnp.sum(jnp.abs(ta - r)) + jnp.sum(jnp.abs(tb - c))


def _newton(g, C, a, b, eps, tau_a, tau_b, threshold, max_iterations, opts, it0, errors0,
            active):
    """Newton steps from (f(g), g) while the dual's gradient (both marginals' L1 error)
    exceeds ``threshold``, within the iteration budget and ``opts.max_steps``."""
    f = _f_update(g, C, b, eps, tau_a)
    parts = _newton_parts(f, g, C, a, b, eps, tau_a, tau_b)

    def cond(state):
        _, _, parts, it, k, _ = state
        return active & (_residual(parts) > threshold) & (it < max_iterations) \
            & (k < opts.max_steps)

    def body(state):
        f, g, parts, it, k, errors = state
        f, g, parts = _newton_step(f, g, parts, C, a, b, eps, tau_a, tau_b, opts)
        return f, g, parts, it + 1, k + 1, errors.at[it].set(_residual(parts))

    _, g, _, it, k, errors = lax.while_loop(
        cond, body, (f, g, parts, it0, jnp.asarray(0), errors0))
    if _balanced(tau_a, tau_b):
        g = g - jnp.mean(g)
    return g, it, k, errors


def _warmup_schedule(schedule, C, eps, opts):
    """The user's epsilon schedule, else the Newton warm-up's annealing from the mean cost."""
    if schedule is None and opts.anneal is not None:
        return (jnp.maximum(eps, jnp.mean(C)), opts.anneal)
    return schedule


def _solve(g0, C, a, b, eps, tau_a, tau_b, threshold, max_iterations, schedule, newton):
    """The forward solve: Sinkhorn, or Sinkhorn warm-up, Newton steps, Sinkhorn finish.
    Returns g and (error, iterations, error history, Newton steps)."""
    if newton is None:
        g, (err, it, errors) = _iterate(g0, C, a, b, eps, tau_a, tau_b, threshold,
                                        max_iterations, schedule)
        return g, (err, it, errors, jnp.asarray(0))
    schedule = _warmup_schedule(schedule, C, eps, newton)
    g, (err, it, errors) = _iterate(g0, C, a, b, eps, tau_a, tau_b, threshold,
                                    max_iterations, schedule,
                                    stop=min(newton.warmup, max_iterations))
    g, it, k, errors = _newton(g, C, a, b, eps, tau_a, tau_b, threshold, max_iterations,
                               newton, it, errors, err > threshold)
    _, _, err = _step(g, C, a, b, eps, tau_a, tau_b)
    g, (err, it, errors) = _iterate(g, C, a, b, eps, tau_a, tau_b, threshold, max_iterations,
                                    None, it0=it, errors0=errors, err0=err)
    return g, (err, it, errors, k)


def _unrolled_newton(g0, C, a, b, eps, tau_a, tau_b, threshold, max_iterations, opts,
                     schedule):
    """``diff="unroll"`` with Newton: the warm-up unrolled, then up to ``opts.max_steps``
    Newton steps (within ``max_iterations``) in a ``lax.scan`` (frozen once converged),
    each differentiated through grad D with its Hessian and step length held fixed."""
    warm = min(opts.warmup, max_iterations)
    schedule = _warmup_schedule(schedule, C, eps, opts)
    g, (err, it, errors) = _unrolled(g0, C, a, b, eps, tau_a, tau_b, threshold, warm,
                                     lax.stop_gradient(schedule))
    f = _f_update(g, C, b, eps, tau_a)
    parts = _newton_parts(f, g, C, a, b, eps, tau_a, tau_b)

    def body(state, _):
        f, g, parts = state
        active = lax.stop_gradient(_residual(parts)) > threshold
        f1, g1, parts1 = _newton_step(f, g, parts, C, a, b, eps, tau_a, tau_b, opts)
        pick = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        state = (pick(f1, f), pick(g1, g), jax.tree.map(pick, parts1, parts))
        return state, jnp.where(active, lax.stop_gradient(_residual(parts1)), jnp.inf)

    steps = min(opts.max_steps, max_iterations - warm)
    (f, g, parts), newton_errors = lax.scan(body, (f, g, parts), None, length=steps)
    if _balanced(tau_a, tau_b):
        g = g - jnp.mean(g)
    k = jnp.sum(jnp.isfinite(newton_errors)).astype(jnp.int32)
    _, _, err = _step(lax.stop_gradient(g), *lax.stop_gradient((C, a, b, eps)), tau_a, tau_b)
    pad = jnp.full((max_iterations - warm - steps,), jnp.inf, C.dtype)
    errors = jnp.concatenate([errors, newton_errors, pad])
    return g, (err, it + k, errors, k)


def _onestep_newton(g_star, C, a, b, eps, tau_a, tau_b):
    """One Newton step at the stopped-gradient solution with the exact (dense) Hessian: its
    derivative is H^-1 d(grad D)/d(theta), the implicit derivative itself (the step's
    dependence through H vanishes where grad D = 0)."""
    sg = lax.stop_gradient
    g_star = sg(g_star)
    f_star = _f_update(g_star, *sg((C, b, eps)), tau_a)
    lp, r, c, ta, tb = _newton_parts(f_star, g_star, C, a, b, eps, tau_a, tau_b)
    p = sg(jnp.exp(lp))
    tol = float(jnp.finfo(C.dtype).eps) ** (2 / 3)
    _, dg = newton_direction(ta - r, tb - c, sg(_hessian_diagonal(r, ta, eps, tau_a)),
                             sg(_hessian_diagonal(c, tb, eps, tau_b)), lambda v: p @ v,
                             lambda u: p.T @ u, sg(eps), _balanced(tau_a, tau_b), tol,
                             10 * (C.shape[0] + C.shape[1]))
    g = g_star + dg
    if _balanced(tau_a, tau_b):
        g = g - jnp.mean(g)
    return g


def _check_newton(newton):
    if isinstance(newton, bool):
        return
    if not isinstance(newton, SparseNewton):
        raise ArgumentError("newton", f"expected True, False or a SparseNewton, got "
                                      f"{newton!r}.")
    for name in ("warmup", "max_steps", "entries_per_row", "cg_iterations", "max_backtracks"):
        value = getattr(newton, name)
        low = 0 if name == "warmup" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ArgumentError("newton", f"SparseNewton.{name} must be an int >= {low}, "
                                          f"got {value!r}.")
    if not (isinstance(newton.cg_tol, (int, float)) and 0 < newton.cg_tol < 1):
        raise ArgumentError("newton", f"SparseNewton.cg_tol must be in (0, 1), got "
                                      f"{newton.cg_tol!r}.")


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
             danskin: bool = True, newton: bool | SparseNewton = False) -> SinkhornOutput:
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
        newton: the Sparse-Newton stage (Tang et al. 2024): ``True`` for the default
            :class:`~vi_ext.solvers.sparse_newton.SparseNewton` options, or an instance.
            Sinkhorn warms up, Newton steps on the dual (sparsified Hessian, conjugate
            gradients, line search) take over, and Sinkhorn finishes if they stop short.
            Much faster at small epsilon. With ``diff="onestep"`` the differentiated step is
            an exact-Hessian Newton step, whose derivative is the implicit one.

    Returns:
        a :class:`SinkhornOutput`.
    """
    _check(x, y, cost, a, b, epsilon, tau_a, tau_b, threshold, max_iterations, diff)
    _check_newton(newton)
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

    opts = SparseNewton() if newton is True else (newton or None)
    if diff == "unroll":
        if opts is None:
            g, (err, it, errors) = _unrolled(g0, *args, tau_a, tau_b, threshold,
                                             max_iterations, epsilon_schedule)
            k = jnp.asarray(0)
        else:
            g, (err, it, errors, k) = _unrolled_newton(g0, *args, tau_a, tau_b, threshold,
                                                       max_iterations, opts,
                                                       epsilon_schedule)
    else:
        def solver(g_init, C, a, b, eps):
            return _solve(g_init, C, a, b, eps, tau_a, tau_b, threshold, max_iterations,
                          epsilon_schedule, opts)

        if diff == "implicit":
            def fp(g, C, a, b, eps):
                return _map(g, C, a, b, eps, tau_a, tau_b)

            g, (err, it, errors, k) = custom_fixed_point(fp, solve=solve, has_aux=True)(
                solver)(g0, *args)
        else:  # onestep
            g_star, (err, it, errors, k) = solver(g0, *lax.stop_gradient(args))
            if opts is None:
                g = _map(lax.stop_gradient(g_star), *args, tau_a, tau_b)
            else:
                g = _onestep_newton(g_star, *args, tau_a, tau_b)
    f = _f_update(g, C, b, eps, tau_a)
    if danskin:
        cost_value = _dual(lax.stop_gradient(f), lax.stop_gradient(g), C, a, b, eps, tau_a,
                           tau_b)
    else:
        cost_value = _dual(f, g, C, a, b, eps, tau_a, tau_b)
    return SinkhornOutput(f, g, cost_value, err <= threshold, it, k, errors, C, a, b, eps,
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
