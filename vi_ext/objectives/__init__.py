"""The objective library, each objective written in the objective language.

Objectives are maximized. Use them by value (``vx.objectives.elbo(num_particles=4)``) or by
name (``"elbo"``) in :func:`vi_ext.fit`; :func:`get` resolves names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vi_ext.errors import ArgumentError
from vi_ext.objectives.cubo import cubo
from vi_ext.objectives.elbo import elbo
from vi_ext.objectives.hierarchical import diwhvi, hvi, iwhvi
from vi_ext.objectives.iwae import iwae
from vi_ext.objectives.renyi import renyi
from vi_ext.objectives.wake import pwake, qwake
from vi_ext.program.objective import Objective

#: name -> factory called with no arguments when an objective is given by name.
REGISTRY: dict[str, Callable[[], Objective]] = {
    "elbo": elbo,
    "iwae": iwae,
    "renyi": renyi,
    "hvi": hvi,
    "iwhvi": iwhvi,
    "diwhvi": diwhvi,
    "pwake": pwake,
    "qwake": qwake,
    "cubo": cubo,
}


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


__all__ = [
    "REGISTRY", "Objective", "cubo", "diwhvi", "elbo", "get", "hvi", "iwae", "iwhvi",
    "pwake", "qwake", "renyi",
]
