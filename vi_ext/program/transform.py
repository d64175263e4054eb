"""The transformation: from an objective program to an unbiased gradient estimator.

vi_ext takes the *surrogate* route (see docs/design.md): the program runs under handlers that
draw each latent site with its strategy, and the strategies contribute terms that make the
reverse-mode derivative of a scalar surrogate an unbiased estimate of the gradient of the
program's expected value,

    surrogate = F + sum_j contribution_j,

where F is the program's value and contribution_j what the strategy of draw j adds (for a
score-function draw, sum_n (stop_grad(signal_jn) - b_jn) (s_jn - stop_grad(s_jn)) with s_jn
its log density at position n and signal_jn the part of F downstream of it: DiCE, Foerster et
al. 2018; Storchastic, van Krieken et al. 2021; Rao-Blackwellized by the program's structure
as in Schulman et al. 2015). The surrogate's value equals F; pathwise draws carry their
gradient through F itself.

The core knows no particular strategy or objective. One estimate goes as follows:

1. Run the program once. Every draw records what its strategy asked for (its
   :class:`~vi_ext.estimators.base.Draw`).
2. If a draw asked for the rest of the program (``continuation``), its strategy answers with
   re-runs in which that draw, by address, is pinned (the first such draw; re-runs answer the
   next ones). Done.
3. If a strategy contributes terms, stage the program (:mod:`vi_ext.program.structure`) to
   learn its structure; when a draw asked for a learning signal, run it once more as a
   function of zero perturbations of its terms, whose cotangents are the coefficients a_t
   of F in its terms (one extra backward pass over the linear combination only).
4. Each strategy contributes (:class:`~vi_ext.program.view.DrawView`): surrogate terms, a
   state update, or a rescaling of a ``sim`` call's pathwise derivative, in which case the
   program runs once more with the same random numbers and that rescaling (DReG). Validity
   is each strategy's own decision, from the structure, with a named refusal.

The cost of one estimate is one run of the program plus one reverse pass for pathwise,
enumerated and integrated draws, as for a hand-written estimator; score-function draws add a
backward pass over the linear part of the program; staging happens at trace time only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vi_ext.errors import ArgumentError, SiteError
from vi_ext.estimators.base import Contribution, is_strategy
from vi_ext.keys import as_key
from vi_ext.program.context import Frame
from vi_ext.program.objective import Objective
from vi_ext.program.objective import get as get_objective
from vi_ext.program.records import DrawRecord, LogMeanExpRecord, TermRecord
from vi_ext.program.structure import analyse
from vi_ext.program.view import DrawView, Evaluation

sg = jax.lax.stop_gradient


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
        state: the strategy state after this estimate (string-keyed; see ``reinforce``'s
            ``"average"`` baseline). Equal to the input state when no strategy keeps any.
    """

    value: jax.Array
    state: dict


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
    objective = _as_objective(objective)

    def run(params, key, overrides, state, inputs, mode="run"):
        """One run of the program: (value, frame)."""
        frame = Frame(params, key, estimators, overrides=overrides, inputs=inputs,
                      state=state, mode=mode)
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
        return value, frame

    def structure_of(params, key, overrides, state, inputs):
        return analyse(lambda p, k, o, i: run(p, k, o, state, i, "analysis")[0],
                       params, key, overrides, inputs)

    def evaluate(params, key, overrides, state, scales=None):
        """(surrogate, value, state updates) of one estimate with ``overrides`` pinned."""
        inputs = dict(scales or {})

        def run_with_perturbations(structure):
            """Run as a function of zero perturbations of the terms: their cotangents are
            the coefficients a_t = dF/dt (one backward pass over the linear part)."""
            deltas = {label: jnp.zeros(structure.avals[label].shape,
                                       structure.avals[label].dtype)
                      for label in structure.terms}
            holder = {}

            def with_deltas(d):
                v, fr = run(params, key, overrides, state, {**inputs, **d})
                holder["info"] = fr.info
                return v, fr.records

            v, pullback, recs = jax.vjp(with_deltas, deltas, has_aux=True)
            (coefs,) = pullback(jnp.ones_like(v))
            return v, recs, holder["info"], coefs

        value, frame = run(params, key, overrides, state, inputs)
        info = frame.info
        unknown = set(estimators) - info.visited_sites
        if unknown:
            name = sorted(unknown)[0]
            raise SiteError(
                name,
                "a strategy was given for this site but the guide has no latent site of that "
                f"name. Guide latent sites: {sorted(info.visited_sites)}.",
            )
        free = {a: i for a, i in info.draws.items() if not i.pinned}
        records = frame.records

        # 2. the first draw that needs the rest of the program
        waiting = [a for a, i in free.items() if i.draw.continuation]
        if waiting:
            address = waiting[0]
            dinfo = free[address]
            if dinfo.path:
                raise SiteError(
                    dinfo.site.name,
                    f"{dinfo.strategy.name}() re-runs the rest of the program for this draw "
                    f"(at {'/'.join(address)}), which is not supported inside "
                    "vx.program.particles (the joint re-runs grow exponentially with the "
                    "number of particles). Use it outside particles (e.g. with "
                    "vx.objectives.elbo()), or a strategy that does not re-run the program "
                    "(reinforce(), local_enum()) here.",
                )
            ev = _evaluation(value, info, None, records, None, state)

            def rerun(pinned):
                sur, val, _ = evaluate(params, key, {**overrides, **pinned}, state)
                return sur, val

            surrogate, value = dinfo.strategy.answer(DrawView(address, ev), rerun)
            return surrogate, sg(value), {}

        # 3. strategies that contribute: the program's structure, and signals if asked
        contributing = [a for a, i in free.items()
                        if callable(getattr(i.strategy, "contribute", None))]
        if not contributing:
            return value, sg(value), {}
        structure = structure_of(params, key, overrides, state, inputs)
        coefficients = None
        if any(free[a].draw.signal for a in contributing):
            static = {label: structure.coefficient(label) for label in structure.terms}
            if all(c is not None for c in static.values()):
                # the coefficients are numbers known from the structure: no second run
                coefficients = {label: jnp.asarray(c, structure.avals[label].dtype)
                                for label, c in static.items()}
            else:
                value, records, info, coefficients = run_with_perturbations(structure)
        ev = _evaluation(value, info, structure, records, coefficients, state)

        # 4. contributions
        surrogate, updates, path_scales = value, {}, {}
        for address in contributing:
            dinfo = info.draws[address]
            c = dinfo.strategy.contribute(DrawView(address, ev))
            if c is None:
                continue
            if not isinstance(c, Contribution):
                raise TypeError(f"{dinfo.strategy.name}.contribute() must return a "
                                f"vx.estimators.Contribution, got {type(c).__name__}")
            surrogate = surrogate + jnp.asarray(c.surrogate)
            updates.update(c.state)
            if c.path_scale is not None:
                path_scales[("scale", dinfo.sim)] = sg(c.path_scale)
        if path_scales and scales is None:
            # the same random numbers, each sim call's pathwise derivative rescaled
            return evaluate(params, key, overrides, state, path_scales)
        return surrogate, sg(value), updates

    def f(params: dict, key: jax.Array, state: Mapping[str, Any] | None = None):
        state = dict(state or {})
        surrogate, value, updates = evaluate(params, key, {}, state)
        return surrogate, Aux(value, {**state, **updates})

    return f


def _evaluation(value, info, structure, records, coefficients, state) -> Evaluation:
    draws, terms, lmes = {}, {}, {}
    for r in records:
        if isinstance(r, DrawRecord):
            draws[r.address] = r
        elif isinstance(r, TermRecord):
            terms[r.label] = r.value
        elif isinstance(r, LogMeanExpRecord):
            lmes[r.address] = r.x
    return Evaluation(value, info, structure, draws, terms, lmes, coefficients, state)


def initial_state(surrogate: Callable, params: dict, key: jax.Array) -> dict:
    """The initial strategy state of ``surrogate`` (zeros shaped like its updates)."""
    shapes = jax.eval_shape(lambda p, k: surrogate(p, k)[1].state, params, key)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


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
    value, for every combination of per-site strategies that the program's structure admits
    (the others are refused with an error naming the site, the strategy and the reason).

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
    return get_objective(objective)
