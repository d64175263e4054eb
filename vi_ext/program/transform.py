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
from typing import Any, NamedTuple

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


class Aux(NamedTuple):
    """What a surrogate returns beside itself.

    Attributes:
        value: the program's estimate of the objective (gradient stopped).
        state: the strategy state after this estimate (site-keyed; see ``reinforce``'s
            ``"average"`` baseline). Equal to the input state when no strategy keeps any.
    """

    value: jax.Array
    state: dict


#: library objectives that are not a logmeanexp of importance log weights (dreg() is invalid)
_NOT_IMPORTANCE_WEIGHTED = {"renyi", "hvi", "iwhvi", "diwhvi", "cubo", "pwake", "qwake"}


def surrogate_fn(
    objective: Objective,
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    estimators: Mapping[str, Any] | None = None,
) -> Callable[..., tuple[jax.Array, Aux]]:
    """``f(params, key, state=None) -> (surrogate, Aux(value, state))``.

    Differentiate ``surrogate`` w.r.t. params: its gradient is an unbiased estimate of the
    objective's gradient, and its value equals the program's value. ``state`` carries strategy
    state between calls (``None``: the initial state).
    """
    estimators = check_estimators(estimators)

    def evaluate(params, key, overrides, state, weights=None):
        """(surrogate, value, state updates) of one run with ``overrides`` fixed."""
        frame = Frame(params, key, estimators, overrides=overrides, state=state,
                      particle_weights=weights)
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
        if frame.local_enum_sites and objective.name != "elbo":
            name = sorted(frame.local_enum_sites)[0]
            raise SiteError(
                name,
                "local_enum() takes the expectation over this site inside log p - log q, "
                f"which is exact for the ELBO only; objective '{objective.name}' is not linear "
                "in it. Use enum() (joint enumeration), mvd() or reinforce() for this site.",
            )
        unknown = set(estimators) - frame.visited_sites
        if unknown:
            name = sorted(unknown)[0]
            raise SiteError(
                name,
                "a strategy was given for this site but the guide has no latent site of that "
                f"name. Guide latent sites: {sorted(frame.visited_sites)}.",
            )
        if frame.path_sites and weights is None:
            w = _path_weights(frame, objective)
            if w is not None:
                # second pass, same random numbers: each particle's path derivative is
                # scaled by its normalized weight
                return evaluate(params, key, overrides, state, w)
        stopped = jax.lax.stop_gradient(value)
        updates: dict = {}
        for record in frame.records:
            updates.update(record.state_update(stopped))
        if frame.requests:
            # the first site whose strategy needs the rest of the program: its strategy
            # combines re-runs of the program with that site's value fixed
            request = frame.requests[0]

            def run(ov):
                sur, val, _ = evaluate(params, key, {**overrides, **ov}, state)
                return sur, val

            surrogate, value = request.strategy.answer(request, run)
            return surrogate, value, updates
        surrogate = value
        for record in frame.records:
            surrogate = surrogate + record.surrogate_term(stopped, frame.records)
        return surrogate, stopped, updates

    def f(params: dict, key: jax.Array, state: Mapping[str, Any] | None = None):
        state = dict(state or {})
        surrogate, value, updates = evaluate(params, key, {}, state)
        return surrogate, Aux(value, {**state, **updates})

    return f


def initial_state(surrogate: Callable, params: dict, key: jax.Array) -> dict:
    """The initial strategy state of ``surrogate`` (zeros shaped like its updates)."""
    shapes = jax.eval_shape(lambda p, k: surrogate(p, k)[1].state, params, key)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _path_weights(frame: Frame, objective: Objective) -> jax.Array | None:
    """Check the stl()/dreg() sites of a run; the particle weights dreg() needs, if any.

    Both hold log q's parameters constant, which is unbiased only where the program's value is
    the mean (stl, dreg) or the logmeanexp (dreg, with reweighting) of importance log weights.
    """
    from vi_ext.program.records import LogMeanExpRecord

    name, (kind, depth) = sorted(frame.path_sites.items())[0]
    if objective.name in _NOT_IMPORTANCE_WEIGHTED:
        raise SiteError(
            name,
            f"{kind}() holds log q's parameters constant, which is unbiased for the ELBO and "
            f"importance-weighted bounds (iwae) only; objective '{objective.name}' is neither. "
            "Use reparam() for this site.",
        )
    top = [r for r in frame.records if isinstance(r, LogMeanExpRecord) and r.x.ndim == 1]
    in_particles = {s: d for s, (_, d) in frame.path_sites.items() if d >= 1}
    stl_inside = [s for s, (k, d) in frame.path_sites.items() if k == "stl" and d >= 1]
    if top and stl_inside:
        raise SiteError(
            stl_inside[0],
            "stl() is biased under a logmeanexp of particles (the IWAE family): the score "
            "term it drops no longer has mean zero (Tucker et al., 2019). Use dreg() for this "
            "site, which is unbiased there.",
        )
    deep = [s for s, d in in_particles.items() if d > 1]
    if deep:
        raise SiteError(
            deep[0],
            f"{frame.path_sites[deep[0]][0]}() needs the site to be drawn in the top-level "
            "particles of the objective; here it is drawn inside nested particles. Use "
            "reparam() for this site.",
        )
    dreg_inside = [s for s, (k, d) in frame.path_sites.items() if k == "dreg" and d == 1]
    if not dreg_inside or not top:
        return None  # no reweighting: dreg() is stl() (a plain mean of particles, or none)
    if frame.num_particle_calls != 1 or len(top) != 1:
        raise SiteError(
            dreg_inside[0],
            "dreg() needs a program that draws its particles with one "
            "vx.program.particles call and returns logmeanexp of their log weights (as "
            "iwae() does); this program has "
            f"{frame.num_particle_calls} particles call(s) and {len(top)} logmeanexp(s) at top "
            "level. Use reparam() for this site.",
        )
    return jax.nn.softmax(jax.lax.stop_gradient(top[0].x))


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
        (_, aux), grads = jax.value_and_grad(sur, has_aux=True)(params, key)
        return aux.value, grads

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
