"""The parameter store: initial values of ``numpyro.param`` sites and their constraints.

Optimizers work on unconstrained values u; programs see constrained values
theta = T_c(u), with T_c = ``numpyro.distributions.transforms.biject_to(c)`` for the site's
constraint c (the same convention as NumPyro's SVI).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpyro
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from vi_ext.keys import as_key


def param_sites(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    key: Any = 0,
    estimators: Mapping[str, Any] | None = None,
) -> tuple[dict[str, jax.Array], dict[str, Any]]:
    """Initial constrained values and constraints of every param site of guide and model.

    The guide runs first, with each latent site drawn by its strategy (autoguides set
    themselves up on that call, and params that strategies own, such as a learned baseline's,
    are found); the model then runs with the guide's latent values substituted, as NumPyro's
    ``SVI.init`` does.

    Returns:
        (values, constraints), both keyed by param name.
    """
    from vi_ext.program.context import Frame
    from vi_ext.program.primitives import StrategyMessenger

    k_guide, k_model, k_frame = jax.random.split(as_key(key), 3)
    # (autoguides trace the model from its prior to set themselves up; the guide's first
    # draw may sit where the model's density is undefined, NaN: that is the step guard's
    # business, not an initialization error, so argument validation is off here)
    try:
        with Frame({}, k_frame, dict(estimators or {})) as frame, \
                numpyro.validation_enabled(False):
            guide_fn = handlers.seed(StrategyMessenger(guide, frame, lenient=True), k_guide)
            guide_trace = handlers.trace(guide_fn).get_trace(*args, **kwargs)
    except RuntimeError as e:
        if "Cannot find valid initial parameters" not in str(e):
            raise
        raise _no_valid_start(model, args, kwargs, k_model) from e
    latents = {
        n: s["value"]
        for n, s in guide_trace.items()
        if s["type"] == "sample" and not s.get("is_observed")
    }
    model_fn = handlers.substitute(handlers.seed(model, k_model), data=latents)
    with numpyro.validation_enabled(False):
        model_trace = handlers.trace(model_fn).get_trace(*args, **kwargs)
    values, cons = {}, {}
    for tr in (guide_trace, model_trace):
        for name, site in tr.items():
            if site["type"] == "param" and name not in values:
                values[name] = site["value"]
                cons[name] = site["kwargs"].get("constraint", constraints.real)
    return values, cons


def init_params(
    model: Callable,
    guide: Callable,
    *args: Any,
    key: Any = 0,
    estimators: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict:
    """Initial constrained parameters of guide and model, keyed like NumPyro's param store.

    Use it to call :func:`vi_ext.estimate` directly::

        params = vx.init_params(model, guide, *args, key=0, **kwargs)
        value, grads = vx.estimate(vx.objectives.elbo(), model, guide, params, *args)
    """
    return param_sites(model, guide, args, kwargs, key, estimators)[0]


def constrain(unconstrained: Mapping[str, jax.Array], cons: Mapping[str, Any]) -> dict:
    """theta = T_c(u) for every param."""
    return {n: biject_to(cons[n])(u) for n, u in unconstrained.items()}


def unconstrain(values: Mapping[str, jax.Array], cons: Mapping[str, Any]) -> dict:
    """u = T_c^{-1}(theta) for every param."""
    return {n: biject_to(cons[n]).inv(v) for n, v in values.items()}


def _no_valid_start(model: Callable, args: tuple, kwargs: dict, key: jax.Array) -> Exception:
    """The error for an autoguide that found no finite starting point: name the sites whose
    log density is non-finite at a draw from the prior."""
    from vi_ext.errors import ArgumentError, SiteError
    from vi_ext.program.sites import nonfinite_site_names

    with numpyro.validation_enabled(False):
        trace = handlers.trace(handlers.seed(model, key)).get_trace(*args, **kwargs)
    bad = nonfinite_site_names(trace)
    advice = ("the autoguide (AutoNormal) tried initial points drawn from the prior and the "
              "model's log density was non-finite at every one. Check that site's "
              "distribution parameters (a negative scale, a log of a negative number) and "
              "its support, or pass init_params= / a guide of your own.")
    if bad:
        return SiteError(bad[0], f"{advice} At a prior draw, the log density is non-finite "
                                 f"at: {', '.join(bad)}.")
    return ArgumentError("model", advice)
