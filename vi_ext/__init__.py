"""vi_ext: programmable variational inference for NumPyro.

    import vi_ext as vx
    res = vx.fit(model, *args, objective=vx.objectives.elbo(), num_steps=2000, **kwargs)
    res.summary()

Objectives are programs (:mod:`vi_ext.program`); gradient strategies are chosen per site
(:mod:`vi_ext.estimators`); :func:`estimate` gives an unbiased (value, gradient) estimate.
"""

import warnings as _warnings

# in a notebook without ipywidgets, tqdm.auto (ours, NumPyro's) warns on import, then falls
# back to a text progress bar, which is what we want: only that message is silenced
_warnings.filterwarnings("ignore", message="IProgress not found", module=r"tqdm\.")

from vi_ext import (
    boosting,
    checkpoint,
    diagnostics,
    estimators,
    mcmc,
    objectives,
    optim,
    program,
    reparam,
    solvers,
    stopping,
)
from vi_ext.checkpoint import CheckpointError
from vi_ext.errors import ArgumentError, CallbackError, NonFiniteError, SiteError, VIError
from vi_ext.fit import FitConfig, FitState, VIOptimum, fit, vi_layer
from vi_ext.params import init_params
from vi_ext.program.transform import estimate
from vi_ext.result import FitResult

__version__ = "0.1.0.dev0"

__all__ = [
    "ArgumentError",
    "CallbackError",
    "CheckpointError",
    "FitConfig",
    "FitResult",
    "FitState",
    "NonFiniteError",
    "SiteError",
    "VIError",
    "VIOptimum",
    "boosting",
    "checkpoint",
    "diagnostics",
    "estimate",
    "estimators",
    "mcmc",
    "fit",
    "init_params",
    "objectives",
    "optim",
    "program",
    "reparam",
    "solvers",
    "stopping",
    "vi_layer",
]
