"""Boosting variational inference: mixture guides grown by Frank-Wolfe.

    res = vx.boosting.boost(model, *args, num_components=10, step_size="adaptive", **kwargs)
    res.sample(1000); res.elbo(); res.history

- :mod:`vi_ext.boosting.mixture`: mixtures of a component family (diagonal or full-rank
  Gaussians, Laplace, or any reparameterizable :class:`Family`): exact log density,
  sampling, L2 distances (closed form for Gaussians, Monte Carlo in log space otherwise).
- :mod:`vi_ext.boosting.target`: a NumPyro model as a log density on a flat unconstrained
  space.
- :mod:`vi_ext.boosting.frank_wolfe`: the boosting loop and its step-size rules, including
  the local-curvature approximate backtracking of Dresdner et al. (IJCAI 2021).
"""

from vi_ext.boosting import mixture, target
from vi_ext.boosting.frank_wolfe import (
    STEP_SIZES,
    BoostedMixture,
    BoostResult,
    Settings,
    boost,
)
from vi_ext.boosting.guide import AutoMixture
from vi_ext.boosting.mixture import Family, Mixture, diag_normal, full_normal, laplace

__all__ = ["STEP_SIZES", "AutoMixture", "BoostResult", "BoostedMixture", "Family", "Mixture",
           "Settings", "boost", "diag_normal", "full_normal", "laplace", "mixture", "target"]
