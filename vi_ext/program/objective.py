"""Objectives: programs whose expected value is to be maximized, and the names they go by.

The registry of names lives here, beside the type, so that the transformation can resolve a
name without knowing any particular objective: the objective library
(:mod:`vi_ext.objectives`) registers its factories, and users may register theirs. A name
never changes how an objective is differentiated; only the program's structure does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from vi_ext.errors import ArgumentError


class Objective(NamedTuple):
    """A variational objective: the expected value of a program, to be maximized.

    Attributes:
        program: ``program(model, guide, *args, **kwargs) -> scalar``, written with the
            primitives of :mod:`vi_ext.program`; its expectation is the objective.
        name: a short name, used in progress bars and reports.
    """

    program: Callable[..., Any]
    name: str = "objective"

    @property
    def num_particles(self) -> int:
        """Guide draws per estimate, as far as the objective says: the ``num_particles``
        its factory bound (``vx.objectives.elbo(4)``), else 1. Used to count a fit's
        gradient evaluations, never to change how it is differentiated."""
        keywords = getattr(self.program, "keywords", None) or {}
        return int(keywords.get("num_particles", 1))


def expectation(
    program: Callable[..., Any] | None = None, *, name: str | None = None
) -> Objective | Callable[[Callable[..., Any]], Objective]:
    """Mark a program as an expected value: its expectation is the objective.

    Usable as a decorator, with or without a name::

        @expectation
        def my_objective(model, guide, *args, **kwargs): ...

        @expectation(name="cubo")
        def chi2(model, guide, *args, **kwargs): ...

    Returns:
        An Objective, accepted by :func:`vi_ext.estimate` and :func:`vi_ext.fit` (or a
        decorator that makes one, when called with only ``name``).
    """

    def wrap(fn: Callable[..., Any]) -> Objective:
        return Objective(program=fn, name=name or getattr(fn, "__name__", "objective"))

    return wrap if program is None else wrap(program)


#: name -> factory called with no arguments when an objective is given by name.
REGISTRY: dict[str, Callable[[], Objective]] = {}


def register(name: str, factory: Callable[[], Objective]) -> None:
    """Let ``name`` stand for ``factory()`` wherever an objective is expected."""
    REGISTRY[name] = factory


def get(objective: Any) -> Objective:
    """An :class:`Objective` from an objective or a registered name.

    Raises:
        ArgumentError: unknown name, or not an objective.
    """
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        if objective not in REGISTRY:
            raise ArgumentError(
                "objective",
                f"unknown objective name '{objective}'. Known names: {sorted(REGISTRY)}; or "
                "pass an objective object such as vx.objectives.elbo(), or your own built with "
                "vx.program.expectation.",
            )
        return REGISTRY[objective]()
    raise ArgumentError(
        "objective",
        f"expected an Objective (e.g. vx.objectives.elbo()) or a name, got "
        f"{type(objective).__name__}.",
    )
