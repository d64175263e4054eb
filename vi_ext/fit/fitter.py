"""Setup of a fit: resolve the inputs, initialize the parameters, and build the compiled
chunk that the loop (:mod:`vi_ext.fit.loop`) calls.

:func:`build` returns a :class:`Fitter`: the initial :class:`~vi_ext.fit.step.FitState`,
``run_chunk`` (one jit-compiled ``lax.scan`` of the guarded step over a chunk of steps, the
last chunk padded with inactive steps so that one program serves every chunk), the
resolved guide, objective and strategies, and, for streamed data, the dataset. Nothing is
compiled until ``run_chunk`` is first called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from numpyro import handlers
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from numpyro.infer.initialization import init_to_median

from vi_ext.checkpoint import read as read_checkpoint
from vi_ext.data import Dataset, StreamPlates, as_dataset, check_scaled
from vi_ext.errors import ArgumentError
from vi_ext.fit.config import FitConfig, signature_with_options
from vi_ext.fit.forms import entrants, race, race_sites, race_steps, resumed
from vi_ext.fit.plan import Plan
from vi_ext.fit.step import FitState, init_state, make_step
from vi_ext.keys import as_key
from vi_ext.optim import averaged_params, plateau_adam
from vi_ext.params import constrain, param_sites, unconstrain
from vi_ext.program.objective import Objective
from vi_ext.program.sites import sample_sites
from vi_ext.program.transform import check_estimators, initial_state, surrogate_fn
from vi_ext.reparam import noncentered
from vi_ext.result import FitResult
from vi_ext.sharding import (
    batch_sharding,
    check_batch_size,
    particles_on,
    replicated,
    resolve_mesh,
)
from vi_ext.start import Start, choose_start_for
from vi_ext.traces import prior_trace, refuse_discrete


class Fitter(NamedTuple):
    """A compiled fit, before the loop: what :func:`vi_ext.fit` runs, exposed for reuse.

    Attributes:
        init_state: the :class:`FitState` at step 0 (replicated over ``mesh``, if any).
        run_chunk: jit-compiled ``(state, active) -> (state, losses)``, or with streamed
            data ``(state, active, batches) -> (state, losses)`` with ``batches`` stacked
            ``[len(active), B, ...]``; runs ``len(active)`` steps in one ``lax.scan`` (steps
            with ``active=False`` change nothing).
        loss_and_grad: ``(u, key, strategy_state[, batch]) -> (loss, grads,
            strategy_state)`` on unconstrained params, not jitted.
        guide, objective, constraints, estimators, rules: the resolved inputs.
        dataset: the streamed :class:`~vi_ext.data.Dataset` (None: no data= argument).
        mesh: the device mesh (None: one device).
        model: the model as the loop runs it (with streamed data: under
            :class:`~vi_ext.data.StreamPlates`).
        first_batch: the first minibatch (model keyword arguments), or an empty dict.
        model_args, model_kwargs: the model's own arguments (without a minibatch).
        start: where the default guide started and why (a :class:`~vi_ext.start.Start`);
            None for a guide of your own or the prior-median start.
        init_for: ``params -> FitState``: the state at step 0 with the named params
            (constrained values) in place of the initial ones; ``run_chunk`` runs it as it
            is (the race of starts, :mod:`vi_ext.fit.forms`, uses it).
    """

    init_state: FitState
    run_chunk: Callable[[FitState, jax.Array], tuple[FitState, jax.Array]]
    loss_and_grad: Callable[[dict, jax.Array, dict], tuple[jax.Array, dict, dict]]
    guide: Callable
    objective: Objective
    constraints: dict
    estimators: dict
    rules: tuple = ()
    dataset: Dataset | None = None
    mesh: Mesh | None = None
    model: Callable | None = None
    first_batch: dict = {}
    model_args: tuple = ()
    model_kwargs: dict = {}
    start: Start | None = None
    init_for: Callable[[dict], FitState] | None = None

    def batch_kwargs(self, step: int | None = None) -> dict:
        """The model's keyword arguments at ``step``: with streamed data, its own plus the
        minibatch of that step (the first one when ``step`` is None)."""
        if self.dataset is None:
            return dict(self.model_kwargs)
        batch = self.first_batch if step is None else {
            k: jnp.asarray(v) for k, v in self.dataset.batch(int(step)).items()}
        return {**self.model_kwargs, **batch}

    def result(self, state: FitState, losses: np.ndarray, seconds: float = float("nan"),
               stop_reason: str = "num_steps") -> FitResult:
        """The :class:`~vi_ext.result.FitResult` at ``state``. Diagnostics of a streamed
        fit run on its first minibatch (scaled by N / B). An optimizer that averages its
        iterates (:func:`vi_ext.optim.averaged`, :func:`vi_ext.optim.plateau`) gives the
        average as ``params``; ``state.params`` keeps the last iterate."""
        average = averaged_params(state.opt_state)
        return FitResult(
            model=self.model,
            guide=self.guide,
            params=constrain(state.params if average is None else average, self.constraints),
            losses=np.array(losses),
            state=state,
            objective=self.objective,
            model_args=self.model_args,
            model_kwargs=self.batch_kwargs(),
            estimators=self.estimators,
            constraints=self.constraints,
            seconds=seconds,
            stop_reason=stop_reason,
            start=self.start,
        )


_AUTONORMAL_ADVICE = (
    "the default guide (a Gaussian on the unconstrained latents: AutoMultivariateNormal, "
    "or AutoNormal beyond 250 dimensions) cannot represent it. Either marginalize it out of the "
    "model (or mark it infer={{'enumerate': 'parallel'}}), or pass a guide that samples it "
    "and choose a gradient strategy for it, e.g. guide=my_guide, "
    "estimators={{'{name}': vx.estimators.enum()}} (or reinforce()).")


#: the share of a fit's gradient evaluations (num_steps x particles) its start may spend
START_SHARE = 0.1
#: SAA steps of the start at most (the default fit's budget affords them) and at least (with
#: fewer, the SAA candidates are left out: the start chooses between the prior medians and
#: the uniform start)
MAX_SAA_STEPS, MIN_SAA_STEPS = 300, 25

#: the full-rank default guide starts no wider than this (NumPyro's init_scale)
FULL_RANK_INIT_SCALE = 0.1

#: latent dimensions up to which the default guide is a full-rank Gaussian
#: (AutoMultivariateNormal); beyond, a mean-field one (AutoNormal)
MAX_FULL_RANK = 250


class DefaultGuide(NamedTuple):
    """The default guide and how it was started (:func:`default_guide`)."""

    guide: Callable
    start: Start | None  # the chosen start; None: the prior medians, not chosen
    init_params: dict    # the guide's params at the start (constrained)
    params_for: Callable[[Start], dict] | None = None  # the guide's params at another start


def start_options(budget: int | None, saa_draws: int = 8) -> dict:
    """``choose_start``'s options for a fit of ``budget`` gradient evaluations: its SAA runs
    (two, of ``saa_draws`` draws a step) spend at most :data:`START_SHARE` of it, and are
    left out below :data:`MIN_SAA_STEPS` steps. None: no bound (300 steps)."""
    steps = MAX_SAA_STEPS if budget is None else \
        min(MAX_SAA_STEPS, int(START_SHARE * budget) // (2 * saa_draws))
    if steps < MIN_SAA_STEPS:
        return {"candidates": ("median", "uniform")}
    return {"saa_steps": steps, "saa_draws": saa_draws}


def default_guide(model: Callable, args: tuple, kwargs: dict, key: jax.Array,
                  start: Any = "auto", start_key: Any = None,
                  budget: int | None = None, trace: dict | None = None) -> DefaultGuide:
    """The guide of ``fit(model)``: a Gaussian on the unconstrained latents, full-rank
    (``AutoMultivariateNormal``) up to :data:`MAX_FULL_RANK` dimensions, mean-field
    (``AutoNormal``) beyond, started where ``start`` says:

    - ``"auto"``: the best of several candidate starts by a cheap ELBO estimate
      (:func:`vi_ext.start.choose_start`: the prior medians, NumPyro's uniform start, and a
      short sample-average ELBO fit from each), locations and, for the mean-field guide,
      scales. The fits spend at most a tenth of ``budget``, the fit's gradient evaluations
      (:func:`start_options`): all 300 steps for the default fit, fewer for a short one, none
      below 25;
    - ``"median"``: the prior medians (``init_to_median``), scales 0.1, nothing chosen;
    - a :class:`~vi_ext.start.Start`: that one.

    Sites that the model's density sums out (marked for enumeration) are hidden from the
    guide (and the start is the prior medians: the candidates' ELBO needs every latent
    continuous); any other discrete latent is refused by name. ``trace``: the model's prior
    trace at ``key``, if the caller has it.
    """
    if trace is None:
        trace = prior_trace(model, args, kwargs, key)
    enumerated = refuse_discrete(trace,
                                 lambda site: _AUTONORMAL_ADVICE.format(name=site["name"]),
                                 allow_enumerated=True)
    seen = handlers.block(model, hide=enumerated) if enumerated else model
    # the guide's latents, in the order the model samples them (the flat layout of
    # AutoMultivariateNormal), and whether they are few enough for a full-rank guide
    order = [s["name"] for s in sample_sites(trace, observed=False)
             if s["name"] not in enumerated]
    full = sum(int(np.size(trace[n]["value"])) for n in order) <= MAX_FULL_RANK
    if isinstance(start, str) and start == "auto" and not enumerated:
        start = choose_start_for(model, args, kwargs,
                                 key=key if start_key is None else start_key,
                                 **start_options(budget))
    if not isinstance(start, Start):
        init = init_to_median(num_samples=15)
        guide = AutoMultivariateNormal(seen, init_loc_fn=init) if full else \
            AutoNormal(seen, init_loc_fn=init)
        return DefaultGuide(guide, None, {})
    if full:
        def params_for(s: Start) -> dict:
            # the candidate's locations and scales (a diagonal scale_tril), in that order
            loc = jnp.concatenate([jnp.ravel(s.locs[n]) for n in order])
            scale = jnp.minimum(jnp.concatenate([jnp.ravel(s.scales[n]) for n in order]),
                                FULL_RANK_INIT_SCALE)
            return {"auto_loc": loc, "auto_scale_tril": jnp.diag(scale)}

        guide = AutoMultivariateNormal(seen, init_loc_fn=start.init_loc_fn())
    else:
        def params_for(s: Start) -> dict:
            return s.autonormal_params()

        guide = AutoNormal(seen, init_loc_fn=start.init_loc_fn())
    return DefaultGuide(guide, start, params_for(start), params_for)


#: the options of fit's loop (vi_ext.fit.loop); build() refuses them by name
LOOP_OPTIONS = frozenset({"progress", "max_rejections", "chunk_size", "callbacks",
                          "callback_every", "checkpoint", "checkpoint_every", "resume"})


def build(model: Callable, *model_args: Any, config: FitConfig | None = None,
          **kwargs: Any) -> Fitter:
    """Resolve fit's inputs, initialize parameters, and build the compiled step function.

    Arguments are those of :func:`vi_ext.fit` (options by name or as ``config=``);
    ``num_steps`` only bounds what the default guide's start may spend
    (:func:`start_options`); the loop's options (progress, callbacks,
    checkpoints, ...) are refused by name, since build runs no loop. Nothing is compiled
    until ``run_chunk`` is first called.

    Example:
        >>> fitter = build(model, y=y, key=0)
        >>> state, losses = fitter.run_chunk(fitter.init_state, jnp.ones(100, bool))
    """
    config, model_kwargs = FitConfig.split({"config": config, **kwargs})
    for name in config.set_options():
        if name in LOOP_OPTIONS:
            raise ArgumentError(name, "is an option of the loop, which build() does not run: "
                                "pass it to vx.fit, or run the Fitter's chunks yourself.")
    return build_from(model, model_args, model_kwargs, config.check())


build.__signature__ = signature_with_options(build)


def build_from(model: Callable, model_args: tuple, model_kwargs: dict,
               config: FitConfig) -> Fitter:
    """:func:`build` from a checked :class:`FitConfig`."""
    objective = config.resolved_objective()
    estimators = check_estimators(config.estimators)
    guide = config.guide
    k_init, k_fit = jax.random.split(as_key(config.key))

    dataset = None
    first_batch: dict = {}
    if config.data is not None:
        dataset = as_dataset(config.data, config.batch_size, config.shuffle, as_key(config.key))
        clash = sorted(set(dataset.arrays) & set(model_kwargs))
        if clash:
            raise ArgumentError("data", f"{clash} given both in data= and as model keyword "
                                "arguments; pass each once.")
        model = StreamPlates(model, dataset.num_rows, dataset.batch_size)
        if guide is not None:
            guide = StreamPlates(guide, dataset.num_rows, dataset.batch_size)
        first_batch = {k: jnp.asarray(v) for k, v in dataset.batch(0).items()}
    mesh = resolve_mesh(config.devices, config.mesh, streaming=dataset is not None)
    if mesh is not None and dataset is not None:
        check_batch_size(mesh, dataset.batch_size)
    init_kwargs = {**model_kwargs, **first_batch}

    setup = Setup(tuple(model_args), dict(model_kwargs), config, objective, estimators,
                  dataset, mesh, first_batch, k_init, k_fit)
    if guide is not None:
        return assemble(setup, model, guide)

    def with_default_guide(form, trace=None):
        dg = default_guide(
            form, model_args, init_kwargs, k_init, config.start, start_key=config.key,
            budget=int(config.num_steps) * objective.num_particles, trace=trace)
        return assemble(setup, form, dg.guide, dg.init_params, dg.start, trace), dg.params_for

    # one prior trace of the model as written, for its default guide and the analysis below
    trace = prior_trace(model, model_args, init_kwargs, k_init)
    written, written_params = with_default_guide(model, trace)
    steps = race_steps(int(config.num_steps))
    if written.start is None or dataset is not None or config.init_params or \
            (config.resume is None and not steps):
        return written
    sites = race_sites(model, model_args, init_kwargs, trace) \
        if config.reparam == "auto" else ()
    if config.resume is not None:
        # a resumed fit continues in the form its checkpoint was written in, raced or not
        # (the loop refuses a checkpoint of another form than the fitter's)
        if not sites:
            return written
        other = with_default_guide(noncentered(model, sites))[0]
        info = read_checkpoint(config.resume)[0].get("info", {})
        return resumed((written, other), sites, info) or written
    # a start given by the caller (a Start) is used as given: only "auto" races its runner-up
    choose = isinstance(config.start, str) and config.start == "auto"
    field = entrants(written, written_params, runner_up=choose)
    if sites:
        other, other_params = with_default_guide(noncentered(model, sites))
        field += entrants(other, other_params, sites, runner_up=choose)
    return written if len(field) == 1 else race(field, Plan(config), steps)


class Setup(NamedTuple):
    """What :func:`build_from` resolved, shared by the fitters of a model's forms."""

    model_args: tuple
    model_kwargs: dict
    config: FitConfig
    objective: Objective
    estimators: dict
    dataset: Dataset | None
    mesh: Mesh | None
    first_batch: dict
    k_init: jax.Array
    k_fit: jax.Array


