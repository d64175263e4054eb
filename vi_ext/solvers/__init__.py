"""Differentiable solvers as model components.

- :mod:`vi_ext.solvers.implicit`: :func:`custom_root`, :func:`custom_fixed_point` (implicit
  layers, the JAXopt design with JVP rules) and :func:`fixed_point` (iteration with three
  differentiation modes: implicit, unroll, onestep).
- :mod:`vi_ext.solvers.linear_solve`: the linear solves of implicit differentiation (cg,
  gmres, normal-cg, bicgstab, dense, onestep), tolerances scaled by dtype.
- :mod:`vi_ext.solvers.sinkhorn`: log-domain Sinkhorn (balanced and unbalanced), its three
  differentiation modes, and the Sinkhorn divergence.
- :mod:`vi_ext.solvers.sparse_newton`: the Sparse-Newton stage of Sinkhorn (Tang et al.,
  ICLR 2024): sparsified-Hessian Newton steps on the dual, by conjugate gradients.
- :mod:`vi_ext.solvers.vi_layer`: fit as a layer: the VI optimum, differentiable in model
  hyperparameters by implicit differentiation of its stationarity condition.
"""

from vi_ext.solvers.implicit import (
    DIFF_MODES,
    FixedPointInfo,
    custom_fixed_point,
    custom_root,
    fixed_point,
)
from vi_ext.solvers.linear_solve import METHODS, solve
from vi_ext.solvers.sinkhorn import SinkhornOutput, sinkhorn, sinkhorn_divergence, sqeuclidean
from vi_ext.solvers.sparse_newton import SparseNewton
from vi_ext.solvers.vi_layer import VIOptimum, vi_layer

__all__ = [
    "DIFF_MODES",
    "METHODS",
    "FixedPointInfo",
    "SinkhornOutput",
    "SparseNewton",
    "VIOptimum",
    "custom_fixed_point",
    "custom_root",
    "fixed_point",
    "sinkhorn",
    "sinkhorn_divergence",
    "solve",
    "sqeuclidean",
    "vi_layer",
]
