"""Why a fit's steps went non-finite: the sites to blame, found after the fact.

The guarded step (:mod:`vi_ext.fit.step`) only counts rejected steps and keeps the key and
the step index of the first one of a run of rejections. When the run is too long, the loop
calls :func:`raise_nonfinite`, which re-traces the guide and the model once, outside jit,
at that step: with its key, the last good parameters and, for streamed data, that step's
minibatch. This costs nothing while things go well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from vi_ext.errors import NonFiniteError
from vi_ext.params import constrain
from vi_ext.program.sites import nonfinite_site_names
from vi_ext.traces import replayed_traces

if TYPE_CHECKING:
    from vi_ext.fit.fitter import Fitter
    from vi_ext.fit.step import FitState


def nonfinite_sites(model: Callable, guide: Callable, params: Mapping[str, Any], args: tuple,
                    kwargs: Mapping, key: jax.Array) -> tuple[str, ...]:
    """Names of guide and model sites whose log density is non-finite at (params, key),
    each with where it is: ``("x (model)", ...)``."""
    gtr, mtr = replayed_traces(model, guide, params, args, kwargs, key, validate=False)
    return tuple(f"{name} ({where})" for where, tr in (("guide", gtr), ("model", mtr))
                 for name in nonfinite_site_names(tr))


def raise_nonfinite(fitter: Fitter, state: FitState, losses: np.ndarray,
                    max_rejections: int) -> None:
    """Raise the :class:`~vi_ext.errors.NonFiniteError` for the current run of rejected
    steps of ``state``, naming the sites at fault at its first step."""
    params = constrain(state.params, fitter.constraints)
    step = int(state.run_start_step)
    sites = nonfinite_sites(fitter.model, fitter.guide, params, fitter.model_args,
                            fitter.batch_kwargs(step), state.run_start_key)
    where = (
        f" The log density was non-finite at: {', '.join(sites)}."
        if sites
        else " Every site's log density was finite there, so the gradient was at fault."
    )
    raise NonFiniteError(
        f"fit stopped after {max_rejections} consecutive steps with a non-finite loss or "
        f"gradient, starting at step {step} (of {len(losses)} run).{where} The parameters "
        "were left at their last good values (error.last_good_params, error.result). To fix: "
        "lower the learning rate, use a non-centered parameterization, tighten heavy-tailed "
        "priors, or raise max_rejections if the failures are rare.",
        step=step,
        sites=sites,
        last_good_params=params,
        result=fitter.result(state, losses, float("nan"), f"non-finite at step {step}"),
    )
