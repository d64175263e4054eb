"""Boosting variational inference: mixture guides grown by Frank-Wolfe.

    res = vx.boosting.boost(model, *args, num_components=10, step_size="adaptive", **kwargs)
    res.sample(1000); res.elbo(); res.guide.weights; res.history

The result is a :class:`~vi_ext.result.FitResult` whose guide is the mixture.

- :mod:`vi_ext.boosting.mixture`: mixtures of a component family (diagonal or full-rank
  Gaussians, Laplace, or any reparameterizable :class:`Family`): exact log density,
  sampling, L2 distances (closed form for Gaussians, Monte Carlo in log space otherwise).
- :mod:`vi_ext.boosting.oracle`: the next component (a RELBO fit with fit's guarded step).
- :mod:`vi_ext.boosting.moves` and :mod:`vi_ext.boosting.away`: Frank-Wolfe, away and
  pairwise directions with their common-random-number estimates.
- :mod:`vi_ext.boosting.steps`: the step-size rules as objects (fixed, line search, global
  curvature, and the local-curvature approximate backtracking of Dresdner et al., IJCAI
  2021), one protocol.
- :mod:`vi_ext.boosting.frank_wolfe`: the loop, and :class:`BoostedMixture` for
  ``vx.fit(model, guide=BoostedMixture(...))``.
- :mod:`vi_ext.boosting.guide`: the mixture as a NumPyro autoguide (:class:`AutoMixture`).
"""

from vi_ext.boosting import mixture, steps, target
from vi_ext.boosting.frank_wolfe import VARIANTS, BoostedMixture, boost
from vi_ext.boosting.guide import AutoMixture
from vi_ext.boosting.mixture import Family, Mixture, diag_normal, full_normal, laplace
from vi_ext.boosting.settings import Settings
from vi_ext.boosting.steps import (
    STEP_SIZES,
    Adaptive,
    Fixed,
    GlobalCurvature,
    Line,
    LineSearch,
    Step,
    StepRule,
)
from vi_ext.result import FitResult

__all__ = ["STEP_SIZES", "VARIANTS", "Adaptive", "AutoMixture", "BoostedMixture", "Family",
           "Fixed", "GlobalCurvature", "Line", "LineSearch", "Mixture", "Settings", "Step",
           "StepRule", "boost", "diag_normal", "full_normal", "laplace", "mixture", "steps",
           "target"]


def __getattr__(name: str):
    # boosting returned a BoostResult of its own until 0.1
    if name == "BoostResult":
        import warnings

        warnings.warn("vx.boosting.BoostResult is gone: boost() returns a vx.FitResult whose "
                      "guide is the mixture (res.guide.mixture, res.guide.weights).",
                      DeprecationWarning, stacklevel=2)
        return FitResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
