"""Entropy-regularized optimal transport by log-domain Sinkhorn, differentiable three ways.

Three layers, as in OTT-JAX: the problem (:class:`~vi_ext.solvers.transport.TransportProblem`:
cost, marginals, epsilon, tau; plan, potentials' updates, marginal errors, dual), the
solver (here: the Sinkhorn iteration written once as an
:class:`~vi_ext.solvers.differentiation.Iteration`, and the optional Sparse-Newton stage,
:mod:`vi_ext.solvers.sparse_newton`), and the differentiation object that runs them
(:mod:`vi_ext.solvers.differentiation`):

- ``Implicit(solve)`` (``diff="implicit"``): the fixed point g* = T(g*) of the centered
  Sinkhorn map, through :func:`~vi_ext.solvers.implicit.custom_fixed_point`: one linear
  solve, memory independent of the iterations. Sinkhorn iterates on g alone (f is one
  update away), so the system has size m, not n + m. In the balanced case the potentials
  are defined up to (f + c, g - c); the map is centered (g - mean(g)) so that I - dT/dg is
  nonsingular.
- ``Unroll()`` (``"unroll"``): reverse mode through ``max_iterations`` updates in a
  ``lax.scan``, frozen once converged.
- ``OneStep()`` (``"onestep"``): one differentiated update at the stopped-gradient solution
  (with the Newton stage: one exact-Hessian Newton step, whose derivative is the implicit
  one).

The iteration stops when the marginal error falls below ``threshold`` (it comes free from the
g update's LSE). f is computed from g* by one differentiated update in every mode.
``reg_ot_cost`` is the dual objective at (f, g); by default (``danskin=True``, as in OTT-JAX)
it is differentiated with the potentials held fixed: at the optimum the dual's partial
derivatives in (f, g) vanish, so its gradient in C, a, b and eps is exact (Danskin's theorem;
in C it is the plan) and needs no linear solve. That matters at small eps: the Sinkhorn map
is then a weak contraction, I - dT/dg is ill-conditioned, and in float32 the implicit
derivatives of the potentials can be inaccurate or NaN while the cost's gradient stays exact.

Reference: Cuturi, "Sinkhorn Distances", NeurIPS 2013; Peyre & Cuturi, "Computational Optimal
Transport", 2019, ch. 4 and 10.2; Feydy et al., "Interpolating between Optimal Transport and
MMD using Sinkhorn Divergences", AISTATS 2019; Cuturi et al., "Optimal Transport Tools
(OTT)", 2022 (the layers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vi_ext.errors import ArgumentError
from vi_ext.solvers import sparse_newton as sn
from vi_ext.solvers.differentiation import (
    Differentiation,
    Iteration,
    as_differentiation,
    compiled,
)
from vi_ext.solvers.sparse_newton import SparseNewton
from vi_ext.solvers.transport import TransportProblem, sqeuclidean

__all__ = ["SinkhornOutput", "SinkhornState", "TransportProblem", "sinkhorn",
           "sinkhorn_divergence", "sinkhorn_iteration", "sqeuclidean"]


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

    @property
    def problem(self) -> TransportProblem:
        return TransportProblem(self.cost_matrix, self.a, self.b, self.epsilon, self.tau_a,
                                self.tau_b)

    def plan(self) -> jax.Array:
        """P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps) [n, m]."""
        return self.problem.plan(self.f, self.g)

    def marginals(self) -> tuple[jax.Array, jax.Array]:
        """(P 1, P^T 1)."""
        return self.problem.marginals(self.f, self.g)

    def transport_cost(self) -> jax.Array:
        """<P, C>, the unregularized cost of the plan."""
        return jnp.sum(self.plan() * self.cost_matrix)


class SinkhornState(NamedTuple):
    """The Sinkhorn loop's state: g, the last marginal error, the update counter, and the
    error after each update (``inf`` beyond)."""

    g: jax.Array
    error: jax.Array
    iteration: jax.Array
    errors: jax.Array


def _epsilon_at(problem: TransportProblem, it, schedule):
    if schedule is None:
        return problem.epsilon
    init, decay = schedule
    return jnp.maximum(problem.epsilon, init * decay ** it.astype(problem.dtype))


def sinkhorn_iteration(problem: TransportProblem, threshold: float, stop: int,
                       schedule: tuple | None = None, length: int | None = None) -> Iteration:
    """The Sinkhorn loop, written once: one pair of updates per step (centered in the
    balanced case) until the marginal error is below ``threshold`` or the counter reaches
    ``stop``; with an epsilon ``schedule`` (init, decay), step t uses
    max(epsilon, init decay^t) and its error does not count until epsilon is reached.
    ``length`` bounds the steps an unrolled run scans (default ``stop``)."""

    def cond(s: SinkhornState):
        return (s.error > threshold) & (s.iteration < stop)

    def body(s: SinkhornState) -> SinkhornState:
        eps = _epsilon_at(problem, s.iteration, schedule)
        _, g, err = problem.with_epsilon(eps).update(s.g)
        err = jnp.where(eps > problem.epsilon, jnp.inf, lax.stop_gradient(err))
        return SinkhornState(problem.center(g), err, s.iteration + 1,
                             s.errors.at[s.iteration].set(err))

    return Iteration(body, cond, stop if length is None else length)


def _solve(problem: TransportProblem, g0: jax.Array, diff: Differentiation, threshold: float,
           max_iterations: int, schedule, newton: SparseNewton | None):
    """The forward solve as ``diff`` runs it: Sinkhorn, or a Sinkhorn warm-up, Newton steps
    and a Sinkhorn finish. Returns g and (error, iterations, error history, Newton steps)."""
    inf = jnp.asarray(jnp.inf, problem.dtype)
    state = SinkhornState(g0, inf, jnp.asarray(0), jnp.full((max_iterations,), jnp.inf,
                                                            problem.dtype))
    if newton is None:
        state = diff.run(sinkhorn_iteration(problem, threshold, max_iterations, schedule),
                         state)
        return state.g, (state.error, state.iteration, state.errors, jnp.asarray(0))
    warm = min(newton.warmup, max_iterations)
    if schedule is None and newton.anneal is not None:
        # the warm-up anneals epsilon from the mean cost
        schedule = (jnp.maximum(problem.epsilon, jnp.mean(problem.cost)), newton.anneal)
    state = diff.run(sinkhorn_iteration(problem, threshold, warm, lax.stop_gradient(schedule)
                                        if schedule is not None else None), state)
    stage = sn.newton_start(problem, state.g, state.iteration, state.errors)
    stage = diff.run(sn.newton_iteration(problem, threshold, max_iterations, newton,
                                         state.error > threshold,
                                         min(newton.max_steps, max_iterations - warm)), stage)
    g = problem.center(stage.g)
    _, _, err = lax.stop_gradient(problem).update(lax.stop_gradient(g))
    # the history's last entry is the error that decides convergence (Newton's own is the
    # dual gradient's norm, both marginals: another measure)
    errors = stage.errors.at[jnp.maximum(stage.iteration - 1, 0)].set(err)
    state = SinkhornState(g, err, stage.iteration, errors)
    # (the finish starts at warm + Newton steps or later: that bounds its unrolled length)
    finish = sinkhorn_iteration(problem, threshold, max_iterations,
                                length=max(1, max_iterations - warm))
    state = diff.run(finish, state)
    return state.g, (state.error, state.iteration, state.errors, stage.steps)


def _check(x, y, cost, epsilon, tau_a, tau_b, threshold, max_iterations):
    if (cost is None) == (x is None or y is None):
        raise ArgumentError("cost", "pass either point clouds x and y, or a cost matrix.")
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


def problem_of(x=None, y=None, *, cost=None, a=None, b=None, epsilon=0.1, tau_a=1.0,
               tau_b=1.0) -> TransportProblem:
    """The :class:`TransportProblem` of :func:`sinkhorn`'s arguments (uniform weights by
    default; the squared Euclidean cost between point clouds)."""
    C = sqeuclidean(jnp.asarray(x), jnp.asarray(y)) if cost is None else jnp.asarray(cost)
    if not jnp.issubdtype(C.dtype, jnp.floating):
        C = C.astype(jnp.float32)
    n, m = C.shape
    a = jnp.full((n,), 1.0 / n, C.dtype) if a is None else jnp.asarray(a, C.dtype)
    b = jnp.full((m,), 1.0 / m, C.dtype) if b is None else jnp.asarray(b, C.dtype)
    if a.shape != (n,) or b.shape != (m,):
        raise ArgumentError("a", f"weights of shapes {a.shape} and {b.shape} do not match the "
                                 f"cost matrix {C.shape}.")
    return TransportProblem(C, a, b, jnp.asarray(epsilon, C.dtype), float(tau_a), float(tau_b))


def sinkhorn(x: jax.Array | None = None, y: jax.Array | None = None, *,
             cost: jax.Array | None = None, a: jax.Array | None = None,
             b: jax.Array | None = None, epsilon: float = 0.1, tau_a: float = 1.0,
             tau_b: float = 1.0, threshold: float = 1e-3, max_iterations: int = 2000,
             epsilon_schedule: tuple[float, float] | None = None,
             diff: str | Differentiation = "implicit", solve: str | Callable = "gmres",
             init: jax.Array | None = None, danskin: bool = True,
             newton: bool | SparseNewton = False) -> SinkhornOutput:
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
        diff: a differentiation object (``vx.solvers.Implicit(solve)``, ``Unroll()``,
            ``OneStep()``) or its name, ``"implicit"``, ``"unroll"`` or ``"onestep"`` (see
            the module docstring).
        solve: the linear solve of ``diff="implicit"`` (given by name).
        init: a starting g [m] (warm start); not differentiated.
        danskin: differentiate ``reg_ot_cost`` with the potentials held fixed (exact at the
            optimum, robust at small epsilon); False differentiates it through the
            potentials by ``diff``.
        newton: the Sparse-Newton stage (Tang et al. 2024): ``True`` for the default
            :class:`~vi_ext.solvers.sparse_newton.SparseNewton` options, or an instance.
            Sinkhorn warms up, Newton steps on the dual (sparsified Hessian, conjugate
            gradients, line search) take over, and Sinkhorn finishes if they stop short.
            Much faster at small epsilon. With ``OneStep`` the differentiated step is an
            exact-Hessian Newton step, whose derivative is the implicit one.

    Returns:
        a :class:`SinkhornOutput`.

    Example:
        >>> out = sinkhorn(x, y, epsilon=0.05, threshold=1e-4, diff=vx.solvers.Implicit())
        >>> out.reg_ot_cost, out.plan(), out.converged
    """
    _check(x, y, cost, epsilon, tau_a, tau_b, threshold, max_iterations)
    diff = as_differentiation(diff, solve)
    sn.check_options(newton)
    static = (float(tau_a), float(tau_b), float(threshold), int(max_iterations),
              epsilon_schedule, diff, danskin, SparseNewton() if newton is True else
              (newton or None))
    out = _sinkhorn_compiled(x, y, cost, a, b, epsilon, init, *static)
    # (the taus are static: as outputs of the program they would come back as arrays)
    return out._replace(tau_a=float(tau_a), tau_b=float(tau_b))