def assemble(setup: Setup, model: Callable, guide: Callable, start_params: dict | None = None,
             start: Start | None = None, trace: dict | None = None) -> Fitter:
    """The :class:`Fitter` of ``model`` and ``guide``: parameters initialized
    (``start_params`` and ``config.init_params`` over the sites' own), the guarded step,
    the compiled chunk (not compiled yet). ``trace``: the model's prior trace at the setup's
    ``k_init``, if the caller has it (streamed data are checked on it)."""
    (model_args, model_kwargs, config, objective, estimators, dataset, mesh, first_batch,
     k_init, k_fit) = setup
    start_params = start_params or {}
    init_kwargs = {**model_kwargs, **first_batch}
    if dataset is not None:
        if trace is None:
            trace = prior_trace(model, model_args, init_kwargs, k_init)
        check_scaled(trace, dataset)
    optimizer = config.optimizer if config.optimizer is not None else plateau_adam()

    values, cons = param_sites(model, guide, model_args, init_kwargs, k_init, estimators)
    values.update({k: jnp.asarray(v) for k, v in start_params.items()})
    if config.init_params:
        unknown = set(config.init_params) - set(values)
        if unknown:
            raise ArgumentError(
                "init_params", f"no param site named {sorted(unknown)}; params: {sorted(values)}."
            )
        values.update({k: jnp.asarray(v) for k, v in config.init_params.items()})
    if not values:
        raise ArgumentError(
            "guide", "the guide and model have no numpyro.param sites: there is nothing to fit."
        )

    def surrogate_for(batch):
        kwargs = model_kwargs if batch is None else {**model_kwargs, **batch}
        return surrogate_fn(objective, model, guide, model_args, kwargs, estimators)

    surrogate = surrogate_for(first_batch or None)

    def negative_surrogate(u, k, sstate, batch):
        with particles_on(mesh):
            sur, aux = surrogate_for(batch)(constrain(u, cons), k, sstate)
        return -sur, aux

    def loss_and_grad(u, k, sstate, batch=None):
        (_, aux), grads = jax.value_and_grad(negative_surrogate, has_aux=True)(u, k, sstate,
                                                                              batch)
        return -aux.value, grads, aux.state

    rules = config.resolved_stopping()
    step = make_step(loss_and_grad, optimizer, rules)

    def scan_chunk(state: FitState, active: jax.Array, batches: dict | None = None):
        return jax.lax.scan(step, state, active if batches is None else (active, batches))

    if mesh is None:
        run_chunk = jax.jit(scan_chunk)
    else:
        rep = replicated(mesh)
        shardings = (rep, rep) if dataset is None else (rep, rep, batch_sharding(mesh))
        run_chunk = jax.jit(scan_chunk, in_shardings=shardings, out_shardings=(rep, rep))

    def init_for(params: dict) -> FitState:
        at = {**values, **{k: jnp.asarray(v) for k, v in params.items()}}
        state = init_state(unconstrain(at, cons), optimizer, k_fit, rules=rules,
                           strategy_state=initial_state(surrogate, at, k_fit))
        return state if mesh is None else jax.device_put(state, replicated(mesh))

    return Fitter(init_for({}), run_chunk, loss_and_grad, guide, objective, cons, estimators,
                  rules, dataset, mesh, model, first_batch, tuple(model_args),
                  dict(model_kwargs), start, init_for)
