"""Fixed-point iteration x <- T(x, *args), differentiable by a chosen differentiation object.

The iteration is written once (an :class:`~vi_ext.solvers.differentiation.Iteration`) and
run by ``diff``: :class:`~vi_ext.solvers.differentiation.Implicit` (the implicit function
theorem at the solution; memory independent of the iterations),
:class:`~vi_ext.solvers.differentiation.Unroll` (reverse mode through all ``max_iterations``
steps of a ``lax.scan``, frozen once converged), or
:class:`~vi_ext.solvers.differentiation.OneStep` (one last differentiated application of T at
the stopped-gradient solution: Jacobian-free backpropagation).

Reference: Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022;
Bolte, Pauwels & Vaiter, "One-step differentiation of iterative algorithms", NeurIPS 2023.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vi_ext.errors import ArgumentError
from vi_ext.solvers.differentiation import (
    Differentiation,
    Iteration,
    as_differentiation,
    compiled,
)


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


def fixed_point(fixed_point_fn: Callable, init: Any, *args: Any,
                diff: str | Differentiation = "implicit", tol: float = 1e-6,
                max_iterations: int = 1000,
                solve: str | Callable = "gmres") -> tuple[Any, FixedPointInfo]:
    """Iterate x <- T(x, *args) from ``init`` until max|T(x) - x| <= tol, differentiably.

    It never raises: a run that hits ``max_iterations`` returns its last iterate with
    ``info.converged`` false.

    Args:
        fixed_point_fn: T(x, *args) -> x.
        init: the starting point (a pytree); not differentiated.
        *args: T's parameters; derivatives flow to them.
        diff: a differentiation object (``vx.solvers.Implicit(solve)``, ``Unroll()``,
            ``OneStep()``) or its name, ``"implicit"``, ``"unroll"`` or ``"onestep"``.
        tol: convergence threshold on max|T(x) - x|.
        max_iterations: iteration cap.
        solve: the linear solve of ``diff="implicit"`` (given by name).

    Returns:
        (x, :class:`FixedPointInfo`).

    Example:
        >>> x, info = fixed_point(lambda x, a: 0.5 * (x + a / x), 1.0, 2.0)  # sqrt(2)
    """
    diff = as_differentiation(diff, solve)
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) \
            or max_iterations < 1:
        raise ArgumentError("max_iterations", f"expected an int >= 1, got {max_iterations!r}.")
    return _fixed_point_compiled(init, args, fixed_point_fn, diff, tol, max_iterations)


def _fixed_point(init, args, fixed_point_fn, diff, tol, max_iterations):
    """:func:`fixed_point`, its options checked and resolved."""

    def solver(x0, *a):
        def body(state):
            x, _, it = state
            y = fixed_point_fn(x, *a)
            return y, lax.stop_gradient(_error(x, y)), it + 1

        def cond(state):
            _, err, it = state
            return (err > tol) & (it < max_iterations)

        inf = jnp.asarray(jnp.inf, dtype=jnp.result_type(*jax.tree.leaves(x0)))
        x, err, it = diff.run(Iteration(body, cond, max_iterations), (x0, inf, jnp.asarray(0)))
        return x, FixedPointInfo(it, err, err <= tol)

    return diff.solution(solver, fixed_point_fn, fixed_point_fn, init, *args)


# one program per T (by identity), shapes and options (see differentiation.compiled)
_fixed_point_compiled = compiled(_fixed_point, num_dynamic=2)