def _sinkhorn(x, y, cost, a, b, epsilon, init, tau_a, tau_b, threshold, max_iterations,
              epsilon_schedule, diff, danskin, opts) -> SinkhornOutput:
    """:func:`sinkhorn`'s computation, its options checked and resolved."""
    problem = problem_of(x, y, cost=cost, a=a, b=b, epsilon=epsilon, tau_a=tau_a, tau_b=tau_b)
    m = problem.shape[1]
    g0 = jnp.zeros((m,), problem.dtype) if init is None else \
        lax.stop_gradient(jnp.asarray(init, problem.dtype))

    def solver(g_init, problem):
        return _solve(problem, g_init, diff, threshold, max_iterations, epsilon_schedule, opts)

    def fixed_point_map(g, problem):
        return problem.fixed_point_map(g)

    def one_step_map(g, problem):
        return problem.fixed_point_map(g) if opts is None else sn.exact_newton_step(problem, g)

    g, (err, it, errors, k) = diff.solution(solver, fixed_point_map, one_step_map, g0, problem)
    f = problem.f_update(g)
    if danskin:
        cost_value = problem.dual(lax.stop_gradient(f), lax.stop_gradient(g))
    else:
        cost_value = problem.dual(f, g)
    return SinkhornOutput(f, g, cost_value, err <= threshold, it, k, errors, problem.cost,
                          problem.a, problem.b, problem.epsilon, problem.tau_a, problem.tau_b)


# one program per shape and options (see differentiation.compiled: ~400 programs eagerly)
_sinkhorn_compiled = compiled(_sinkhorn, num_dynamic=7)


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
