"""The transformation: from an objective program to an unbiased gradient estimator.

vi_ext takes the *surrogate* route (see docs/design.md): the program runs once under
handlers that draw each latent site with its strategy, and the strategies register
terms that make the reverse-mode derivative of a scalar surrogate an unbiased estimate of
the gradient of the objective's expected value,

    surrogate = F + sum_j (stop_grad(F) - b_j) * (s_j - stop_grad(s_j)),

where F is the program's value, s_j the log density of the j-th score-function site and b_j
its baseline (DiCE, Foerster et al. 2018; Storchastic, van Krieken et al. 2021). The
surrogate's value equals F, and for pathwise sites gradients flow through F itself. The cost
of one estimate is one run of the program plus one reverse pass, as for a hand-written
estimator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vi_ext.errors import ArgumentError, SiteError
from vi_ext.estimators.base import is_strategy
from vi_ext.keys import as_key
from vi_ext.program.context import Frame
from vi_ext.program.objective import Objective


def check_estimators(estimators: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a per-call ``estimators`` mapping (site name -> strategy)."""
    if estimators is None:
        return {}
    if not isinstance(estimators, Mapping):
        raise ArgumentError(
            "estimators",
            f"expected a dict site name -> strategy, got {type(estimators).__name__}.",
        )
    for name, strat in estimators.items():
        if not is_strategy(strat):
            raise SiteError(
                str(name),
                f"estimators['{name}'] = {strat!r} is not a strategy; use one of "
                "vx.estimators (reparam(), reinforce(), enum(), mvd(), ...).",
            )
    return dict(estimators)


def surrogate_fn(
    objective: Objective,
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    estimators: Mapping[str, Any] | None = None,
) -> Callable[[dict, jax.Array], tuple[jax.Array, jax.Array]]:
    """``f(params, key) -> (surrogate, value)``: differentiate ``surrogate`` w.r.t. params.

    ``value`` is the program's estimate of the objective (gradient stopped).
    """
    estimators = check_estimators(estimators)

    def evaluate(params: dict, key: jax.Array, overrides: dict):
        """(surrogate, value) of one run with ``overrides`` fixed, answering requests."""
        frame = Frame(params, key, estimators, overrides=overrides)
        with frame:
            value = objective.program(model, guide, *args, **kwargs)
        value = jnp.asarray(value)
        if value.shape != ():
            raise ArgumentError(
                "objective",
                f"the program of objective '{objective.name}' returned shape {value.shape}; "
                "it must return a scalar estimate (average particles with jnp.mean or "
                "logmeanexp).",
            )
        unknown = set(estimators) - frame.visited_sites
        if unknown:
            name = sorted(unknown)[0]
            raise SiteError(
                name,
                "a strategy was given for this site but the guide has no latent site of that "
                f"name. Guide latent sites: {sorted(frame.visited_sites)}.",
            )
        if frame.requests:
            # the first site whose strategy needs the rest of the program: its strategy
            # combines re-runs of the program with that site's value fixed
            request = frame.requests[0]
            return request.strategy.answer(
                request, lambda ov: evaluate(params, key, {**overrides, **ov})
            )
        surrogate = value
        for record in frame.records:
            surrogate = surrogate + record.surrogate_term(
                jax.lax.stop_gradient(value), frame.records
            )
        return surrogate, jax.lax.stop_gradient(value)

    def f(params: dict, key: jax.Array):
        return evaluate(params, key, {})

    return f


def value_and_grad_fn(
    objective: Objective,
    model: Callable,
    guide: Callable,
    *args: Any,
    estimators: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Callable[[dict, jax.Array], tuple[jax.Array, dict]]:
    """``f(params, key) -> (value, grads)``: the estimator that :func:`estimate` evaluates.

    Pure and jit-able; ``fit`` compiles it into its update.
    """
    sur = surrogate_fn(_as_objective(objective), model, guide, args, kwargs, estimators)

    def f(params: dict, key: jax.Array):
        (_, value), grads = jax.value_and_grad(sur, has_aux=True)(params, key)
        return value, grads

    return f


def estimate(
    objective: Objective,
    model: Callable,
    guide: Callable,
    params: Mapping[str, Any],
    *args: Any,
    key: Any = 0,
    estimators: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[jax.Array, dict]:
    """An unbiased estimate of an objective and of its gradient w.r.t. the parameters.

    E[value] = L(params) and E[grads] = dL/dparams, where L is the objective's expected
    value, for every combination of per-site strategies.

    Args:
        objective: an :class:`Objective` (e.g. ``vx.objectives.elbo()``) or its name.
        model: a NumPyro model.
        guide: a NumPyro guide for it.
        params: constrained parameter values keyed like NumPyro's param store
            (``vx.init_params`` gives initial ones).
        *args: positional arguments of model and guide.
        **kwargs: keyword arguments of model and guide (observations included).
        key: an int seed or a JAX key.
        estimators: site name -> strategy, overriding the guide's ``infer={"estimator"}``
            and the defaults.

    Returns:
        (value, grads), grads shaped like ``params``.

    Example:
        >>> params = vx.init_params(model, guide, data)
        >>> value, grads = vx.estimate(vx.objectives.elbo(), model, guide, params, data)
    """
    f = value_and_grad_fn(objective, model, guide, *args, estimators=estimators, **kwargs)
    return f(dict(params), as_key(key))


def _as_objective(objective: Any) -> Objective:
    from vi_ext.objectives import get as get_objective

    return get_objective(objective)
