"""Posterior quality of vi_ext's fits against NumPyro and BlackJAX, on a reference suite.

The suite (:mod:`models.suite`, 15 posteriors) has reference moments in
tests/fixtures/posterior_suite/, written by ``scripts/nuts_reference.py --suite`` (long NUTS
runs, or exact moments for the targets that have them). Every method below runs on every
model, as a new user would call it, and is scored over every scalar component of every
latent site with 4000 draws of its approximation:

- ``z_error``: mean over components of |mean_q - mean_ref| / sd_ref;
- ``log_sd_error``: mean over components of |log(sd_q / sd_ref)|;
- ``seconds``: wall time of the whole call (compilation and the choice of start included);
- ``grad_evals``: gradients of the log joint (steps x particles, plus L-BFGS iterations);
- ``nan``: the fit raised, or its parameters are not finite;
- ``converged``: the method says it converged (vi_ext: a stopping rule fired before the
  cap; Pathfinder: L-BFGS stopped before maxiter; the others say nothing: False).

Methods:

- ``numpyro_{normal,mvn}_{lr}``: NumPyro's ``AutoNormal`` / ``AutoMultivariateNormal``
  (``init_to_uniform``, its default), ``Trace_ELBO(num_particles=4)``, ``optax.adam(lr)``
  for lr in 1e-3, 3e-3, 1e-2, 3e-2, ``--steps`` steps; ``numpyro_best`` is, per model, the
  run with the lowest z-error over both guides and the four rates (chosen in hindsight);
- ``blackjax_meanfield`` / ``blackjax_fullrank``: BlackJAX's VI on the unconstrained log
  density from NumPyro's ``init_to_uniform``, ``optax.adam(1e-2)``, one draw per step,
  ``--steps`` steps; ``blackjax_pathfinder``: BlackJAX's Pathfinder, maxiter 100;
- ``vi_ext_*``: ``vx.fit`` with candidate defaults passed explicitly (``CANDIDATES``):
  the current default (``vi_ext_current``: median start, Adam 1e-2 annealed over the
  second half, ``--steps`` steps), and the robust start (:mod:`vi_ext.start`) with each
  step-size rule of :mod:`vi_ext.optim`, and with the statistical stopping rule.

``--trajectories`` also records, for seed 0, the error at several points of each run
(against wall time), for the docs' error-against-time figure.

Run from the repository root (long; nice it on a shared machine):
``python benchmarks/posterior_quality.py [--models a,b] [--methods x,y] [--seeds 0,1]``.
Results are merged into benchmarks/results/posterior_quality.json model by model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import blackjax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from numpyro import handlers  # noqa: E402
from numpyro.infer import SVI, Predictive, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal  # noqa: E402
from numpyro.infer.initialization import init_to_median, init_to_uniform  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

import vi_ext as vx  # noqa: E402
from benchmarks._report import environment  # noqa: E402
from models.suite import SUITE, reference  # noqa: E402
from vi_ext import optim as vxo  # noqa: E402
from vi_ext import stopping as vxs  # noqa: E402
from vi_ext.params import constrain  # noqa: E402
from vi_ext.start import choose_start  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "posterior_quality.json")
DEFAULT_DRAWS = 4000
NUM_DRAWS = DEFAULT_DRAWS  # draws per fit for the z-error (--draws)
CAP = 20000  # vi_ext's step cap where a stopping rule decides
LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2)
PATHFINDER_MAXITER = 100


# ----------------------------------------------------------------------------- scoring

def latent_names(model, kw):
    with numpyro.validation_enabled(False):
        tr = handlers.trace(handlers.seed(model, 0)).get_trace(**kw)
    return [n for n, s in tr.items() if s["type"] == "sample" and not s.get("is_observed")]


def errors(draws, ref_sites, names):
    """(z_error, log_sd_error) of draws {site: [S, ...]} against the reference moments."""
    ze, lse = [], []
    for n in names:
        q = np.asarray(draws[n], dtype=np.float64).reshape(len(draws[n]), -1)
        m = np.asarray(ref_sites[n]["mean"], dtype=np.float64).ravel()
        sd = np.asarray(ref_sites[n]["sd"], dtype=np.float64).ravel()
        ze.extend(np.abs(q.mean(0) - m) / sd)
        lse.extend(np.abs(np.log(q.std(0) / sd)))
    out = float(np.mean(ze)), float(np.mean(lse))
    return out if all(np.isfinite(out)) else (float("nan"), float("nan"))


def finite_tree(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------- vi_ext

class Checkpoints:
    """A fit callback that keeps the unconstrained params (and wall time) at a few steps."""

    def __init__(self, offset=0.0):
        self.t0 = time.perf_counter() - offset
        self.points = []

    def __call__(self, step, state, loss):
        self.points.append((time.perf_counter() - self.t0, step,
                            jax.tree.map(np.asarray, state.params),
                            jax.tree.map(np.asarray, vxo.averaged_params(state.opt_state))))


_STARTS = {}


def cached_start(model, kw, seed):
    """choose_start once per (model, seed): every candidate that uses it is charged its
    time and gradients, but the benchmark computes it once."""
    key = (model.__module__, model.__name__, seed)
    if key not in _STARTS:
        _STARTS[key] = choose_start(model, key=seed, **kw)
    return _STARTS[key]


def _vi_ext(optimizer_fn=None, start=True, stopping_fn=None, particles=1,
            use_average=False, schedule_free=False, guide_cls=None, before=False):
    """A vi_ext candidate: ``optimizer_fn(num_steps)``, the robust start or fit's own, a
    stopping rule (then the cap is CAP), the final iterate or the average."""

    def run(model, kw, seed, num_steps, names, trajectory):
        t0 = time.perf_counter()
        cap = CAP if stopping_fn is not None else num_steps
        args = {}
        info = {}
        offset = 0.0
        if start:
            s = cached_start(model, kw, seed)
            offset = s.seconds
            if guide_cls is None:
                args["init_params"] = s.autonormal_params()
            else:
                args["guide"] = guide_cls(model, init_loc_fn=s.init_loc_fn())
            info.update(start=s.name, start_seconds=round(s.seconds, 2),
                        start_grad_evals=s.gradient_evaluations,
                        start_density_evals=s.density_evaluations,
                        start_scores={k: round(v, 2) for k, v in s.scores.items()})
        if optimizer_fn is not None:
            args["optimizer"] = optimizer_fn(cap)
        # the candidates were measured with these (fit's defaults then), not fit's defaults now
        args["stopping"] = stopping_fn() if stopping_fn is not None else None
        args["objective"] = vx.objectives.elbo(particles)
        if before:
            b = _before(cap)
            args.update(guide=b["guide_fn"](model), objective=b["objective"],
                        optimizer=b["optimizer"], stopping=None)
        elif "guide" not in args:
            args["guide"] = AutoNormal(model, init_loc_fn=init_to_median(num_samples=15))
        if "optimizer" not in args:
            args["optimizer"] = vxo.default_optimizer(cap)
        cb = None
        if trajectory:
            cb = Checkpoints(offset)
            args.update(callbacks=[cb], callback_every=max(1, cap // 40))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = vx.fit(model, num_steps=cap, key=seed, progress=False, **args, **kw)
        secs = time.perf_counter() - t0 + offset
        steps_taken = len(res.losses)
        final = res
        if use_average or schedule_free:
            final = _with_params(res, res.state.params, res.state.opt_state, use_average,
                                 schedule_free)
        draws = final.sample(NUM_DRAWS, key=seed + 100)
        info.update(steps=steps_taken, stop_reason=res.stop_reason,
                    rejected_steps=res.num_rejected,
                    warnings=[str(w.message)[:160] for w in caught][:3])
        traj = []
        if cb is not None:
            for t, step, u, avg in cb.points[::4] + cb.points[-1:]:
                p = _with_params(res, u, None, False, False, avg if use_average else None)
                traj.append((t, step, p))
        return dict(draws=draws, finite=finite_tree(final.params), seconds=secs,
                    grad_evals=steps_taken * particles + info.get("start_grad_evals", 0),
                    converged=res.stop_reason.startswith("converged"), info=info,
                    trajectory=[(t, s, lambda p=p: p.sample(1000, key=7)) for t, s, p in traj])

    return run


def _with_params(res, u, opt_state, use_average, schedule_free, average=None):
    """res with its params replaced by the average (or schedule-free's evaluation point)."""
    if average is None and use_average:
        average = vxo.averaged_params(opt_state)
    if schedule_free and opt_state is not None:
        average = optax.contrib.schedule_free_eval_params(_schedule_free_state(opt_state), u)
    u = average if average is not None else u
    return dataclasses.replace(res, params=constrain(jax.tree.map(jnp.asarray, u),
                                                     res.constraints))


def _schedule_free_state(opt_state):
    found = []
    jax.tree.map(lambda x: found.append(x) if isinstance(x, optax.contrib.ScheduleFreeState)
                 and not found else None, opt_state,
                 is_leaf=lambda x: isinstance(x, optax.contrib.ScheduleFreeState))
    return found[0]


def run_default(model, kw, seed, num_steps, names, trajectory, wrap=None):
    """``vx.fit(model, **data)``: every default (the start, the guide family, the objective,
    the optimizer, the stopping rule and its cap), the key excepted. ``wrap``: a model
    transformation applied first (the fit's time includes nothing more)."""
    t0 = time.perf_counter()
    if wrap is not None:
        model = wrap(model)
    cb = Checkpoints() if trajectory else None
    args = dict(callbacks=[cb], callback_every=CAP // 40) if trajectory else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = vx.fit(model, key=seed, progress=False, **args, **kw)
    secs = time.perf_counter() - t0
    draws = res.sample(NUM_DRAWS, key=seed + 100)
    s = res.start
    particles = res.objective.num_particles
    info = dict(steps=len(res.losses), stop_reason=res.stop_reason,
                rejected_steps=res.num_rejected, guide=type(res.guide).__name__,
                warnings=[str(w.message)[:160] for w in caught][:3])
    if s is not None:
        info.update(start=s.name, noncentered=list(s.noncentered), start_reason=s.reason[:600],
                    start_seconds=round(s.seconds, 2),
                    start_grad_evals=s.gradient_evaluations,
                    start_scores={k: round(v, 2) for k, v in s.scores.items()})
    traj = []
    if cb is not None:
        for t, step, _, avg in cb.points[::4] + cb.points[-1:]:
            traj.append((t, step, _with_params(res, None, None, False, False, avg)))
    return dict(draws=draws, finite=finite_tree(res.params), seconds=secs,
                grad_evals=len(res.losses) * particles + info.get("start_grad_evals", 0),
                converged=res.converged, info=info,
                trajectory=[(t, st, lambda p=p: p.sample(1000, key=7)) for t, st, p in traj])


def _before(n):
    """The defaults before they were measured on this suite: AutoNormal at the prior
    medians, the ELBO with one particle, Adam 1e-2 annealed over the second half of
    ``n`` steps, no stopping rule."""
    return dict(guide_fn=lambda m: AutoNormal(m, init_loc_fn=init_to_median(num_samples=15)),
                objective="elbo", optimizer=vxo.default_optimizer(n), stopping=None)


def _stationary():
    return vxs.Stationary(events=5)


def _prodigy_annealed(n):
    return optax.contrib.prodigy(learning_rate=vxo.annealed_schedule(n, 1.0))


CANDIDATES = {
    # what vx.fit(model, **data) does
    "vi_ext_default": run_default,
    # the defaults on the model with a learned centering of each location-scale latent
    "vi_ext_default_vip": lambda *a: run_default(*a, wrap=vx.reparam.learned_centering),
    # what it did before (a fixed budget of --steps)
    "vi_ext_current": _vi_ext(start=False, before=True),
    # the robust start with each step-size rule, a fixed budget of --steps
    "vi_ext_start_annealed": _vi_ext(start=True),
    "vi_ext_start_cyclical": _vi_ext(lambda n: vxo.cyclical_adam(n)),
    "vi_ext_start_innaprop": _vi_ext(lambda n: vxo.innaprop(vxo.annealed_schedule(n))),
    "vi_ext_start_prodigy_annealed": _vi_ext(_prodigy_annealed),
    # fit passes the loss to optimizers that take it (optax's value= extra argument)
    "vi_ext_start_sps_slack": _vi_ext(lambda n: vxo.sps_slack()),
    # candidate defaults: robust start, statistical annealing, averaging, stopping
    "vi_ext_auto_adam": _vi_ext(lambda n: vxo.plateau_adam(), stopping_fn=_stationary,
                                use_average=True),
    "vi_ext_auto_prodigy": _vi_ext(lambda n: vxo.plateau(optax.contrib.prodigy()),
                                   stopping_fn=_stationary, use_average=True),
    # the same with a full-rank Gaussian guide started at the chosen locations, with Prodigy
    # or with Adam at 1e-2 inside the plateau cuts
    "vi_ext_auto_mvn": _vi_ext(lambda n: vxo.plateau(optax.contrib.prodigy()),
                               stopping_fn=_stationary, use_average=True,
                               guide_cls=AutoMultivariateNormal),
    "vi_ext_auto_mvn_adam": _vi_ext(lambda n: vxo.plateau_adam(), stopping_fn=_stationary,
                                    use_average=True, guide_cls=AutoMultivariateNormal),
    # the full-rank Adam candidate with a larger first step and / or 4 particles (what
    # decided the default objective: 4 particles, Adam 1e-2)
    "vi_ext_auto_mvn_adam_3e-2": _vi_ext(lambda n: vxo.plateau_adam(3e-2),
                                         stopping_fn=_stationary, use_average=True,
                                         guide_cls=AutoMultivariateNormal),
    "vi_ext_auto_mvn_adam_p4": _vi_ext(lambda n: vxo.plateau_adam(), stopping_fn=_stationary,
                                       use_average=True, guide_cls=AutoMultivariateNormal,
                                       particles=4),
    "vi_ext_auto_mvn_adam_3e-2_p4": _vi_ext(lambda n: vxo.plateau_adam(3e-2),
                                            stopping_fn=_stationary, use_average=True,
                                            guide_cls=AutoMultivariateNormal, particles=4),
}


# ----------------------------------------------------------------------------- peers

def _numpyro(guide_cls, lr):
    def run(model, kw, seed, num_steps, names, trajectory):
        t0 = time.perf_counter()
        guide = guide_cls(model, init_loc_fn=init_to_uniform)
        svi = SVI(model, guide, optax.adam(lr), Trace_ELBO(num_particles=4))
        points = []
        segments = 4 if trajectory else 1
        seg = num_steps // segments
        state = svi.init(jax.random.PRNGKey(seed), **kw)

        def body(st, _):
            st, loss = svi.update(st, **kw)
            return st, loss

        # SVI.run's loop, compiled once and called per segment
        run_seg = jax.jit(lambda st: jax.lax.scan(body, st, None, length=seg))
        losses = []
        for i in range(segments):
            state, ls = run_seg(state)
            losses.append(np.asarray(ls))
            points.append((time.perf_counter() - t0, seg * (i + 1), svi.get_params(state)))
        secs = time.perf_counter() - t0
        params = svi.get_params(state)

        def draws(p, n, key):
            return Predictive(model, guide=guide, params=p, num_samples=n,
                              return_sites=names)(jax.random.PRNGKey(key), **kw)

        losses = np.concatenate(losses)
        return dict(draws=draws(params, NUM_DRAWS, seed + 100), finite=finite_tree(params),
                    seconds=secs, grad_evals=4 * seg * segments, converged=False,
                    info={"nonfinite_losses": int(np.sum(~np.isfinite(losses)))},
                    trajectory=[(t, s, lambda p=p: draws(p, 1000, 7)) for t, s, p in points]
                    if trajectory else [])

    return run


def _unconstrained(model, kw, seed):
    with numpyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = initialize_model(jax.random.PRNGKey(seed), model, model_kwargs=kw,
                                init_strategy=init_to_uniform)
    x0, unravel = ravel_pytree(info.param_info.z)

    def logdensity(x):
        return -info.potential_fn(unravel(x))

    def constrain_draws(xs):
        return jax.vmap(lambda x: info.postprocess_fn(unravel(x)))(xs)

    return logdensity, x0, constrain_draws


def _blackjax_vi(family):
    def run(model, kw, seed, num_steps, names, trajectory):
        t0 = time.perf_counter()
        logdensity, x0, constrain_draws = _unconstrained(model, kw, seed)
        algo = family(logdensity, optax.adam(1e-2), num_samples=1)
        state = algo.init(x0)

        def step(state, k):
            state, info = algo.step(k, state)
            return state, info.elbo

        run_n = jax.jit(lambda s, ks: jax.lax.scan(step, s, ks))
        keys = jax.random.split(jax.random.PRNGKey(seed), num_steps)
        segments = 4 if trajectory else 1
        points, done = [], 0
        for i in range(segments):
            n = num_steps * (i + 1) // segments
            state, _ = run_n(state, keys[done:n])
            done = n
            jax.block_until_ready(state)
            points.append((time.perf_counter() - t0, done, state))
        secs = time.perf_counter() - t0
        finite = finite_tree(state[:2])

        def draws(st, n, key):
            return constrain_draws(algo.sample(jax.random.PRNGKey(key), st, n))

        return dict(draws=draws(state, NUM_DRAWS, seed + 100) if finite else None,
                    finite=finite, seconds=secs, grad_evals=num_steps, converged=False,
                    info={}, trajectory=[(t, s, lambda st=st: draws(st, 1000, 7))
                                         for t, s, st in points] if trajectory else [])

    return run


def run_pathfinder(model, kw, seed, num_steps, names, trajectory):
    t0 = time.perf_counter()
    logdensity, x0, constrain_draws = _unconstrained(model, kw, seed)
    state, info = jax.jit(lambda k, x: blackjax.vi.pathfinder.approximate(
        k, logdensity, x, maxiter=PATHFINDER_MAXITER))(jax.random.PRNGKey(seed), x0)
    xs, _ = blackjax.vi.pathfinder.sample(jax.random.PRNGKey(seed + 100), state, NUM_DRAWS)
    jax.block_until_ready(xs)
    secs = time.perf_counter() - t0
    finite = bool(jnp.all(jnp.isfinite(xs)))
    iters = int(np.sum(np.isfinite(np.asarray(info.path.elbo))))
    draws = constrain_draws(xs) if finite else None
    return dict(draws=draws, finite=finite, seconds=secs, grad_evals=iters,
                converged=iters < PATHFINDER_MAXITER, info={"lbfgs_iterations": iters},
                trajectory=[(secs, iters, lambda: draws)] if trajectory and finite else [])


PEERS = {
    **{f"numpyro_normal_{lr:g}": _numpyro(AutoNormal, lr) for lr in LEARNING_RATES},
    **{f"numpyro_mvn_{lr:g}": _numpyro(AutoMultivariateNormal, lr) for lr in LEARNING_RATES},
    "blackjax_meanfield": _blackjax_vi(blackjax.meanfield_vi),
    "blackjax_fullrank": _blackjax_vi(blackjax.fullrank_vi),
    "blackjax_pathfinder": run_pathfinder,
}
METHODS = {**CANDIDATES, **PEERS}


# ----------------------------------------------------------------------------- driver

def run_one(method, runner, target, kw, ref, names, seed, steps, trajectory):
    try:
        out = runner(target.model, kw, seed, steps, names, trajectory)
    except Exception as e:  # a fit that cannot even run counts as NaN
        return {"seed": seed, "nan": True, "z_error": float("nan"),
                "log_sd_error": float("nan"), "seconds": float("nan"), "grad_evals": None,
                "converged": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    ze, lse = errors(out["draws"], ref, names) if out["finite"] else (float("nan"),) * 2
    row = {"seed": seed, "nan": not out["finite"] or not np.isfinite(ze), "z_error": ze,
           "log_sd_error": lse, "seconds": round(out["seconds"], 2),
           "grad_evals": out["grad_evals"], "converged": bool(out["converged"]), **out["info"]}
    if trajectory:
        row["trajectory"] = [(round(t, 2), s, *errors(f(), ref, names))
                             for t, s, f in out["trajectory"]]
    return row


def summarize(rows):
    keys = ("z_error", "log_sd_error", "seconds", "grad_evals")
    out = {k: float(np.mean([r[k] for r in rows])) if all(r[k] is not None for r in rows)
           else None for k in keys}
    out["nan"] = int(sum(r["nan"] for r in rows))
    out["converged"] = int(sum(r["converged"] for r in rows))
    out["runs"] = len(rows)
    return out


FIGURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                      "assets", "posterior_quality.png")
PLOTTED = {"vi_ext_default": ("vx.fit(model, **data)", "tab:red", "-"),
           "vi_ext_current": ("vi_ext before", "tab:gray", "--"),
           "numpyro_normal_best": ("NumPyro AutoNormal (best lr)", "tab:blue", "-"),
           "numpyro_mvn_best": ("NumPyro AutoMVN (best lr)", "tab:cyan", "-"),
           "blackjax_meanfield": ("BlackJAX mean-field", "tab:green", ":"),
           "blackjax_fullrank": ("BlackJAX full-rank", "tab:olive", ":"),
           "blackjax_pathfinder": ("BlackJAX Pathfinder", "tab:purple", "")}


def plot(result, path=FIGURE):
    """One panel per model: z-error against wall time (seed 0's trajectories)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(result["results"])
    cols = 4
    rows = (len(models) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.1 * rows), squeeze=False)
    for ax, m in zip(axes.ravel(), models, strict=False):
        methods = result["results"][m]["methods"]
        for guide in ("normal", "mvn"):
            runs = {k: v for k, v in methods.items() if k.startswith(f"numpyro_{guide}_")
                    and v["z_error"] == v["z_error"]}
            if runs:
                methods = {**methods, f"numpyro_{guide}_best":
                           runs[min(runs, key=lambda k: runs[k]["z_error"])]}
        for who, (label, colour, style) in PLOTTED.items():
            if who not in methods:
                continue
            traj = methods[who]["per_seed"][0].get("trajectory") or []
            pts = [(t, z) for t, _, z, _ in traj if z == z]
            if not pts:
                continue
            t, z = zip(*pts, strict=True)
            if style:
                ax.plot(t, z, style, color=colour, label=label, marker=".", ms=3)
            else:
                ax.plot(t, z, "*", color=colour, label=label, ms=9)
        ax.set_title(m, fontsize=9)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(models):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("z-error of the means", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("wall time (s, log)", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=8, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=80)
    print("wrote", path)


def table(result, methods=("vi_ext_current", "vi_ext_auto_prodigy", "vi_ext_auto_mvn",
                          "vi_ext_auto_mvn_adam")) -> str:
    """A markdown table: per model, ``methods`` and the best NumPyro and BlackJAX runs."""
    lines = ["| model | method | z-error | log-sd error | seconds | grad evals | NaN | "
             "converged |", "|---|---|---|---|---|---|---|---|"]
    for m, rows in result["results"].items():
        meth = rows["methods"]
        shown = [k for k in methods if k in meth]
        for prefix in ("numpyro_normal_", "numpyro_mvn_", "blackjax_"):
            runs = {k: v for k, v in meth.items() if k.startswith(prefix)
                    and v["z_error"] == v["z_error"]}
            if runs:
                shown.append(min(runs, key=lambda k: runs[k]["z_error"]))
        for k in shown:
            v = meth[k]
            ge = f"{v['grad_evals']:.0f}" if v["grad_evals"] is not None else "-"
            lines.append(f"| {m} | {k} | {v['z_error']:.3f} | {v['log_sd_error']:.3f} | "
                         f"{v['seconds']:.1f} | {ge} | {v['nan']} | {v['converged']}/"
                         f"{v['runs']} |")
    return "\n".join(lines)


def _cell(v):
    if v is None or v["z_error"] != v["z_error"]:
        return "NaN"
    conv = "conv" if v["converged"] == v["runs"] else "cap"
    return (f"{v['z_error']:.3f} / {v['log_sd_error']:.3f} / {v['seconds']:.0f} s "
            f"({conv})")


def default_table(result) -> str:
    """The docs' table: per model, ``vx.fit(model, **data)`` against the bar (the best of
    NumPyro's eight runs, both guides at four learning rates, chosen in hindsight), the
    defaults before, and BlackJAX's best; bold where the default is at the bar or better."""
    lines = ["| model | vi_ext default | bar: NumPyro best (guide, lr) | vi_ext before | "
             "BlackJAX best |", "|---|---|---|---|---|"]
    wins = 0
    rows = result["results"]
    for m, r in rows.items():
        meth = r["methods"]
        d = meth.get("vi_ext_default")
        npy = {k: v for k, v in meth.items() if k.startswith("numpyro_")
               and v["z_error"] == v["z_error"]}
        bj = {k: v for k, v in meth.items() if k.startswith("blackjax_")
              and v["z_error"] == v["z_error"]}
        best = min(npy, key=lambda k: npy[k]["z_error"]) if npy else None
        bjb = min(bj, key=lambda k: bj[k]["z_error"]) if bj else None
        ok = d is not None and d["z_error"] == d["z_error"] and (
            best is None or d["z_error"] <= npy[best]["z_error"])
        wins += ok
        cell = _cell(d)
        bar = (f"{_cell(npy[best])} {best.replace('numpyro_', '').replace('_', ' ')}"
               if best else "all NaN")
        lines.append(f"| {m} | {'**' + cell + '**' if ok else cell} | {bar} | "
                     f"{_cell(meth.get('vi_ext_current'))} | "
                     f"{_cell(bj[bjb]) + ' ' + bjb.replace('blackjax_', '') if bjb else 'NaN'} |")
    lines.append("")
    lines.append(f"vx.fit(model, **data) at the bar or better on {wins} of {len(rows)} models.")
    return "\n".join(lines)


def main():
    global NUM_DRAWS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=None, help="comma-separated subset of the suite")
    ap.add_argument("--methods", default=None, help="comma-separated subset of " +
                    ",".join(METHODS))
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    ap.add_argument("--steps", type=int, default=5000, help="steps of the fixed-budget runs")
    ap.add_argument("--trajectories", action="store_true",
                    help="record error against time for seed 0")
    ap.add_argument("--draws", type=int, default=DEFAULT_DRAWS,
                    help="draws per fit for the z-error (its Monte Carlo floor is about "
                         "0.8 / sqrt(draws): 0.013 at 4000)")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--plot", action="store_true",
                    help="only draw docs/assets/posterior_quality.png from --out")
    args = ap.parse_args()
    if args.plot:
        with open(args.out) as f:
            result = json.load(f)
        plot(result)
        print(table(result))
        print(default_table(result))
        return
    models = [m for m in SUITE if args.models is None or m in args.models.split(",")]
    methods = {k: v for k, v in METHODS.items()
               if args.methods is None or k in args.methods.split(",")}
    seeds = [int(s) for s in args.seeds.split(",")]
    NUM_DRAWS = args.draws
    try:
        with open(args.out) as f:
            result = json.load(f)
        if result.get("benchmark") != "posterior_quality_suite":
            raise ValueError
    except (OSError, ValueError):
        result = {"benchmark": "posterior_quality_suite", "results": {}}
    result["protocol"] = {
        "steps": args.steps, "vi_ext_cap": CAP, "draws": NUM_DRAWS,
        "numpyro": "AutoNormal / AutoMultivariateNormal (init_to_uniform) + "
                   "Trace_ELBO(num_particles=4) + optax.adam(lr)",
        "blackjax": f"{blackjax.__version__}: meanfield_vi / fullrank_vi, optax.adam(1e-2), "
                    f"one draw per step; pathfinder maxiter {PATHFINDER_MAXITER}",
        "reference": "tests/fixtures/posterior_suite (scripts/nuts_reference.py --suite)"}
    result["meta"] = environment()
    for mname in models:
        target = SUITE[mname]
        kw = target.data()
        names = latent_names(target.model, kw)
        ref = reference(mname)["sites"]
        rows = result["results"].setdefault(mname, {"kind": target.kind, "methods": {}})
        for who, runner in methods.items():
            per_seed = [run_one(who, runner, target, kw, ref, names, seed, args.steps,
                                args.trajectories and seed == seeds[0]) for seed in seeds]
            rows["methods"][who] = {**summarize(per_seed), "per_seed": per_seed}
            s = rows["methods"][who]
            print(f"{mname:32s} {who:28s} z {s['z_error']:.3f}  log-sd {s['log_sd_error']:.3f}"
                  f"  {s['seconds']:.1f} s  NaN {s['nan']}  conv {s['converged']}/"
                  f"{len(seeds)}", flush=True)
        numpyro_rows = {k: v for k, v in rows["methods"].items() if k.startswith("numpyro_")
                        and np.isfinite(v["z_error"])}
        if numpyro_rows:
            best = min(numpyro_rows, key=lambda k: numpyro_rows[k]["z_error"])
            rows["numpyro_best"] = {"method": best, **{k: numpyro_rows[best][k] for k in (
                "z_error", "log_sd_error", "seconds")}}
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
