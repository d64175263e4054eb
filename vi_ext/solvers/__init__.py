"""Differentiable solvers as model components.

In layers, each importing only those above it in this list:

- :mod:`vi_ext.solvers.linear_solve`: the linear solves of implicit differentiation (cg,
  gmres, normal-cg, bicgstab, dense, onestep), tolerances scaled by dtype.
- :mod:`vi_ext.solvers.implicit`: :func:`custom_root`, :func:`custom_fixed_point` (implicit
  layers, the JAXopt design with JVP rules).
- :mod:`vi_ext.solvers.differentiation`: how an iterative solver is differentiated, as an
  object the solver's loops are handed: :class:`Implicit`, :class:`Unroll`,
  :class:`OneStep` (the strings ``"implicit"``, ``"unroll"``, ``"onestep"`` are aliases).
- :mod:`vi_ext.solvers.fixed_point`: :func:`fixed_point`, iteration to a fixed point.
- :mod:`vi_ext.solvers.transport`: the entropic OT problem (:class:`TransportProblem`:
  cost, marginals, epsilon, tau; plan, potentials, marginal errors, dual).
- :mod:`vi_ext.solvers.sparse_newton`: the Sparse-Newton stage (Tang et al., ICLR 2024):
  sparsified-Hessian Newton steps on the dual, by conjugate gradients.
- :mod:`vi_ext.solvers.sinkhorn`: log-domain Sinkhorn (balanced and unbalanced), the
  iteration written once, and the Sinkhorn divergence.

Solvers know nothing of fitting: a whole fit as a differentiable layer is
:func:`vi_ext.vi_layer` (:mod:`vi_ext.fit.layer`), which uses them. ``vx.solvers.vi_layer``
and ``vx.solvers.VIOptimum`` still work, with a DeprecationWarning.
"""

from vi_ext.solvers.differentiation import (
    DIFF_MODES,
    Differentiation,
    Implicit,
    Iteration,
    OneStep,
    Unroll,
)
from vi_ext.solvers.fixed_point import FixedPointInfo, fixed_point
from vi_ext.solvers.implicit import custom_fixed_point, custom_root
from vi_ext.solvers.linear_solve import METHODS, solve
from vi_ext.solvers.sinkhorn import SinkhornOutput, sinkhorn, sinkhorn_divergence
from vi_ext.solvers.sparse_newton import SparseNewton
from vi_ext.solvers.transport import TransportProblem, sqeuclidean

__all__ = [
    "DIFF_MODES",
    "METHODS",
    "Differentiation",
    "FixedPointInfo",
    "Implicit",
    "Iteration",
    "OneStep",
    "SinkhornOutput",
    "SparseNewton",
    "TransportProblem",
    "Unroll",
    "custom_fixed_point",
    "custom_root",
    "fixed_point",
    "sinkhorn",
    "sinkhorn_divergence",
    "solve",
    "sqeuclidean",
]


_MOVED = {"vi_layer": "vi_ext.fit.layer", "VIOptimum": "vi_ext.fit.layer"}


def __getattr__(name: str):
    # deprecated aliases of names that moved beside fit (the solvers do not import fit: the
    # module is loaded by name, on first use of the old spelling only)
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(f"vx.solvers.{name} moved to vx.{name} (vi_ext.fit.layer); the old "
                      "name will be removed.", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
