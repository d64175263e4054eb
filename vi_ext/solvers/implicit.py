"""Implicit layers: solutions of equations that differentiate like ordinary functions.

Let x*(theta) solve F(x*, theta) = 0. By the implicit function theorem,

    dx*/dtheta = -(dF/dx)^{-1} dF/dtheta,

so derivatives of x* need neither the solver's iterations nor their memory, only one linear
solve with the Jacobian dF/dx at the solution (see :mod:`vi_ext.solvers.linear_solve`).

- :func:`custom_root` decorates any solver ``solver(init, *args) -> x`` with the derivative of
  the root of ``optimality_fn(x, *args)``.
- :func:`custom_fixed_point` does the same for x = T(x, *args), with F(x) = x - T(x).

Iterative solvers built on them (:func:`~vi_ext.solvers.fixed_point.fixed_point`,
:func:`~vi_ext.solvers.sinkhorn.sinkhorn`) choose how to be differentiated with an object of
:mod:`vi_ext.solvers.differentiation`.

The rules are JVPs (``jax.custom_jvp``) and the linear solve is ``lax.custom_linear_solve``,
which JAX can transpose: forward mode (``jax.jvp``, ``jax.jacfwd``, Hessians, NumPyro's NUTS
with ``forward_mode_differentiation=True``) and reverse mode (``jax.grad``) both work. JAXopt,
whose design this follows, and OTT-JAX define VJPs only and fail in forward mode.

Reference: Blondel, Berthet, Cuturi, Frostig, Hoyer, Llinares-Lopez, Pedregosa & Vert,
"Efficient and Modular Implicit Differentiation", NeurIPS 2022; Bolte, Pauwels & Vaiter,
"One-step differentiation of iterative algorithms", NeurIPS 2023.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from vi_ext.solvers import linear_solve


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

        # one program per shapes (run eagerly, in a model's first trace or an autoguide's
        # set-up, the solver's loop and each operation of its derivative would each be
        # compiled on their own); inlined inside a caller's jit
        return functools.wraps(solver)(jax.jit(run))

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
