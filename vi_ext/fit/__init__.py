"""Fitting a guide: three rooms, each importing only those below it.

- :mod:`vi_ext.fit.step`: the pure guarded step (:class:`FitState`, :func:`make_step`,
  :func:`all_finite`), a function ``(state, xs) -> (state, loss)`` for ``lax.scan``; boosting's
  component fits scan it too.
- :mod:`vi_ext.fit.config` and :mod:`vi_ext.fit.fitter`: setup. :class:`FitConfig` holds every
  option once; :func:`build` resolves them into a :class:`Fitter` (initial state, the
  compiled chunk, the resolved guide and objective).
- :mod:`vi_ext.fit.loop`: the loop (:func:`fit`): chunks, resume, progress, checkpoint
  cadence, callbacks, the result; :mod:`vi_ext.fit.diagnosis` names the sites of a run of
  non-finite steps.
- :mod:`vi_ext.fit.layer`: a whole fit as a differentiable layer (:func:`vi_layer`), by
  implicit differentiation of its stationarity condition (it uses :mod:`vi_ext.solvers`).

A guide that runs its own fit (``vx.boosting.BoostedMixture``) reaches :func:`fit` through
the small :class:`FitsItself` protocol; fit itself knows nothing of boosting.
"""

from vi_ext.fit.config import FitConfig, FitsItself
from vi_ext.fit.diagnosis import nonfinite_sites
from vi_ext.fit.fitter import Fitter, build, default_guide
from vi_ext.fit.layer import VIOptimum, vi_layer
from vi_ext.fit.loop import fit, run
from vi_ext.fit.step import FitState, all_finite, init_state, make_step

__all__ = ["FitConfig", "FitState", "Fitter", "FitsItself", "VIOptimum", "all_finite", "build",
           "default_guide", "fit", "init_state", "make_step", "nonfinite_sites", "run",
           "vi_layer"]
