"""fit(): the loop around the compiled chunk.

The loop owns what happens between chunks, on the host: how long each chunk is (about 1%
of the steps, cut so that callbacks and checkpoints fall exactly every k steps), resuming
from a checkpoint, the progress bar, the checkpoint cadence, callbacks, the warning or
error about rejected steps, and the result. Each chunk is one call of the
:class:`~vi_ext.fit.fitter.Fitter`'s ``run_chunk``: steps run in a ``lax.scan`` inside one
jit-compiled function, so the host only wakes between chunks.

A step whose loss or gradient is non-finite is rejected by the step itself
(:mod:`vi_ext.fit.step`). After ``max_rejections`` consecutive rejections the loop stops
with a :class:`~vi_ext.errors.NonFiniteError` that names the step, the sites whose log
density was non-finite there (:mod:`vi_ext.fit.diagnosis`), and carries the last good
parameters.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from vi_ext import orders
from vi_ext.checkpoint import CheckpointError
from vi_ext.checkpoint import load as load_checkpoint
from vi_ext.checkpoint import save as save_checkpoint
from vi_ext.data import BatchBuffers, Dataset, Prefetcher
from vi_ext.errors import ArgumentError, CallbackError
from vi_ext.fit.config import FitConfig, FitsItself, refuse_options, signature_with_options
from vi_ext.fit.diagnosis import raise_nonfinite
from vi_ext.fit.fitter import Fitter, build_from
from vi_ext.fit.plan import Plan
from vi_ext.fit.step import FitState
from vi_ext.result import FitResult
from vi_ext.sharding import put_batches


def fit(model: Callable, *model_args: Any, config: FitConfig | None = None,
        **kwargs: Any) -> FitResult:
    """Fit a guide to a NumPyro model by maximizing a variational objective.

    Each step estimates grad L(theta) with the objective's transformation (unbiased for any
    mix of per-site strategies) and takes an optax step on the unconstrained parameters.

    Args:
        model: a NumPyro model.
        *model_args: positional arguments of the model (and guide).
        config: a :class:`~vi_ext.fit.config.FitConfig` holding any of the options below;
            options passed by name override it.
        **kwargs: the options below by name (each a field of ``FitConfig``); every other
            keyword argument goes to the model (and guide), e.g. observations.

    Keyword Args:
        guide (Callable | None): a NumPyro guide; ``None`` builds the default guide
            (:func:`vi_ext.fit.default_guide`): a full-rank Gaussian on the unconstrained
            latents (``AutoMultivariateNormal``) up to 250 latent dimensions, mean-field
            (``AutoNormal``) beyond, started where ``start`` says;
            ``vx.boosting.BoostedMixture(...)`` grows a mixture by boosting instead (it takes
            ``num_steps``, ``key``, ``progress`` and ``objective`` from fit and refuses the other
            options by name).
        start (str | Start): where the default guide starts: ``"auto"`` (default) the best of
            several candidates by a cheap ELBO estimate (:func:`vi_ext.start.choose_start`: the
            prior medians, NumPyro's uniform start, a short fixed-draw ELBO fit from each; a few
            seconds, mostly compilation; recorded in ``FitResult.start``); ``"median"`` the prior
            medians, nothing chosen; or a :class:`vi_ext.start.Start`. Only with ``guide=None``.
        reparam (str | None): ``"auto"`` (default): with the default guide and
            ``start="auto"``, the model's hierarchical location-scale latents (a location or
            scale that depends on another latent) are also tried in non-centered form: both
            forms' fits run 5% of ``num_steps`` (500 to 1000 steps; no race below 10 000),
            and the one with the lower loss by two standard errors is fitted from step 0
            (:mod:`vi_ext.fit.forms`; ``FitResult.start.noncentered`` names the sites,
            ``FitResult.model`` is the model fitted, and draws carry both ``z`` and
            ``z_decentered``). A resumed fit keeps its checkpoint's form. ``None``: the
            model as written.
        objective (Objective | str | None): an objective from :mod:`vi_ext.objectives`, a
            user-written one, or a registered name (``"elbo"``: one particle). Default: the
            ELBO, with 4 particles for the default guide, with one for a guide of your own
            (whose sites may use strategies that cannot run inside particles: enum, mvd).
        optimizer (GradientTransformation | None): an optax ``GradientTransformation``. Default:
            Adam at 1e-2, its step halved each time the iterates are found stationary, the
            iterates of the last phase averaged (:func:`vi_ext.optim.plateau_adam`); the
            average is ``FitResult.params``.
        num_steps (int): the most optimizer steps (> 0), resumed ones included (default 20000: a
            cap; the default stopping rule usually ends the fit well before it, and a warning
            says when the cap came first).
        key (int | jax.Array): an int seed or a JAX key. The same key gives the same fit, bit for
            bit.
        progress (bool): show a tqdm progress bar with the running loss.
        estimators (dict | None): site name -> gradient strategy (see :mod:`vi_ext.estimators`).
        max_rejections (int): stop after this many consecutive non-finite steps.
        chunk_size (int | None): steps per compiled ``lax.scan`` chunk (default: about 1% of
            num_steps, at most 1000).
        init_params (dict | None): constrained initial values for some or all params.
        stopping (rule | list | None | "auto"): a stopping rule or a list of them
            (:mod:`vi_ext.stopping`), checked at every step inside the compiled loop; the fit
            stops when one fires. Default ``"auto"``: ``Stationary(events=5)``, the test the
            default optimizer cuts its step by, fired at its fifth cut. ``None``: run
            ``num_steps``.
        callbacks (list): functions ``cb(step, state, loss)`` called every ``callback_every`` steps
            with the number of steps taken, the :class:`FitState` and the mean loss since the
            previous call. A callback that returns ``True`` stops the fit.
        callback_every (int | None): steps between callback calls (default: the chunk size).
        checkpoint (str | PathLike | None): a file to save the fit's state to, atomically, every
            ``checkpoint_every`` steps and at the end (:mod:`vi_ext.checkpoint`).
        checkpoint_every (int | None): steps between checkpoints (default: every 10% of the steps).
        resume (str | PathLike | None): a checkpoint file to continue from; the same arguments as
            the fit that wrote it (``num_steps`` included) give the same result, bit for bit, as a
            fit never interrupted. A larger ``num_steps`` extends the fit (the default
            optimizer's schedule does not depend on ``num_steps``).
        data (dict | None): arrays to stream in minibatches (:mod:`vi_ext.data`): model keyword name
            -> array or path to a ``.npy`` file (memory-mapped), one row per data point. Each step
            calls the model with ``batch_size`` rows of each; the model scales their likelihood by N
            / B with ``numpyro.plate(name, num_data, subsample_size=B)``.
        batch_size (int | None): rows per step, with ``data``.
        shuffle (bool): reshuffle the rows every epoch (from ``key``); False streams them in order.
        devices (int | list | None): a number of devices, or a list of them, to shard the step over
            (:mod:`vi_ext.sharding`): minibatch rows when ``data`` is given, particles otherwise.
            Parameters are replicated.
        mesh (Mesh | None): a ``jax.sharding.Mesh`` with an axis ``"data"`` and/or ``"particles"``,
            instead of ``devices``.

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
    if not callable(model):
        raise ArgumentError("model", f"expected a NumPyro model (a callable), got {model!r}.")
    config, model_kwargs = FitConfig.split({"config": config, **kwargs})
    if isinstance(config.guide, FitsItself):
        refuse_options(config, config.guide)
        return config.guide.fit_model(model, model_args, model_kwargs, config)
    config = config.check()
    fitter = build_from(model, model_args, model_kwargs, config)
    return run(fitter, config)


fit.__signature__ = signature_with_options(fit)


def _resume(config: FitConfig, state: FitState, losses: np.ndarray,
            dataset: Dataset | None = None, form: tuple = ()) -> tuple[FitState, int]:
    """The state and step count of ``config.resume``, its losses written into ``losses``;
    a streamed fit's checkpoint must have drawn its batches as ``dataset`` does, and been
    written by the fit of the same form of the model (``form``: the non-centered sites)."""
    path = os.fspath(config.resume)
    ck = load_checkpoint(config.resume, state)
    recorded = ck.meta.get("info", {}).get("noncentered")
    if recorded is not None and tuple(recorded) != tuple(form):
        def say(sites):
            return f"non-centered at {', '.join(sites)}" if sites else "as written"

        raise CheckpointError(
            path, f"was written by a fit of the model {say(recorded)}; this fit runs it "
            f"{say(form)}, whose parameters have the same names and mean other latents. "
            "Resume with the reparam= (and guide) of the fit that wrote it.")
    done = int(ck.state.step)
    num_steps = len(losses)
    if done > num_steps:
        raise ArgumentError(
            "num_steps", f"the checkpoint {path!r} is at step {done}, beyond num_steps="
            f"{num_steps} (num_steps counts every step, resumed ones included).")
    if len(ck.losses) != done:
        raise CheckpointError(path, f"holds {len(ck.losses)} losses for {done} steps; it is "
                              "inconsistent.")
    _check_batches(path, ck.meta.get("info", {}).get("data"), dataset)
    losses[:done] = ck.losses
    return ck.state, done


def _check_batches(path: str, saved: dict | None, dataset: Dataset | None) -> None:
    """Refuse to resume a checkpoint whose fit drew other batches than this one would: other
    rows, batch size, order or seed (``key=``), streamed against not streamed, or an epoch
    order of more than 2^20 rows written before checkpoints recorded orders (those orders
    have changed since)."""
    if dataset is None:
        if saved is not None:
            raise CheckpointError(path, f"was written by a streamed fit ({saved['num_rows']} rows "
                                  f"of data=, batch_size={saved['batch_size']}); resume it "
                                  "with the same data= and batch_size=.")
        return
    mine = dataset.record()
    if saved is None:
        if mine["order"] == orders.COMPUTED_SCHEME:
            raise CheckpointError(
                path, f"records no epoch order, and the orders of {mine['num_rows']} rows "
                "(more than 2^20) have changed since it was written: resumed, this fit would "
                "see other batches than the one that wrote it. Resume it with the vi_ext that "
                "wrote it, or start afresh.")
        return
    for field, advice in (("num_rows", "the same data= arrays"),
                          ("batch_size", "the same batch_size="),
                          ("order", "the same shuffle= (and a vi_ext that draws the same "
                                    "orders)"),
                          ("seed", "the same key= (it draws the batches' order)")):
        if saved.get(field) != mine[field]:
            raise CheckpointError(
                path, f"its fit drew its batches with {field}={saved.get(field)}, this one "
                f"with {field}={mine[field]}: resumed, it would see other batches. Resume "
                f"with {advice}.")


def run(fitter: Fitter, config: FitConfig) -> FitResult:
    """The loop: run ``fitter``'s chunks until ``config.num_steps`` steps are taken, a
    stopping rule fires, or a callback asks to stop."""
    plan = Plan(config)
    num_steps = plan.num_steps
    state = fitter.init_state
    losses = np.full(num_steps, np.nan, dtype=np.float64)
    done = 0
    form = tuple(fitter.start.noncentered) if fitter.start is not None else ()
    if config.resume is not None:
        state, done = _resume(config, state, losses, fitter.dataset, form)
    objective = fitter.objective
    info = {"objective": objective.name, "params": sorted(fitter.constraints),
            "num_steps": num_steps, "noncentered": list(form)}
    if fitter.dataset is not None:
        info["data"] = fitter.dataset.record()
    stop_reason = "converged" if bool(state.converged) else "num_steps"

    prefetch = None
    if fitter.dataset is not None:
        arrays, mesh = fitter.dataset.arrays, fitter.mesh
        # one chunk in flight at a time (its results are read below before the chunk after
        # next is gathered): two host buffers per array serve every chunk
        buffers = None if mesh is not None else BatchBuffers(
            arrays, (plan.chunk, fitter.dataset.batch_size))
        prefetch = Prefetcher(fitter.dataset, plan.chunk, lambda rows: put_batches(
            arrays, rows, mesh, None if buffers is None else buffers.next()))
    t0 = time.perf_counter()
    bar = tqdm(total=num_steps, initial=done, disable=not config.progress,
               desc=f"fit ({objective.name})", dynamic_ncols=True)
    last_callback = done
    converged = bool(state.converged)
    try:
        while done < num_steps and not converged:
            n = plan.steps(done)
            active = plan.active(n)
            if prefetch is None:
                new_state, chunk_losses = fitter.run_chunk(state, active)
            else:
                new_state, chunk_losses = fitter.run_chunk(state, active, prefetch.get(done, n))
                if done + n < num_steps:
                    # the host gathers the next chunk's rows while the device computes
                    nxt = plan.steps(done + n)
                    then = (done + n + nxt, plan.steps(done + n + nxt)) \
                        if done + n + nxt < num_steps else None
                    prefetch.prepare(done + n, nxt, then)
            # one transfer to the host per chunk (each separate one waits on its own)
            step, rejected, converged, chunk_losses = jax.device_get(
                (new_state.step, new_state.consecutive_rejected, new_state.converged,
                 chunk_losses))
            taken, converged = int(step) - done, bool(converged)
            chunk_losses = np.asarray(chunk_losses)[:taken]
            losses[done : done + taken] = chunk_losses
            if int(rejected) >= config.max_rejections:
                raise_nonfinite(fitter, new_state, losses[: done + taken],
                                config.max_rejections)
            state = new_state
            done += taken
            finite = chunk_losses[np.isfinite(chunk_losses)]
            if config.progress and finite.size:
                bar.set_postfix(loss=f"{float(np.mean(finite)):.4g}", refresh=False)
            bar.update(taken)
            if converged:
                names = [r.name for r, m in zip(fitter.rules, state.monitor, strict=True)
                         if bool(r.converged(m))]
                stop_reason = f"converged ({', '.join(names)}) at step {done}"
            end = done >= num_steps or converged
            if config.checkpoint is not None and (done % plan.checkpoint_every == 0 or end):
                save_checkpoint(config.checkpoint, state, losses[:done], info)
            if config.callbacks and (done % plan.callback_every == 0 or end):
                window = losses[last_callback:done]
                window = window[np.isfinite(window)]
                mean_loss = float(np.mean(window)) if window.size else float("nan")
                last_callback = done

                def partial(d=done, st=state):
                    return fitter.result(st, losses[:d], float("nan"),
                                         f"callback error at step {d}")

                stop = _run_callbacks(config.callbacks, done, state, mean_loss, partial)
                if stop is not None:
                    stop_reason = f"stopped by callback {stop} at step {done}"
                    break
    finally:
        bar.close()
        if prefetch is not None:
            prefetch.close()
    seconds = time.perf_counter() - t0

    num_rejected = int(state.num_rejected)
    if num_rejected:
        warnings.warn(
            f"fit rejected {num_rejected} of {done} steps whose loss or gradient was "
            f"non-finite (first at step {int(state.first_rejected_step)}); parameters were left "
            "unchanged at those steps. A smaller learning rate or a non-centered "
            "parameterization usually helps.",
            RuntimeWarning,
            stacklevel=3,
        )
    if fitter.rules and stop_reason == "num_steps":
        names = ", ".join(getattr(r, "name", type(r).__name__) for r in fitter.rules)
        warnings.warn(
            f"fit reached num_steps={num_steps} before its stopping rule ({names}) said it "
            "converged: the parameters may still be moving (res.converged is False). Raise "
            "num_steps (resume= continues this fit) or look at res.losses.",
            RuntimeWarning,
            stacklevel=3,
        )
    return fitter.result(state, losses[:done], seconds, stop_reason)


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
