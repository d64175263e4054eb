"""The objective language: objectives as programs over NumPyro models and guides.

Primitives: :func:`sim`, :func:`density`, :func:`particles`, :func:`logmeanexp`,
:class:`Marginal` (approximate marginalization, both sides), :func:`normalize` (approximate
normalization), and :func:`expectation`, which turns a program into an :class:`Objective`.
The transformation into gradient estimators lives in :mod:`vi_ext.program.transform`.
"""

from vi_ext.program.context import Frame, current_frame
from vi_ext.program.marginal import Marginal, marginal
from vi_ext.program.normalize import Normalized, normalize
from vi_ext.program.objective import Objective, expectation
from vi_ext.program.primitives import Choices, density, logmeanexp, particles, sim
from vi_ext.program.transform import estimate, value_and_grad_fn
from vi_ext.program.view import DrawView, LogMeanExp

__all__ = [
    "Choices",
    "DrawView",
    "Frame",
    "LogMeanExp",
    "Marginal",
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
