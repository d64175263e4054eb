"""How an iterative solver is differentiated: a swappable object, apart from how it solves.

A solver is written once as loops, each an :class:`Iteration` (``body`` and ``cond`` on a
state, and the most steps it may take), and hands them to a differentiation object, which
decides how they run and how their solution gets its derivative:

- :class:`Implicit`: the loops run forward (``lax.while_loop``), and the solution x* gets the
  implicit derivative of the fixed point x* = T(x*, theta) of the solver's map, through
  :func:`~vi_ext.solvers.implicit.custom_fixed_point`: one linear solve, memory independent
  of the iterations (Blondel et al., NeurIPS 2022).
- :class:`Unroll`: the loops run as ``lax.scan`` of their full length, frozen once their
  condition fails (the frozen steps are skipped by a ``lax.cond``), and reverse mode goes
  through every step; memory grows with the iterations.
- :class:`OneStep`: the loops run forward on stopped gradients, then one more application
  of a map (the solver's fixed-point map, or a Newton step) is differentiated at the
  solution (Bolte, Pauwels & Vaiter, NeurIPS 2023).

``fixed_point`` and ``sinkhorn`` (its Sinkhorn loop and its Newton stage) are run by these
objects; the names ``"implicit"``, ``"unroll"`` and ``"onestep"`` (or ``"one-step"``) are
aliases (:func:`as_differentiation`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
from jax import lax

from vi_ext.errors import ArgumentError
from vi_ext.solvers import linear_solve
from vi_ext.solvers.implicit import custom_fixed_point

DIFF_MODES = ("implicit", "unroll", "onestep")


class Iteration(NamedTuple):
    """A loop: ``body(state) -> state`` while ``cond(state)``, at most ``length`` times."""

    body: Callable[[Any], Any]
    cond: Callable[[Any], Any]
    length: int


def _while(loop: Iteration, state: Any) -> Any:
    return lax.while_loop(loop.cond, loop.body, state)


@runtime_checkable
class Differentiation(Protocol):
    """``run(loop, state) -> state`` runs a loop; ``solution(solver, fixed_point_map,
    one_step_map, init, *params) -> (x, aux)`` returns the solver's solution with this
    object's derivative, where ``solver(init, *params) -> (x, aux)`` runs its loops with
    ``run`` and x = fixed_point_map(x, *params) at the solution."""

    name: str

    def run(self, loop: Iteration, state: Any) -> Any: ...

    def solution(self, solver: Callable, fixed_point_map: Callable,
                 one_step_map: Callable, init: Any, *params: Any) -> tuple[Any, Any]: ...


class Implicit(NamedTuple):
    """Implicit differentiation of the solution's fixed-point condition.

    Attributes:
        solve: the linear solve with I - dT/dx (see :mod:`vi_ext.solvers.linear_solve`).
        tol: its relative tolerance (default: by dtype).
    """

    solve: str | Callable = "gmres"
    tol: float | None = None
    name: str = "implicit"

    def run(self, loop: Iteration, state: Any) -> Any:
        return _while(loop, state)

    def solution(self, solver, fixed_point_map, one_step_map, init, *params):
        return custom_fixed_point(fixed_point_map, solve=self.solve, has_aux=True,
                                  tol=self.tol)(solver)(init, *params)


class Unroll(NamedTuple):
    """Reverse mode through every iteration (a ``lax.scan`` of each loop's full length)."""

    name: str = "unroll"

    def run(self, loop: Iteration, state: Any) -> Any:
        def body(state, _):
            return lax.cond(lax.stop_gradient(loop.cond(state)), loop.body, lambda s: s,
                            state), None

        return lax.scan(body, state, None, length=loop.length)[0]

    def solution(self, solver, fixed_point_map, one_step_map, init, *params):
        return solver(lax.stop_gradient(init), *params)


class OneStep(NamedTuple):
    """One differentiated application of ``one_step_map`` at the stopped solution."""

    name: str = "onestep"

    def run(self, loop: Iteration, state: Any) -> Any:
        return _while(loop, state)

    def solution(self, solver, fixed_point_map, one_step_map, init, *params):
        x, aux = solver(lax.stop_gradient(init), *lax.stop_gradient(params))
        return one_step_map(lax.stop_gradient(x), *params), aux


def as_differentiation(diff: str | Differentiation, solve: str | Callable = "gmres",
                       argument: str = "diff") -> Differentiation:
    """The differentiation object for ``diff``: an object is returned as it is; the names
    ``"implicit"`` (with ``solve``), ``"unroll"`` and ``"onestep"`` / ``"one-step"`` are
    aliases."""
    if isinstance(diff, Differentiation) and not isinstance(diff, str):
        return diff
    if diff == "implicit":
        linear_solve.check_method(solve)
        return Implicit(solve)
    if diff == "unroll":
        return Unroll()
    if diff in ("onestep", "one-step"):
        return OneStep()
    raise ArgumentError(argument, f"expected one of {DIFF_MODES} or a differentiation object "
                        f"(vx.solvers.Implicit(), Unroll(), OneStep()), got {diff!r}.")


def stop(tree: Any) -> Any:
    """``lax.stop_gradient`` over a pytree (for states that carry counters)."""
    return jax.tree.map(lax.stop_gradient, tree)


def compiled(fn: Callable, num_dynamic: int) -> Callable:
    """``fn(*dynamic, *static)`` as one ``jax.jit`` program per shapes and static options.

    A solver runs eagerly more often than it seems (a model's prior trace, an autoguide's
    set-up, ``jax.grad`` outside jit), and eagerly every operation and loop of the solve and
    of its derivative compiles on its own, again at every call (each loop body is a new
    closure). Inside a caller's jit the program is inlined. The arguments after the first
    ``num_dynamic`` are static; if one cannot be hashed (a schedule of arrays), ``fn`` runs
    as it is.
    """
    jitted = jax.jit(fn, static_argnums=tuple(range(num_dynamic,
                                                    fn.__code__.co_argcount)))

    def call(*args: Any) -> Any:
        try:
            hash(args[num_dynamic:])
        except TypeError:
            return fn(*args)
        return jitted(*args)

    return call
