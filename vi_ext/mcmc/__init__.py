"""From VI to exact inference, through BlackJAX.

- :func:`to_blackjax` (:mod:`vi_ext.mcmc.bridge`): the fitted model's log density on the
  unconstrained space, initial positions and an inverse mass matrix from the guide.
- :func:`refine` (:mod:`vi_ext.mcmc.nuts`): BlackJAX NUTS warmed by the fit.
- :func:`psis_sample` (:mod:`vi_ext.mcmc.psis`): guide draws importance-resampled with
  Pareto-smoothed weights, with k-hat.

Each is also a method of :class:`~vi_ext.result.FitResult` (``res.to_blackjax()``,
``res.refine()``, ``res.sample(correct="psis")``), boosted mixtures included.
"""

from vi_ext.mcmc.bridge import SamplingProblem, to_blackjax
from vi_ext.mcmc.nuts import RefineInfo, RefineResult, refine
from vi_ext.mcmc.psis import Draws, psis_sample, smooth

__all__ = [
    "Draws",
    "RefineInfo",
    "RefineResult",
    "SamplingProblem",
    "psis_sample",
    "refine",
    "smooth",
    "to_blackjax",
]
