"""Implicit layers: solutions of equations that differentiate like ordinary functions.

Let x*(theta) solve F(x*, theta) = 0. By the implicit function theorem,

    dx*/dtheta = -(dF/dx)^{-1} dF/dtheta,

so derivatives of x* need neither the solver's iterations nor their memory, only one linear
solve with the Jacobian dF/dx at the solution (see :mod:`vi_ext.solvers.linear_solve`).

- :func:`custom_root` decorates any solver ``solver(init, *args) -> x`` with the derivative of
  the root of ``optimality_fn(x, *args)``.
- :func:`custom_fixed_point` does the same for x = T(x, *args), with F(x) = x - T(x).
- :func:`fixed_point` iterates T to a fixed point and differentiates it in one of three
  modes: ``"implicit"`` (the theorem above), ``"unroll"`` (through every iteration of a
  ``lax.scan``; memory grows with the iterations), ``"onestep"`` (through one final
  application of T at the stopped-gradient solution: Jacobian-free backpropagation).

The rules are JVPs (``jax.custom_jvp``) and the linear solve is ``lax.custom_linear_solve``,
which JAX can transpose: forward mode (``jax.jvp``, ``jax.jacfwd``, Hessians, NumPyro's NUTS
with ``forward_mode_differentiation=True``) and reverse mode (``jax.grad``) both work. JAXopt,
whose design this follows, and OTT-JAX define VJPs only and fail in forward mode.

Reference: Blondel, Berthet, Cuturi, Frostig, Hoyer, Llinares-Lopez, Pedregosa & Vert,
"Efficient and Modular Implicit Differentiation", NeurIPS 2022; Bolte, Pauwels & Vaiter,
"One-step differentiation of iterative algorithms", NeurIPS 2023.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from vi_ext.errors import ArgumentError
from vi_ext.solvers import linear_solve

DIFF_MODES = ("implicit", "unroll", "onestep")


def _zero_tangent(a):
    a = jnp.asarray(a)
    if jnp.issubdtype(a.dtype, jnp.inexact):
        return jnp.zeros_like(a)
    return np.zeros(a.shape, dtype=jax.dtypes.float0)


def custom_root(optimality_fn: Callable, solve: str | Callable = "gmres",
                has_aux: bool = False, tol: float | None = None) -> Callable:
    """Decorator: give ``solver(init, *args)`` the implicit derivative of the root of
    ``optimality_fn(x, *args) = 0``.

    Args:
        optimality_fn: F(x, *args), a pytree shaped like x, zero at the solution.
        solve: the linear solve with dF/dx (see :data:`vi_ext.solvers.linear_solve.METHODS`);
            ``"cg"`` needs dF/dx symmetric positive definite.
        has_aux: the solver returns ``(x, aux)``; aux is not differentiated.
        tol: relative tolerance of the linear solve (default: by dtype).

    Returns:
        a decorator; the decorated solver takes the same positional arguments (no keyword
        arguments) and is differentiable in ``args`` (not in ``init``) in both modes.

    Example (ridge regression, F = gradient of the objective)::

        def F(w, lam, X, y):
            return X.T @ (X @ w - y) + lam * w

        @vx.solvers.custom_root(F, solve="cg")
        def ridge(init, lam, X, y):
            return jnp.linalg.solve(X.T @ X + lam * jnp.eye(X.shape[1]), X.T @ y)
    """
    linear_solve.check_method(solve)
    symmetric = solve == "cg"

    def decorator(solver: Callable) -> Callable:
        @jax.custom_jvp
        def run(init, *args):
            return solver(init, *args)

        @run.defjvp
        def run_jvp(primals, tangents):
            init, *args = primals
            _, *dargs = tangents
            # through run itself, so that the rule applies again for higher derivatives
            out = run(init, *args)
            x = out[0] if has_aux else out

            def f_of_args(*a):
                return optimality_fn(x, *a)

            _, f_dot = jax.jvp(f_of_args, tuple(args), tuple(dargs))

            # in one flat vector: leaves of the right-hand side that do not depend on the
            # tangents (symbolic zeros) would otherwise break the solve's transpose rule
            rhs, unravel = ravel_pytree(jax.tree.map(jnp.negative, f_dot))

            def matvec(v):
                tangent = jax.jvp(lambda y: optimality_fn(y, *args), (x,), (unravel(v),))[1]
                return ravel_pytree(tangent)[0]

            def lin_solve(mv, b):
                return linear_solve.solve(mv, b, method=solve, tol=tol)

            x_dot = unravel(lax.custom_linear_solve(matvec, rhs, lin_solve, lin_solve,
                                                    symmetric=symmetric))
            if has_aux:
                return out, (x_dot, jax.tree.map(_zero_tangent, out[1]))
            return out, x_dot

        return run

    return decorator


def custom_fixed_point(fixed_point_fn: Callable, solve: str | Callable = "gmres",
                       has_aux: bool = False, tol: float | None = None) -> Callable:
    """Decorator: give ``solver(init, *args)`` the implicit derivative of the fixed point
    x = T(x, *args), through the root of F(x, *args) = x - T(x, *args).

    With ``solve="onestep"``, dF/dx = I - dT/dx is replaced by the identity: the derivative
    is dT/dargs at the fixed point (Jacobian-free backpropagation).
    """

    def optimality_fn(x, *args):
        return jax.tree.map(jnp.subtract, x, fixed_point_fn(x, *args))

    return custom_root(optimality_fn, solve=solve, has_aux=has_aux, tol=tol)


class FixedPointInfo(NamedTuple):
    """How an iteration ended.

    Attributes:
        iterations: applications of T.
        error: the last max-norm of T(x) - x.
        converged: error <= tol.
    """

    iterations: jax.Array
    error: jax.Array
    converged: jax.Array


def _error(x, y):
    leaves = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), x, y))
    return jnp.max(jnp.stack(leaves))


def fixed_point(fixed_point_fn: Callable, init: Any, *args: Any, diff: str = "implicit",
                tol: float = 1e-6, max_iterations: int = 1000,
                solve: str | Callable = "gmres") -> tuple[Any, FixedPointInfo]:
    """Iterate x <- T(x, *args) from ``init`` until max|T(x) - x| <= tol, differentiably.

    It never raises: a run that hits ``max_iterations`` returns its last iterate with
    ``info.converged`` false.

    Args:
        fixed_point_fn: T(x, *args) -> x.
        init: the starting point (a pytree); not differentiated.
        *args: T's parameters; derivatives flow to them.
        diff: ``"implicit"`` (implicit function theorem at the solution; memory independent
            of the iterations), ``"unroll"`` (reverse mode through all ``max_iterations``
            steps of a ``lax.scan``, frozen once converged), or ``"onestep"`` (one last
            differentiated application of T at the stopped-gradient solution).
        tol: convergence threshold on max|T(x) - x|.
        max_iterations: iteration cap.
        solve: the linear solve of ``diff="implicit"``.

    Returns:
        (x, :class:`FixedPointInfo`).
    """
    if diff not in DIFF_MODES:
        raise ArgumentError("diff", f"expected one of {DIFF_MODES}, got {diff!r}.")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) \
            or max_iterations < 1:
        raise ArgumentError("max_iterations", f"expected an int >= 1, got {max_iterations!r}.")
    if diff == "unroll":
        return _unrolled(fixed_point_fn, init, args, tol, max_iterations)

    def iterate(x0, *a):
        def cond(state):
            _, err, it = state
            return (err > tol) & (it < max_iterations)

        def body(state):
            x, _, it = state
            y = fixed_point_fn(x, *a)
            return y, _error(x, y), it + 1

        inf = jnp.asarray(jnp.inf, dtype=jnp.result_type(*jax.tree.leaves(x0)))
        x, err, it = lax.while_loop(cond, body, (x0, inf, jnp.asarray(0)))
        return x, FixedPointInfo(it, err, err <= tol)

    if diff == "onestep":
        x, info = iterate(jax.lax.stop_gradient(init), *jax.lax.stop_gradient(args))
        return fixed_point_fn(jax.lax.stop_gradient(x), *args), info
    solver = custom_fixed_point(fixed_point_fn, solve=solve, has_aux=True)(iterate)
    return solver(init, *args)


def _unrolled(fixed_point_fn, init, args, tol, max_iterations):
    def body(state, _):
        x, err, it = state
        active = err > tol
        y = fixed_point_fn(x, *args)
        new_err = _error(x, y)
        x = jax.tree.map(lambda a, b: jnp.where(active, b, a), x, y)
        return (x, jnp.where(active, new_err, err), it + active.astype(it.dtype)), None

    inf = jnp.asarray(jnp.inf, dtype=jnp.result_type(*jax.tree.leaves(init)))
    (x, err, it), _ = lax.scan(body, (init, inf, jnp.asarray(0)), None, length=max_iterations)
    return x, FixedPointInfo(it, jax.lax.stop_gradient(err), err <= tol)
