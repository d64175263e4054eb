"""The Sparse-Newton stage of Sinkhorn (Sinkhorn-Newton-Sparse, Tang et al., ICLR 2024).

The entropic OT dual (see :mod:`vi_ext.solvers.sinkhorn`)

    D(f, g) = F_a(f) + F_b(g) - eps sum_ij a_i b_j (exp((f_i + g_j - C_ij) / eps) - 1),

with F(p) = <w, p> for a marginal constraint and <w, rho (1 - exp(-p / rho))> for a KL
penalty, is concave and smooth. Its gradient is the marginal residual

    grad_f D = t_a(f) - P 1,    grad_g D = t_b(g) - P^T 1,    t(p) = w exp(-p / rho)

(t = w when balanced), and its negative Hessian is

    H = (1 / eps) [[diag(P 1), P], [P^T, diag(P^T 1)]] + diag(t_a / rho_a, t_b / rho_b).

Sinkhorn is block coordinate ascent on D and slows to a crawl at small eps; Newton's method
on D converges quadratically once close, and near the optimum the plan P is close to sparse
(a point's mass sits on few partners). Tang et al. therefore keep the diagonal exactly and
replace P in H by a sparse truncation P_s, solve H_s d = grad D by conjugate gradients
(each product O(nnz), not O(nm)), and take (f, g) + alpha d with a backtracking line search
on D. The truncation keeps, per row of P, its (at most) ``entries_per_row`` largest entries,
found by a per-row threshold: a static-shape (JAX-friendly) form of the paper's global
threshold. With the diagonal kept exact, H_s is diagonally dominant, hence positive
semidefinite, and d is an ascent direction.

In the balanced case H has the null vector (1_n, -1_m) (the potentials' gauge, f + c and
g - c); the right-hand side is projected off it, so CG stays in the range of H.

Reference: X. Tang, M. Shavlovsky, H. Rahmanian, E. Tardini, K. K. Thekumparampil, T. Xiao,
L. Ying, "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.sparse.linalg import cg

from vi_ext.errors import ArgumentError
from vi_ext.solvers.differentiation import Iteration
from vi_ext.solvers.transport import TransportProblem


class SparseNewton(NamedTuple):
    """Options of the Sparse-Newton stage (``sinkhorn(..., newton=SparseNewton(...))``).

    Attributes:
        warmup: Sinkhorn updates before the first Newton step (Newton needs a start
            close to the optimum; the paper's N_1).
        anneal: the warm-up anneals epsilon from the mean cost down to its target,
            multiplying it by ``anneal`` at each update (unless ``sinkhorn`` is given its own
            ``epsilon_schedule``); ``None`` warms up at the target epsilon. Annealing is what
            brings the warm-up into Newton's region of fast convergence at small epsilon:
            without it a damped Newton phase can take tens of steps.
        max_steps: the cap on Newton steps; past it, plain Sinkhorn finishes.
        entries_per_row: entries of each row of the plan kept in the sparse Hessian.
        cg_iterations: the cap on conjugate-gradient iterations per Newton step.
        cg_tol: CG's relative residual tolerance (an inexact Newton step).
        max_backtracks: line-search halvings before the step falls back to one
            Sinkhorn update.
    """

    warmup: int = 200
    anneal: float | None = 0.95
    max_steps: int = 100
    entries_per_row: int = 32
    cg_iterations: int = 1000
    cg_tol: float = 1e-3
    max_backtracks: int = 30


def truncate_rows(log_plan: jax.Array, k: int, bisections: int = 12) -> tuple[jax.Array,
                                                                               jax.Array]:
    """The (about) k largest entries of each row of exp(log_plan): values [n, k], columns
    [n, k].

    Without sorting: a per-row threshold is found by bisection on the count of entries
    above it (``bisections`` counting passes, from the row maximum down to 50 nats below:
    the kept entries are the largest, at most k, and at least the largest one), then the
    kept entries are compacted into k slots by their rank along the row in one scatter.
    Slots left empty hold zero. On CPU this is several times faster than a sort-based
    top-k."""
    n, m = log_plan.shape
    top = jnp.max(log_plan, axis=1)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        few = jnp.sum(log_plan >= mid[:, None], axis=1) <= k
        return jnp.where(few, lo, mid), jnp.where(few, mid, hi)

    _, cut = lax.fori_loop(0, bisections, bisect, (top - 50.0, top))
    keep = log_plan >= cut[:, None]
    rank = jnp.where(keep, jnp.cumsum(keep, axis=1, dtype=jnp.int32) - 1, k)
    rows = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], (n, m))
    ids = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32)[None, :], (n, m))
    cols = jnp.zeros((n, k), jnp.int32).at[rows, rank].set(ids, mode="drop")
    vals = jnp.full((n, k), -jnp.inf, log_plan.dtype).at[rows, rank].set(log_plan,
                                                                         mode="drop")
    return jnp.exp(vals), cols


def sparse_matvec(vals: jax.Array, cols: jax.Array, m: int):
    """(v -> P_s v, u -> P_s^T u) for the row-truncated plan (values, columns)."""

    def mv(v):
        return jnp.sum(vals * v[cols], axis=1)

    def rmv(u):
        return jax.ops.segment_sum((vals * u[:, None]).ravel(), cols.ravel(), m)

    return mv, rmv


def newton_direction(grad_f: jax.Array, grad_g: jax.Array, diag_f: jax.Array,
                     diag_g: jax.Array, mv, rmv, eps, balanced: bool, cg_tol: float,
                     cg_iterations: int) -> tuple[jax.Array, jax.Array]:
    """Solve H d = grad D by CG, H = (1/eps)[[diag_f, P], [P^T, diag_g]] (+ any extra
    diagonal already folded into diag_f, diag_g times eps), with P given by (mv, rmv).

    In the balanced case the right-hand side is projected off the null vector (1, -1)."""

    def hv(d):
        df, dg = d
        return ((diag_f * df + mv(dg)) / eps, (rmv(df) + diag_g * dg) / eps)

    if balanced:
        n, m = grad_f.shape[0], grad_g.shape[0]
        c = (jnp.sum(grad_f) - jnp.sum(grad_g)) / (n + m)
        grad_f, grad_g = grad_f - c, grad_g + c
    d, _ = cg(hv, (grad_f, grad_g), tol=cg_tol, maxiter=cg_iterations)
    return d


def check_options(newton) -> None:
    """Raise an ArgumentError (argument ``newton``) for options out of range."""
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


class NewtonParts(NamedTuple):
    """At (f, g): the log plan, the plan's marginals and the optimal marginals (the dual's
    gradient is their difference)."""

    log_plan: jax.Array
    rows: jax.Array
    cols: jax.Array
    target_rows: jax.Array
    target_cols: jax.Array

    def residual(self) -> jax.Array:
        """The L1 norm of the dual's gradient (both marginals' errors)."""
        return (jnp.sum(jnp.abs(self.target_rows - self.rows))
                + jnp.sum(jnp.abs(self.target_cols - self.cols)))


def newton_parts(problem: TransportProblem, f: jax.Array, g: jax.Array) -> NewtonParts:
    lp = problem.log_plan(f, g)
    p = jnp.exp(lp)
    return NewtonParts(lp, p.sum(1), p.sum(0),
                       problem.optimal_marginal(problem.a, f, problem.tau_a),
                       problem.optimal_marginal(problem.b, g, problem.tau_b))


def _hessian_diagonal(r, t, tau):
    """eps times the diagonal of the dual's negative Hessian: P's marginal, plus eps t / rho
    under a KL penalty (rho = eps tau / (1 - tau))."""
    return r if tau == 1.0 else r + t * (1.0 - tau) / tau


def _line_search(problem, f, g, df, dg, slope, max_backtracks):
    """Backtracking (Armijo) on the dual: the largest alpha in 1, 1/2, ... with
    D(x + alpha d) >= D(x) + 1e-4 alpha <grad D, d>; 0 if none in ``max_backtracks``."""
    d0 = problem.dual(f, g)

    def cond(state):
        _, ok, t = state
        return (~ok) & (t < max_backtracks)

    def body(state):
        alpha, _, t = state
        alpha = alpha * 0.5
        d1 = problem.dual(f + alpha * df, g + alpha * dg)
        return alpha, d1 >= d0 + 1e-4 * alpha * slope, t + 1

    two = jnp.asarray(2.0, problem.dtype)
    alpha, ok, _ = lax.while_loop(cond, body, (two, slope <= 0, 0))
    return jnp.where(ok & (slope > 0), alpha, 0.0)


def newton_step(problem: TransportProblem, f: jax.Array, g: jax.Array, parts: NewtonParts,
                opts: SparseNewton) -> tuple[jax.Array, jax.Array, NewtonParts]:
    """One Sparse-Newton step on the dual; where the line search fails, one Sinkhorn update
    instead. The Hessian and the step length are held fixed under differentiation (the step
    is differentiated through grad D only)."""
    sg = lax.stop_gradient
    vals, cols = truncate_rows(sg(parts.log_plan), opts.entries_per_row)
    mv, rmv = sparse_matvec(vals, cols, problem.shape[1])
    grad_f = parts.target_rows - parts.rows
    grad_g = parts.target_cols - parts.cols
    df, dg = newton_direction(
        grad_f, grad_g, sg(_hessian_diagonal(parts.rows, parts.target_rows, problem.tau_a)),
        sg(_hessian_diagonal(parts.cols, parts.target_cols, problem.tau_b)), mv, rmv,
        sg(problem.epsilon), problem.balanced, opts.cg_tol, opts.cg_iterations)
    slope = jnp.vdot(grad_f, df) + jnp.vdot(grad_g, dg)
    alpha = _line_search(sg(problem), *sg((f, g, df, dg, slope)), opts.max_backtracks)

    def newton_update(f, g):
        return f + alpha * df, g + alpha * dg

    def sinkhorn_update(f, g):
        f, g, _ = problem.update(g)
        return f, g

    f, g = lax.cond(alpha > 0, newton_update, sinkhorn_update, f, g)
    return f, g, newton_parts(problem, f, g)


class NewtonState(NamedTuple):
    """The Newton stage's loop state: potentials, their parts, the update counter (shared
    with Sinkhorn's), the Newton step count, and the error history."""

    f: jax.Array
    g: jax.Array
    parts: NewtonParts
    iteration: jax.Array
    steps: jax.Array
    errors: jax.Array


