"""The entropic optimal transport problem, apart from any solver: what Sinkhorn and the
Sparse-Newton stage both work on.

Between weights a (n) and b (m) with cost C (n x m), the regularized problem

    OT_eps(a, b) = min_P <P, C> + eps KL(P | a b^T)
                   + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b)

(balanced: rho = infinity, the marginals are constraints; tau = rho / (rho + eps) in (0, 1]
otherwise) has dual potentials f, g and the plan P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps).
:class:`TransportProblem` holds (C, a, b, eps, tau_a, tau_b) as a pytree (the taus are
static: they decide which formulas apply) and gives, for potentials (f, g), the plan, the
Sinkhorn updates in the log domain,

    f_i = tau_a * (-eps LSE_j [(g_j - C_ij) / eps + log b_j])
    g_j = tau_b * (-eps LSE_i [(f_i - C_ij) / eps + log a_i]),

the marginal error (the L1 distance of the plan's marginals from their optimal values: a
and b when balanced, a exp(-f / rho_a) and b exp(-g / rho_b) with a KL penalty, the
first-order conditions of the unbalanced problem), and the dual objective, which equals
OT_eps at the optimum.

Reference: Cuturi, "Sinkhorn Distances", NeurIPS 2013; Peyre & Cuturi, "Computational Optimal
Transport", 2019, ch. 4 (log domain) and 10.2 (unbalanced, Chizat et al. 2018).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp


def sqeuclidean(x: jax.Array, y: jax.Array) -> jax.Array:
    """C_ij = ||x_i - y_j||^2 for point clouds x [n, d], y [m, d]."""
    x2 = jnp.sum(x**2, axis=1)
    y2 = jnp.sum(y**2, axis=1)
    return jnp.maximum(x2[:, None] + y2[None, :] - 2 * x @ y.T, 0.0)


@dataclasses.dataclass(frozen=True)
class TransportProblem:
    """An entropic OT problem (a pytree: jit and vmap see the arrays, the taus are static).

    Attributes:
        cost: C [n, m].
        a, b: the marginal weights [n], [m].
        epsilon: the entropic regularization.
        tau_a, tau_b: 1 for a marginal constraint, rho / (rho + eps) for a KL penalty.
    """

    cost: jax.Array
    a: jax.Array
    b: jax.Array
    epsilon: jax.Array
    tau_a: float = 1.0
    tau_b: float = 1.0

    @property
    def balanced(self) -> bool:
        return self.tau_a == 1.0 and self.tau_b == 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.cost.shape

    @property
    def dtype(self):
        return self.cost.dtype

    def with_epsilon(self, epsilon) -> TransportProblem:
        return dataclasses.replace(self, epsilon=epsilon)

    def log_plan(self, f: jax.Array, g: jax.Array) -> jax.Array:
        """log P_ij = (f_i + g_j - C_ij) / eps + log a_i + log b_j."""
        return ((f[:, None] + g[None, :] - self.cost) / self.epsilon + jnp.log(self.a)[:, None]
                + jnp.log(self.b)[None, :])

    def plan(self, f: jax.Array, g: jax.Array) -> jax.Array:
        return jnp.exp(self.log_plan(f, g))

    def f_update(self, g: jax.Array) -> jax.Array:
        """The f that makes the rows exact (balanced) or optimal (unbalanced) given g."""
        return -self.tau_a * self.epsilon * self._row_lse(g)

    def _row_lse(self, g):
        return logsumexp((g[None, :] - self.cost) / self.epsilon + jnp.log(self.b)[None, :],
                         axis=1)

    def _col_lse(self, f):
        return logsumexp((f[:, None] - self.cost) / self.epsilon + jnp.log(self.a)[:, None],
                         axis=0)

    def optimal_marginal(self, w: jax.Array, p: jax.Array, tau: float) -> jax.Array:
        """w itself for a constraint, w exp(-p / rho) for a KL penalty."""
        if tau == 1.0:
            return w
        return w * jnp.exp(-p * (1.0 - tau) / (self.epsilon * tau))

    def update(self, g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One pair of Sinkhorn updates from g: (f, new g, marginal error of (f, g)).

        The error comes free from the g update's LSE (the column sums of the plan at
        (f, g)); rows are exact after the f update in the balanced case only."""
        f = self.f_update(g)
        lse = self._col_lse(f)
        col = self.b * jnp.exp(g / self.epsilon + lse)
        err = jnp.sum(jnp.abs(col - self.optimal_marginal(self.b, g, self.tau_b)))
        if self.tau_a < 1.0:
            row = self.a * jnp.exp(f / self.epsilon + self._row_lse(g))
            err = err + jnp.sum(jnp.abs(row - self.optimal_marginal(self.a, f, self.tau_a)))
        return f, -self.tau_b * self.epsilon * lse, err

    def center(self, g: jax.Array) -> jax.Array:
        """g - mean(g) in the balanced case (the potentials are defined up to (f + c, g - c),
        which would make I - dT/dg singular), g otherwise."""
        return g - jnp.mean(g) if self.balanced else g

    def fixed_point_map(self, g: jax.Array) -> jax.Array:
        """T(g): the (centered) g after one pair of updates; g* = T(g*) at the solution."""
        return self.center(self.update(g)[1])

    def marginals(self, f: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(P 1, P^T 1)."""
        p = self.plan(f, g)
        return p.sum(1), p.sum(0)

    def residual(self, f: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The dual's gradient: the optimal marginals minus the plan's, (rows, columns)."""
        r, c = self.marginals(f, g)
        return (self.optimal_marginal(self.a, f, self.tau_a) - r,
                self.optimal_marginal(self.b, g, self.tau_b) - c)

    def dual(self, f: jax.Array, g: jax.Array) -> jax.Array:
        """The dual objective at (f, g): OT_eps at the optimum."""
        eps = self.epsilon
        mass = jnp.sum(self.plan(f, g))

        def div(p, w, tau):
            if tau == 1.0:
                return jnp.sum(w * p)
            rho = eps * tau / (1.0 - tau)
            return jnp.sum(w * rho * (1.0 - jnp.exp(-p / rho)))

        return (div(f, self.a, self.tau_a) + div(g, self.b, self.tau_b)
                - eps * (mass - jnp.sum(self.a) * jnp.sum(self.b)))


jax.tree_util.register_dataclass(TransportProblem, data_fields=["cost", "a", "b", "epsilon"],
                                 meta_fields=["tau_a", "tau_b"])
