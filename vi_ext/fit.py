"""fit(): the training loop.

Each step draws a fresh key, evaluates the objective's gradient estimator (see
:mod:`vi_ext.program.transform`) at the constrained parameters theta = T(u), and applies an
optax update to the unconstrained parameters u, maximizing the objective (minimizing
loss = -objective). Steps run in ``lax.scan`` chunks inside one jit-compiled function, so the
host only wakes between chunks to update the progress bar.

A step whose loss or gradient is non-finite is rejected: parameters and optimizer state stay
unchanged, the step is counted, and the key moves on. After ``max_rejections`` consecutive
rejections the fit stops with a :class:`~vi_ext.errors.NonFiniteError` that names the step,
the sites whose log density was non-finite, and carries the last good parameters.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from jax.sharding import Mesh
from numpyro import handlers
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.initialization import init_to_median
from tqdm.auto import tqdm

from vi_ext import objectives as _objectives
from vi_ext.checkpoint import CheckpointError
from vi_ext.checkpoint import load as load_checkpoint
from vi_ext.checkpoint import save as save_checkpoint
from vi_ext.data import Dataset, Prefetcher, StreamPlates, as_dataset, check_scaled
from vi_ext.errors import ArgumentError, CallbackError, NonFiniteError, SiteError
from vi_ext.keys import as_key
from vi_ext.optim import default_optimizer
from vi_ext.params import constrain, param_sites, unconstrain
from vi_ext.program.enumerate import is_enumerated
from vi_ext.program.objective import Objective
from vi_ext.program.sites import nonfinite_site_names, sample_sites
from vi_ext.program.transform import check_estimators, initial_state, surrogate_fn
from vi_ext.result import FitResult
from vi_ext.sharding import (
    batch_sharding,
    check_batch_size,
    particles_on,
    put_batches,
    replicated,
    resolve_mesh,
)
from vi_ext.stopping import is_rule


class FitState(NamedTuple):
    """The complete state of a fit; a pytree, printable, resumable.

    Attributes:
        params: unconstrained parameters u.
        opt_state: the optax state.
        strategy_state: state kept by gradient strategies between steps (e.g. the running
            averages of ``reinforce(baseline="average")``), site-keyed.
        monitor: the states of the stopping rules (a tuple, one per rule).
        converged: whether a stopping rule has fired (later steps change nothing).
        key: the PRNG key for the next step.
        step: number of steps taken.
        num_rejected: steps rejected so far (non-finite loss or gradient).
        consecutive_rejected: length of the current run of rejected steps.
        first_rejected_step: index of the first rejected step of the fit (-1: none).
        run_start_step: index of the first step of the current run of rejections (-1: none).
        run_start_key: the key that step used (to diagnose it afterwards).
    """

    params: dict
    opt_state: Any
    strategy_state: dict
    monitor: tuple
    converged: jax.Array
    key: jax.Array
    step: jax.Array
    num_rejected: jax.Array
    consecutive_rejected: jax.Array
    first_rejected_step: jax.Array
    run_start_step: jax.Array
    run_start_key: jax.Array


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_step(
    loss_and_grad: Callable[..., tuple[jax.Array, dict, dict]],
    optimizer: optax.GradientTransformation,
    rules: tuple = (),
) -> Callable[[FitState, Any], tuple[FitState, jax.Array]]:
    """One guarded optimizer step, ``(state, xs) -> (state, loss)``, for ``lax.scan``.

    ``xs`` is ``active`` (a bool) or, when data are streamed, ``(active, batch)`` with the
    step's minibatch (a dict of model keyword arguments); ``loss_and_grad(params, key,
    strategy_state, batch)`` gets the batch, or None.
    Inactive steps (padding at the end of a chunk, or any step after a stopping rule in
    ``rules`` fired) change nothing.
    """

    def step(state: FitState, xs: Any):
        active, batch = xs if isinstance(xs, tuple) else (xs, None)
        active = active & ~state.converged
        key, sub = jax.random.split(state.key)
        loss, grads, strategy_state = loss_and_grad(state.params, sub, state.strategy_state,
                                                    batch)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        accept = active & finite

        # one branch per outcome, not selects: the common accepted step runs only the update
        # and its own bookkeeping (each scalar select is an op of its own in the compiled
        # loop, which costs at the microsecond steps of small models)
        def accepted(_):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            monitor = tuple(r.update(m, loss, grads) for r, m in zip(rules, state.monitor,
                                                                      strict=True))
            converged = state.converged
            for r, m in zip(rules, monitor, strict=True):
                converged = converged | r.converged(m)
            return state._replace(
                params=optax.apply_updates(state.params, updates),
                opt_state=opt_state,
                strategy_state=strategy_state,
                monitor=monitor,
                converged=converged,
                key=key,
                step=state.step + 1,
                consecutive_rejected=jnp.zeros_like(state.consecutive_rejected),
                run_start_step=jnp.full_like(state.run_start_step, -1),
            )

        def not_accepted(_):
            # a rejected step (active, non-finite) or an inactive one (nothing changes)
            reject = active
            starts_run = reject & (state.consecutive_rejected == 0)
            count = reject.astype(jnp.int32)
            return state._replace(
                key=jnp.where(active, key, state.key),
                step=state.step + active.astype(state.step.dtype),
                num_rejected=state.num_rejected + count,
                consecutive_rejected=state.consecutive_rejected + count,
                first_rejected_step=jnp.where(reject & (state.first_rejected_step < 0),
                                              state.step, state.first_rejected_step),
                run_start_step=jnp.where(starts_run, state.step, state.run_start_step),
                run_start_key=jnp.where(starts_run, sub, state.run_start_key),
            )

        new_state = jax.lax.cond(accept, accepted, not_accepted, None)
        return new_state, jnp.where(active, loss, jnp.nan)

    return step


def _validate(model, guide, num_steps, optimizer, progress, max_rejections, chunk_size):
    if not callable(model):
        raise ArgumentError("model", f"expected a NumPyro model (a callable), got {model!r}.")
    if guide is not None and not callable(guide):
        raise ArgumentError(
            "guide", f"expected a NumPyro guide (a callable) or None for AutoNormal, got {guide!r}."
        )
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ArgumentError("num_steps", f"expected a positive int, got {num_steps!r}.")
    if num_steps <= 0:
        raise ArgumentError("num_steps", f"must be positive, got {num_steps}.")
    if optimizer is not None and not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise ArgumentError(
            "optimizer",
            f"expected an optax GradientTransformation (e.g. optax.adam(1e-2)), got {optimizer!r}.",
        )
    if not isinstance(progress, bool):
        raise ArgumentError("progress", f"expected True or False, got {progress!r}.")
    if not isinstance(max_rejections, int) or max_rejections < 1:
        raise ArgumentError("max_rejections", f"expected an int >= 1, got {max_rejections!r}.")
    _check_positive_int_or_none("chunk_size", chunk_size)


def _check_positive_int_or_none(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ArgumentError(name, f"expected an int >= 1 or None, got {value!r}.")


def check_no_discrete_latents(model: Callable, args: tuple, kwargs: dict,
                              key: jax.Array) -> list[str]:
    """Raise a SiteError naming the first discrete latent of ``model`` that AutoNormal
    cannot take; return the names of those marked for enumeration (summed out by the
    model's density, :mod:`vi_ext.program.enumerate`), which the guide must not sample."""
    # a draw from a heavy-tailed prior may overflow a downstream parameter: only the sites'
    # supports matter here, so argument validation is off
    with numpyro.validation_enabled(False):
        trace = handlers.trace(handlers.seed(model, key)).get_trace(*args, **kwargs)
    enumerated = [s["name"] for s in sample_sites(trace, observed=False) if is_enumerated(s)]
    for site in sample_sites(trace, observed=False):
        if not is_enumerated(site) and getattr(site["fn"].support, "is_discrete", False):
            raise SiteError(
                site["name"],
                f"the model has a discrete latent ({type(site['fn']).__name__}), which the "
                "default guide (AutoNormal) cannot represent. Either marginalize it out of the "
                "model, or pass a guide that samples it and choose a gradient strategy for it, "
                "e.g. guide=my_guide, estimators={'" + site["name"] + "': "
                "vx.estimators.enum()} (or reinforce()).",
            )
    return enumerated


def nonfinite_sites(
    model: Callable,
    guide: Callable,
    params: Mapping[str, Any],
    args: tuple,
    kwargs: dict,
    key: jax.Array,
) -> tuple[str, ...]:
    """Names of guide and model sites whose log density is non-finite at (params, key).

    Runs outside jit, once, to explain a rejected step.
    """
    with numpyro.validation_enabled(False):
        return _nonfinite_sites(model, guide, params, args, kwargs, key)


def _nonfinite_sites(model, guide, params, args, kwargs, key):
    k1, k2 = jax.random.split(key)
    g = handlers.seed(handlers.substitute(guide, data=dict(params)), k1)
    gtr = handlers.trace(g).get_trace(*args, **kwargs)
    latents = {s["name"]: s["value"] for s in sample_sites(gtr, observed=False)}
    m = handlers.substitute(model, data=dict(params))
    m = handlers.seed(handlers.condition(m, latents), k2)
    mtr = handlers.trace(m).get_trace(*args, **kwargs)
    return tuple(f"{name} ({where})" for where, tr in (("guide", gtr), ("model", mtr))
                 for name in nonfinite_site_names(tr))


class Fitter(NamedTuple):
    """A compiled fit, before the loop: what :func:`fit` runs, exposed for reuse.

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


def build(
    model: Callable,
    *model_args: Any,
    guide: Callable | None = None,
    objective: Objective | str = "elbo",
    optimizer: optax.GradientTransformation | None = None,
    key: Any = 0,
    estimators: Mapping[str, Any] | None = None,
    init_params: Mapping[str, Any] | None = None,
    stopping: Any = None,
    num_steps: int = 1000,
    data: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    shuffle: bool = True,
    devices: Any = None,
    mesh: Mesh | None = None,
    **model_kwargs: Any,
) -> Fitter:
    """Resolve fit's inputs, initialize parameters, and build the compiled step function.

    Arguments are those of :func:`fit`; ``num_steps`` only sets the default optimizer's
    schedule (:func:`vi_ext.optim.default_optimizer`). Nothing is compiled until
    ``run_chunk`` is first called.
    """
    objective = _objectives.get(objective)
    estimators = check_estimators(estimators)
    key = as_key(key)
    k_init, k_fit = jax.random.split(key)

    dataset = None
    first_batch: dict = {}
    if data is not None:
        dataset = as_dataset(data, batch_size, shuffle, key)
        clash = sorted(set(dataset.arrays) & set(model_kwargs))
        if clash:
            raise ArgumentError("data", f"{clash} given both in data= and as model keyword "
                                "arguments; pass each once.")
        model = StreamPlates(model, dataset.num_rows, dataset.batch_size)
        if guide is not None:
            guide = StreamPlates(guide, dataset.num_rows, dataset.batch_size)
        first_batch = {k: jnp.asarray(v) for k, v in dataset.batch(0).items()}
    elif batch_size is not None:
        raise ArgumentError("batch_size", "is set but data= (the arrays to stream) is not.")
    mesh = resolve_mesh(devices, mesh, streaming=dataset is not None)
    if mesh is not None and dataset is not None:
        check_batch_size(mesh, dataset.batch_size)
    init_kwargs = {**model_kwargs, **first_batch}

    if guide is None:
        enumerated = check_no_discrete_latents(model, model_args, init_kwargs, k_init)
        # sites summed out by the model's density are hidden from the guide
        seen = handlers.block(model, hide=enumerated) if enumerated else model
        guide = AutoNormal(seen, init_loc_fn=init_to_median(num_samples=15))
    if dataset is not None:
        with numpyro.validation_enabled(False):
            trace = handlers.trace(handlers.seed(model, k_init)).get_trace(*model_args,
                                                                          **init_kwargs)
        check_scaled(trace, dataset)
    optimizer = optimizer if optimizer is not None else default_optimizer(int(num_steps))

    values, cons = param_sites(model, guide, model_args, init_kwargs, k_init, estimators)
    if init_params:
        unknown = set(init_params) - set(values)
        if unknown:
            raise ArgumentError(
                "init_params", f"no param site named {sorted(unknown)}; params: {sorted(values)}."
            )
        values.update({k: jnp.asarray(v) for k, v in init_params.items()})
    if not values:
        raise ArgumentError(
            "guide", "the guide and model have no numpyro.param sites: there is nothing to fit."
        )
    u0 = unconstrain(values, cons)

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

    rules = _stopping_rules(stopping)
    step = make_step(loss_and_grad, optimizer, rules)

    def scan_chunk(state: FitState, active: jax.Array, batches: dict | None = None):
        return jax.lax.scan(step, state, active if batches is None else (active, batches))

    if mesh is None:
        run_chunk = jax.jit(scan_chunk)
    else:
        rep = replicated(mesh)
        shardings = (rep, rep) if dataset is None else (rep, rep, batch_sharding(mesh))
        run_chunk = jax.jit(scan_chunk, in_shardings=shardings, out_shardings=(rep, rep))

    state = FitState(
        params=u0,
        opt_state=optimizer.init(u0),
        strategy_state=initial_state(surrogate, values, k_fit),
        monitor=tuple(r.init(u0) for r in rules),
        converged=jnp.array(False),
        key=k_fit,
        step=jnp.array(0, jnp.int32),
        num_rejected=jnp.array(0, jnp.int32),
        consecutive_rejected=jnp.array(0, jnp.int32),
        first_rejected_step=jnp.array(-1, jnp.int32),
        run_start_step=jnp.array(-1, jnp.int32),
        run_start_key=k_fit,
    )
    # strong dtypes everywhere, so that the carry keeps one type and run_chunk compiles once
    state = jax.tree_util.tree_map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), state)
    if mesh is not None:
        state = jax.device_put(state, replicated(mesh))
    return Fitter(state, run_chunk, loss_and_grad, guide, objective, cons, estimators, rules,
                  dataset, mesh, model, first_batch)


def _stopping_rules(stopping: Any) -> tuple:
    if stopping is None:
        return ()
    if not is_rule(stopping) and not isinstance(stopping, (list, tuple)):
        raise ArgumentError(
            "stopping",
            f"expected a stopping rule or a list of them (e.g. "
            f"vx.stopping.RelativeLossChange()), got {stopping!r}.",
        )
    # (a rule may itself be a NamedTuple: test for the protocol before iterating)
    rules = (stopping,) if is_rule(stopping) else tuple(stopping)
    for r in rules:
        if not is_rule(r):
            raise ArgumentError(
                "stopping",
                f"expected stopping rules (objects with init, update and converged, e.g. "
                f"vx.stopping.RelativeLossChange()), got {r!r}.",
            )
    return rules


def fit(
    model: Callable,
    *model_args: Any,
    guide: Callable | None = None,
    objective: Objective | str = "elbo",
    optimizer: optax.GradientTransformation | None = None,
    num_steps: int = 1000,
    key: Any = 0,
    progress: bool = True,
    estimators: Mapping[str, Any] | None = None,
    max_rejections: int = 20,
    chunk_size: int | None = None,
    init_params: Mapping[str, Any] | None = None,
    stopping: Any = None,
    callbacks: Sequence[Callable] = (),
    callback_every: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | None = None,
    data: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    shuffle: bool = True,
    devices: Any = None,
    mesh: Mesh | None = None,
    **model_kwargs: Any,
) -> FitResult:
    """Fit a guide to a NumPyro model by maximizing a variational objective.

    Each step estimates grad L(theta) with the objective's transformation (unbiased for any
    mix of per-site strategies) and takes an optax step on the unconstrained parameters.

    Args:
        model: a NumPyro model.
        *model_args: positional arguments of the model (and guide).
        guide: a NumPyro guide; ``None`` builds ``AutoNormal(model)`` with its locations
            initialized at the prior medians (``init_to_median``) and scales at 0.1;
            ``vx.boosting.BoostedMixture(...)`` grows a mixture by boosting instead.
        objective: an objective from :mod:`vi_ext.objectives`, a user-written one, or a
            registered name (``"elbo"``). Default: the ELBO with one particle.
        optimizer: an optax ``GradientTransformation``. Default: Adam at 1e-2 for the first
            half of ``num_steps``, then cosine-annealed to 1e-3
            (:func:`vi_ext.optim.default_optimizer`). Learning-rate schedules come from optax.
        num_steps: total number of optimizer steps (> 0), resumed ones included.
        key: an int seed or a JAX key. The same key gives the same fit, bit for bit.
        progress: show a tqdm progress bar with the running loss.
        estimators: site name -> gradient strategy (see :mod:`vi_ext.estimators`).
        max_rejections: stop after this many consecutive non-finite steps.
        chunk_size: steps per compiled ``lax.scan`` chunk (default: about 1% of num_steps,
            at most 1000).
        init_params: constrained initial values for some or all params.
        stopping: a stopping rule or a list of them (:mod:`vi_ext.stopping`), checked at
            every step inside the compiled loop; the fit stops when one fires.
        callbacks: functions ``cb(step, state, loss)`` called every ``callback_every``
            steps with the number of steps taken, the :class:`FitState` and the mean loss
            since the previous call. A callback that returns ``True`` stops the fit.
        callback_every: steps between callback calls (default: the chunk size).
        checkpoint: a file to save the fit's state to, atomically, every
            ``checkpoint_every`` steps and at the end (:mod:`vi_ext.checkpoint`).
        checkpoint_every: steps between checkpoints (default: every 10% of the steps).
        resume: a checkpoint file to continue from; the same arguments as the fit that
            wrote it (``num_steps`` included) give the same result, bit for bit, as a fit
            never interrupted. A larger ``num_steps`` extends the fit; with the default
            optimizer it re-plans the annealing over the new total (with a warning).
        data: arrays to stream in minibatches (:mod:`vi_ext.data`): model keyword name ->
            array or path to a ``.npy`` file (memory-mapped), one row per data point. Each
            step calls the model with ``batch_size`` rows of each; the model scales their
            likelihood by N / B with ``numpyro.plate(name, num_data, subsample_size=B)``.
        batch_size: rows per step, with ``data``.
        shuffle: reshuffle the rows every epoch (from ``key``); False streams them in order.
        devices: a number of devices, or a list of them, to shard the step over
            (:mod:`vi_ext.sharding`): minibatch rows when ``data`` is given, particles
            otherwise. Parameters are replicated.
        mesh: a ``jax.sharding.Mesh`` with an axis ``"data"`` and/or ``"particles"``, instead
            of ``devices``.
        **model_kwargs: keyword arguments of the model (and guide), e.g. observations.

    Returns:
        a :class:`~vi_ext.result.FitResult`; ``stop_reason`` says why the fit ended.

    Raises:
        ArgumentError: a bad argument, before anything is compiled.
        SiteError: a site-level problem (a discrete latent with no strategy, a guide missing a
            model site, mismatched shapes), naming the site.
        NonFiniteError: ``max_rejections`` consecutive steps had a non-finite loss or
            gradient; it carries the last good parameters.
        CheckpointError: ``resume`` names a missing, corrupted or incompatible checkpoint
            (the file is left untouched), or ``checkpoint`` cannot be written.
        CallbackError: a callback raised; it carries the result so far.

    Example:
        >>> import vi_ext as vx
        >>> from models import eight_schools
        >>> res = vx.fit(eight_schools.model, num_steps=2000, **eight_schools.data())
        >>> res.summary()
    """
    from vi_ext.boosting import BoostedMixture

    if isinstance(guide, BoostedMixture):
        return _fit_boosted(model, model_args, model_kwargs, guide, num_steps, key, progress,
                            objective=objective, optimizer=optimizer, estimators=estimators,
                            init_params=init_params, stopping=stopping, callbacks=callbacks,
                            checkpoint=checkpoint, resume=resume)
    _validate(model, guide, num_steps, optimizer, progress, max_rejections, chunk_size)
    callbacks = _validate_callbacks(callbacks, callback_every)
    _check_positive_int_or_none("checkpoint_every", checkpoint_every)
    if checkpoint_every is not None and checkpoint is None:
        raise ArgumentError("checkpoint_every", "is set but checkpoint= (the file) is not.")
    num_steps = int(num_steps)
    fitter = build(model, *model_args, guide=guide, objective=objective, optimizer=optimizer,
                   key=key, estimators=estimators, init_params=init_params, stopping=stopping,
                   num_steps=num_steps, data=data, batch_size=batch_size, shuffle=shuffle,
                   devices=devices, mesh=mesh, **model_kwargs)
    objective, guide, cons = fitter.objective, fitter.guide, fitter.constraints
    estimators = fitter.estimators
    chunk = chunk_size or max(1, min(1000, math.ceil(num_steps / 100)))
    if checkpoint is not None and checkpoint_every is None:
        checkpoint_every = max(1, math.ceil(num_steps / 10))
    everies = [e for e in (checkpoint_every, callback_every if callbacks else None) if e]
    if chunk_size is None:
        chunk = min([chunk, *everies])
    chunk = min(chunk, num_steps)
    if callbacks and callback_every is None:
        callback_every = chunk
    run_chunk = fitter.run_chunk
    state = fitter.init_state
    losses = np.full(num_steps, np.nan, dtype=np.float64)
    done = 0
    if resume is not None:
        ck = load_checkpoint(resume, state)
        done = int(ck.state.step)
        if done > num_steps:
            raise ArgumentError(
                "num_steps",
                f"the checkpoint {os.fspath(resume)!r} is at step {done}, beyond num_steps="
                f"{num_steps} (num_steps counts every step, resumed ones included).",
            )
        if len(ck.losses) != done:
            raise CheckpointError(os.fspath(resume), f"holds {len(ck.losses)} losses for "
                                  f"{done} steps; it is inconsistent.")
        state = ck.state
        losses[:done] = ck.losses
        planned = ck.meta.get("info", {}).get("num_steps")
        if optimizer is None and planned is not None and planned != num_steps:
            warnings.warn(
                f"the checkpoint {os.fspath(resume)!r} was written by a fit of {planned} "
                f"steps and is resumed with num_steps={num_steps}: the default optimizer "
                "anneals its step over the second half of num_steps, so the remaining steps "
                "follow a new schedule (neither that fit continued nor an uninterrupted fit "
                f"of {num_steps} steps). Pass optimizer= to fix the schedule yourself.",
                RuntimeWarning,
                stacklevel=2,
            )
    info = {"objective": objective.name, "params": sorted(cons), "num_steps": num_steps}
    stop_reason = "num_steps"
    if bool(state.converged):
        stop_reason = "converged"
    def chunk_steps(start):
        n = min(chunk, num_steps - start)
        for every in everies:
            n = min(n, every - start % every)
        return n

    prefetch = None
    if fitter.dataset is not None:
        prefetch = Prefetcher(fitter.dataset, chunk,
                              lambda rows: put_batches(fitter.dataset.arrays, rows, fitter.mesh))
    t0 = time.perf_counter()
    bar = tqdm(total=num_steps, initial=done, disable=not progress,
               desc=f"fit ({objective.name})", dynamic_ncols=True)
    last_callback = done
    try:
        while done < num_steps and not bool(state.converged):
            n = chunk_steps(done)
            active = jnp.arange(chunk) < n
            if prefetch is None:
                new_state, chunk_losses = run_chunk(state, active)
            else:
                new_state, chunk_losses = run_chunk(state, active, prefetch.get(done, n))
                if done + n < num_steps:
                    # the host gathers the next chunk's rows while the device computes
                    prefetch.prepare(done + n, chunk_steps(done + n))
            taken = int(new_state.step) - done
            chunk_losses = np.asarray(chunk_losses)[:taken]
            losses[done : done + taken] = chunk_losses
            if int(new_state.consecutive_rejected) >= max_rejections:
                _raise_nonfinite(new_state, cons, model, guide, model_args, model_kwargs,
                                 max_rejections, objective, losses[: done + taken],
                                 done + taken)
            state = new_state
            done += taken
            converged = bool(state.converged)
            finite = chunk_losses[np.isfinite(chunk_losses)]
            if progress and finite.size:
                bar.set_postfix(loss=f"{float(np.mean(finite)):.4g}", refresh=False)
            bar.update(taken)
            if converged:
                names = [r.name for r, m in zip(fitter.rules, state.monitor, strict=True)
                         if bool(r.converged(m))]
                stop_reason = f"converged ({', '.join(names)}) at step {done}"
            end = done >= num_steps or converged
            if checkpoint is not None and (done % checkpoint_every == 0 or end):
                save_checkpoint(checkpoint, state, losses[:done], info)
            if callbacks and (done % callback_every == 0 or end):
                window = losses[last_callback:done]
                window = window[np.isfinite(window)]
                mean_loss = float(np.mean(window)) if window.size else float("nan")
                last_callback = done

                def partial(d=done, st=state):
                    return _result(fitter, model, model_args, model_kwargs, st, losses[:d],
                                   float("nan"), f"callback error at step {d}")

                stop = _run_callbacks(callbacks, done, state, mean_loss, partial)
                if stop is not None:
                    stop_reason = f"stopped by callback {stop} at step {done}"
                    break
    finally:
        bar.close()
    seconds = time.perf_counter() - t0

    num_rejected = int(state.num_rejected)
    if num_rejected:
        warnings.warn(
            f"fit rejected {num_rejected} of {done} steps whose loss or gradient was "
            f"non-finite (first at step {int(state.first_rejected_step)}); parameters were left "
            "unchanged at those steps. A smaller learning rate or a non-centered "
            "parameterization usually helps.",
            RuntimeWarning,
            stacklevel=2,
        )
    return _result(fitter, model, model_args, model_kwargs, state, losses[:done], seconds,
                   stop_reason)


def _fit_boosted(model, model_args, model_kwargs, spec, num_steps, key, progress, *,
                 objective, **others):
    """fit(guide=BoostedMixture(...)): run boosting, return its FitResult view."""
    from vi_ext.boosting import Settings, boost

    for name, value in others.items():
        if value is not None and value != ():
            raise ArgumentError(
                name, "does not apply to a boosted mixture guide (boosting runs its own "
                "Frank-Wolfe loop); tune it with BoostedMixture(settings=...)."
            )
    if _objectives.get(objective).name != "elbo":
        raise ArgumentError("objective", "boosting minimizes KL(q || p): use the ELBO.")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) \
            or num_steps < 1:
        raise ArgumentError("num_steps", f"expected a positive int, got {num_steps!r}.")
    settings = (spec.settings or Settings())._replace(first_steps=int(num_steps))
    res = boost(model, *model_args, num_components=spec.num_components,
                step_size=spec.step_size, variant=spec.variant, family=spec.family, key=key,
                progress=progress, settings=settings, **model_kwargs)
    return res.as_fit_result()


def _result(fitter, model, model_args, model_kwargs, state, losses, seconds, stop_reason):
    if fitter.dataset is not None:
        # diagnostics of a streamed fit run on its first minibatch (scaled by N / B)
        model, model_kwargs = fitter.model, {**model_kwargs, **fitter.first_batch}
    return FitResult(
        model=model,
        guide=fitter.guide,
        params=constrain(state.params, fitter.constraints),
        losses=np.array(losses),
        state=state,
        objective=fitter.objective,
        model_args=model_args,
        model_kwargs=model_kwargs,
        estimators=fitter.estimators,
        constraints=fitter.constraints,
        seconds=seconds,
        stop_reason=stop_reason,
    )


def _validate_callbacks(callbacks, callback_every) -> tuple:
    if callable(callbacks):
        callbacks = (callbacks,)
    try:
        callbacks = tuple(callbacks or ())
    except TypeError:
        raise ArgumentError(
            "callbacks", f"expected a list of functions cb(step, state, loss), got {callbacks!r}."
        ) from None
    for cb in callbacks:
        if not callable(cb):
            raise ArgumentError(
                "callbacks", f"expected functions cb(step, state, loss), got {cb!r}."
            )
    _check_positive_int_or_none("callback_every", callback_every)
    return callbacks


def _callback_name(cb) -> str:
    return getattr(cb, "__qualname__", None) or getattr(cb, "__name__", None) or repr(cb)


def _run_callbacks(callbacks, step, state, loss, partial_result) -> str | None:
    """Call every callback; the name of the first that asked to stop, or None."""
    for cb in callbacks:
        try:
            out = cb(step, state, loss)
        except Exception as e:
            name = _callback_name(cb)
            raise CallbackError(
                f"callback {name} raised {type(e).__name__} at step {step}: {e}. The fit "
                "stopped there; error.result holds the parameters and losses so far (and the "
                "checkpoint, if any, is at that step: fix the callback and resume=).",
                callback=name, step=step, result=partial_result(),
            ) from e
        if out is True:
            return _callback_name(cb)
    return None


def _raise_nonfinite(state, cons, model, guide, args, kwargs, max_rejections, objective, losses,
                     done):
    params = constrain(state.params, cons)
    step = int(state.run_start_step)
    sites = nonfinite_sites(model, guide, params, args, kwargs, state.run_start_key)
    where = (
        f" The log density was non-finite at: {', '.join(sites)}."
        if sites
        else " Every site's log density was finite there, so the gradient was at fault."
    )
    partial = FitResult(
        model=model, guide=guide, params=params, losses=np.array(losses), state=state,
        objective=objective, model_args=args, model_kwargs=kwargs, estimators={},
        constraints=cons, seconds=float("nan"), stop_reason=f"non-finite at step {step}",
    )
    raise NonFiniteError(
        f"fit stopped after {max_rejections} consecutive steps with a non-finite loss or "
        f"gradient, starting at step {step} (of {done} run).{where} The parameters were left "
        "at their last good values (error.last_good_params, error.result). To fix: lower the "
        "learning rate, use a non-centered parameterization, tighten heavy-tailed priors, or "
        "raise max_rejections if the failures are rare.",
        step=step,
        sites=sites,
        last_good_params=params,
        result=partial,
    )
