"""Guide traces, the model replayed on them, and the latent sites a model has.

Everything that looks at a fitted guide outside the compiled step does the same few things:
run the guide at the fitted parameters, run the model at the guide's latent values (NumPyro's
``replay``, as ``Trace_ELBO`` does), read the sites of the traces, and refuse a discrete
latent that the method at hand cannot take. They live here, once:

- :class:`Fitted`: what a fitted guide is (model, guide, params and the model's arguments);
  :class:`~vi_ext.result.FitResult` is one, and the diagnostics and the BlackJAX bridge take
  any of them.
- :func:`guide_trace`, :func:`replayed_traces`: one seeded run of the guide, and of the
  model replayed on it.
- :func:`latent_values`, :func:`site_names`, :func:`enumerated_sites`: what the traces hold.
- :func:`refuse_discrete`: the one discrete-latent check, with the caller's advice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import numpyro
from numpyro import handlers

from vi_ext.errors import SiteError
from vi_ext.program.enumerate import is_enumerated
from vi_ext.program.sites import sample_sites


@runtime_checkable
class Fitted(Protocol):
    """A guide with its fitted parameters, for a model and its arguments.

    Attributes:
        model, guide: NumPyro callables.
        params: constrained parameter values, keyed like NumPyro's param store.
        model_args, model_kwargs: the arguments both are called with.
    """

    model: Callable
    guide: Callable
    params: Mapping[str, Any]
    model_args: tuple
    model_kwargs: Mapping[str, Any]


def _validation(validate: bool | None):
    return contextlib.nullcontext() if validate is None else numpyro.validation_enabled(validate)


def guide_trace(guide: Callable, params: Mapping[str, Any], args: tuple, kwargs: Mapping,
                key: jax.Array, *, validate: bool | None = None) -> dict:
    """One run of ``guide`` at ``params`` under ``key``: its NumPyro trace.

    ``validate=False`` turns NumPyro's argument validation off (a diagnosis must be able to
    run where a distribution's parameters are already non-finite); None leaves NumPyro's
    setting as it is."""
    g = handlers.seed(handlers.substitute(guide, data=dict(params)), key)
    with _validation(validate):
        return handlers.trace(g).get_trace(*args, **kwargs)


def latent_values(trace: Mapping[str, dict]) -> dict:
    """{site: value} of the latent (unobserved) sample sites of a trace."""
    return {s["name"]: s["value"] for s in sample_sites(trace, observed=False)}


def replayed_traces(model: Callable, guide: Callable, params: Mapping[str, Any], args: tuple,
                    kwargs: Mapping, key: jax.Array, *,
                    validate: bool | None = None) -> tuple[dict, dict]:
    """(guide trace, model trace): the guide run once at ``params``, then the model run at
    the guide's latent values (``handlers.replay``), each under its own half of ``key``.

    Model sites the guide does not sample (sites summed out by enumeration, say) are drawn
    from the model."""
    k_guide, k_model = jax.random.split(key)
    gtr = guide_trace(guide, params, args, kwargs, k_guide, validate=validate)
    m = handlers.seed(handlers.replay(handlers.substitute(model, data=dict(params)), gtr),
                      k_model)
    with _validation(validate):
        mtr = handlers.trace(m).get_trace(*args, **kwargs)
    return gtr, mtr


def site_names(model_trace: Mapping[str, dict]) -> list[str]:
    """A model trace's latent and deterministic sites, in execution order."""
    return [n for n, s in model_trace.items()
            if (s["type"] == "sample" and not s.get("is_observed"))
            or s["type"] == "deterministic"]


def enumerated_sites(guide_trace: Mapping[str, dict], model_trace: Mapping[str, dict]) -> list:
    """Model sites marked for enumeration that the guide does not sample."""
    return [n for n, s in model_trace.items() if is_enumerated(s) and n not in guide_trace]


def prior_trace(model: Callable, args: tuple, kwargs: Mapping, key: jax.Array) -> dict:
    """One run of the model from its prior, argument validation off (a heavy-tailed prior's
    draw may overflow a downstream parameter; only the sites' kinds are read from it)."""
    with numpyro.validation_enabled(False):
        return handlers.trace(handlers.seed(model, key)).get_trace(*args, **kwargs)


def refuse_discrete(trace: Mapping[str, dict], advice: str | Callable[[dict], str], *,
                    allow_enumerated: bool = False) -> list[str]:
    """Raise a :class:`~vi_ext.errors.SiteError` naming the first discrete latent site of
    ``trace``; return the names of the enumerated ones when ``allow_enumerated``.

    Args:
        trace: a model trace (e.g. from :func:`prior_trace`).
        advice: what the caller cannot do with a discrete site, and what the user should do
            instead; a function of the site for advice that names it.
        allow_enumerated: sites marked ``infer={"enumerate": "parallel"}`` whose
            distribution has a finite support pass (they are summed out of the model's
            density); a marked site without one is refused.
    """
    enumerated = []
    for site in sample_sites(trace, observed=False):
        fn = site["fn"]
        if not getattr(fn.support, "is_discrete", False):
            continue
        if allow_enumerated and is_enumerated(site) and fn.has_enumerate_support:
            enumerated.append(site["name"])
            continue
        text = advice(site) if callable(advice) else advice
        raise SiteError(site["name"], f"is a discrete latent ({type(fn).__name__}); {text}")
    return enumerated
