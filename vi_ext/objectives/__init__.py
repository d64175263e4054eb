"""The objective library, each objective written in the objective language.

Objectives are maximized. Use them by value (``vx.objectives.elbo(num_particles=4)``) or by
name (``"elbo"``) in :func:`vi_ext.fit`; :func:`get` resolves names.
"""

from __future__ import annotations

from vi_ext.objectives.cubo import cubo
from vi_ext.objectives.elbo import elbo
from vi_ext.objectives.hierarchical import diwhvi, hvi, iwhvi
from vi_ext.objectives.iwae import iwae
from vi_ext.objectives.renyi import renyi
from vi_ext.objectives.wake import pwake, qwake
from vi_ext.program.objective import REGISTRY, Objective, get, register

for _name, _factory in (("elbo", elbo), ("iwae", iwae), ("renyi", renyi), ("hvi", hvi),
                        ("iwhvi", iwhvi), ("diwhvi", diwhvi), ("pwake", pwake),
                        ("qwake", qwake), ("cubo", cubo)):
    register(_name, _factory)


__all__ = [
    "REGISTRY", "Objective", "cubo", "diwhvi", "elbo", "get", "hvi", "iwae", "iwhvi",
    "pwake", "qwake", "register", "renyi",
]
