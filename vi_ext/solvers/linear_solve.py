"""Linear solves A u = b for implicit differentiation, with A given only as a matvec.

Implicit differentiation of x*(theta), defined by F(x*, theta) = 0, needs the solution of

    (dF/dx) u = -(dF/dtheta) v          (forward mode)
    (dF/dx)^T w = g                     (reverse mode)

where dF/dx is only available as a Jacobian-vector product. The methods:

- ``"cg"``: conjugate gradients (A symmetric positive definite, e.g. the Hessian of a
  strictly convex objective);
- ``"gmres"``: restarted GMRES (any nonsingular A);
- ``"normal_cg"``: conjugate gradients on the normal equations A^T A u = A^T b (any
  nonsingular A; squares the condition number);
- ``"bicgstab"``: BiCGSTAB (any nonsingular A);
- ``"dense"``: A materialized column by column and factorized (small problems, exact);
- ``"onestep"``: A replaced by the identity, u = b: Jacobian-free backpropagation (Fung et
  al., AAAI 2022; Bolte, Pauwels & Vaiter, NeurIPS 2023), accurate when A is close to the
  identity, as for x - T(x) at the fixed point of a strong contraction.

Tolerances scale with the dtype: the default relative tolerance is eps^(2/3) of b's dtype
(2.4e-5 in float32, 3.7e-11 in float64), so a float32 solve does not chase a tolerance it
cannot reach.

Reference: Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022
(the JAXopt design).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.scipy.sparse import linalg as jsl

from vi_ext.errors import ArgumentError

METHODS = ("cg", "gmres", "normal_cg", "bicgstab", "dense", "onestep")


def default_tol(b: Any) -> float:
    """eps^(2/3) of the (widest) floating dtype in ``b``."""
    leaves = [leaf for leaf in jax.tree.leaves(b) if jnp.issubdtype(jnp.result_type(leaf),
                                                                      jnp.inexact)]
    if not leaves:
        return 1e-6
    eps = max(float(jnp.finfo(jnp.result_type(leaf)).eps) for leaf in leaves)
    return eps ** (2.0 / 3.0)


def check_method(method: Any, argument: str = "solve") -> None:
    if callable(method):
        return
    if method not in METHODS:
        raise ArgumentError(argument, f"expected one of {METHODS} or a function "
                                      f"solve(matvec, b) -> u, got {method!r}.")


def solve(matvec: Callable, b: Any, method: str | Callable = "gmres", tol: float | None = None,
          maxiter: int | None = None) -> Any:
    """Solve ``matvec(u) = b`` for a pytree ``u`` shaped like ``b``.

    Args:
        matvec: u -> A u, linear.
        b: the right-hand side (a pytree of arrays).
        method: one of :data:`METHODS`, or a function ``(matvec, b) -> u``.
        tol: relative tolerance of the iterative methods; default :func:`default_tol`.
        maxiter: iteration cap of the iterative methods (default: 10 x the dimension, at
            least 100).
    """
    check_method(method)
    if callable(method):
        return method(matvec, b)
    if method == "onestep":
        return b
    flat_b, unravel = ravel_pytree(b)
    n = flat_b.shape[0]
    tol = default_tol(b) if tol is None else tol
    maxiter = max(100, 10 * n) if maxiter is None else maxiter

    def mv(u):
        return ravel_pytree(matvec(unravel(u)))[0]

    if method == "dense":
        a = jax.jacfwd(mv)(jnp.zeros_like(flat_b))
        return unravel(jnp.linalg.solve(a, flat_b))
    if method == "cg":
        u, _ = jsl.cg(mv, flat_b, tol=tol, atol=0.0, maxiter=maxiter)
    elif method == "bicgstab":
        u, _ = jsl.bicgstab(mv, flat_b, tol=tol, atol=0.0, maxiter=maxiter)
    elif method == "gmres":
        u, _ = jsl.gmres(mv, flat_b, tol=tol, atol=0.0, restart=min(n, 30), maxiter=maxiter,
                         solve_method="batched")
    else:  # normal_cg
        rmv = jax.linear_transpose(mv, flat_b)

        def normal(u):
            return rmv(mv(u))[0]

        u, _ = jsl.cg(normal, rmv(flat_b)[0], tol=tol, atol=0.0, maxiter=maxiter)
    return unravel(u)
