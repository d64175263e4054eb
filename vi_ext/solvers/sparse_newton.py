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