def newton_iteration(problem: TransportProblem, threshold: float, max_iterations: int,
                     opts: SparseNewton, active: jax.Array, length: int) -> Iteration:
    """Newton steps while the dual's gradient (both marginals' L1 error) exceeds
    ``threshold``, within the iteration budget and ``opts.max_steps`` (``active``: whether
    the stage runs at all)."""

    def cond(s: NewtonState):
        return active & (s.parts.residual() > threshold) & (s.iteration < max_iterations) \
            & (s.steps < opts.max_steps)

    def body(s: NewtonState) -> NewtonState:
        f, g, parts = newton_step(problem, s.f, s.g, s.parts, opts)
        err = lax.stop_gradient(parts.residual())
        return NewtonState(f, g, parts, s.iteration + 1, s.steps + 1,
                           s.errors.at[s.iteration].set(err))

    return Iteration(body, cond, length)


def newton_start(problem: TransportProblem, g: jax.Array, iteration: jax.Array,
                 errors: jax.Array) -> NewtonState:
    f = problem.f_update(g)
    return NewtonState(f, g, newton_parts(problem, f, g), iteration, jnp.asarray(0), errors)


def exact_newton_step(problem: TransportProblem, g_star: jax.Array) -> jax.Array:
    """One Newton step at the stopped-gradient solution with the exact (dense) Hessian: its
    derivative is H^-1 d(grad D)/d(theta), the implicit derivative itself (the step's
    dependence through H vanishes where grad D = 0; Bolte et al. 2023)."""
    sg = lax.stop_gradient
    g_star = sg(g_star)
    f_star = sg(problem).f_update(g_star)
    parts = newton_parts(problem, f_star, g_star)
    p = sg(jnp.exp(parts.log_plan))
    n, m = problem.shape
    tol = float(jnp.finfo(problem.dtype).eps) ** (2 / 3)
    _, dg = newton_direction(
        parts.target_rows - parts.rows, parts.target_cols - parts.cols,
        sg(_hessian_diagonal(parts.rows, parts.target_rows, problem.tau_a)),
        sg(_hessian_diagonal(parts.cols, parts.target_cols, problem.tau_b)),
        lambda v: p @ v, lambda u: p.T @ u, sg(problem.epsilon), problem.balanced, tol,
        10 * (n + m))
    return problem.center(g_star + dg)
