"""Objectives: programs whose expected value is to be maximized."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Objective(NamedTuple):
    """A variational objective: the expected value of a program, to be maximized.

    Attributes:
        program: ``program(model, guide, *args, **kwargs) -> scalar``, written with the
            primitives of :mod:`vi_ext.program`; its expectation is the objective.
        name: a short name, used in progress bars and reports.
    """

    program: Callable[..., Any]
    name: str = "objective"


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
