"""The objective language: objectives as programs over NumPyro models and guides.

Primitives: :func:`sim`, :func:`density`, :func:`particles`, :func:`logmeanexp`, and
:func:`expectation`, which turns a program into an :class:`Objective`.
The transformation into gradient estimators lives in :mod:`vi_ext.program.transform`.
"""

from vi_ext.program.context import Frame, current_frame
from vi_ext.program.marginal import marginal
from vi_ext.program.normalize import Normalized, normalize
from vi_ext.program.objective import Objective, expectation
from vi_ext.program.primitives import Choices, density, logmeanexp, particles, sim
from vi_ext.program.transform import estimate, value_and_grad_fn

__all__ = [
    "Choices",
    "Frame",
    "Objective",
    "current_frame",
    "density",
    "estimate",
    "expectation",
    "logmeanexp",
    "marginal",
    "normalize",
    "Normalized",
    "particles",
    "sim",
    "value_and_grad_fn",
]
