"""Posterior quality of fit's default against NumPyro's AutoNormal + Trace_ELBO, NUTS as truth.

On each model of models/ (eight schools centered and non-centered, logistic regression, the
centered AR(1) time series) both fits run the same number of steps with their defaults as a
new user would call them:

- ``vi_ext``: ``vx.fit(model, num_steps=N, key=seed, **data)``;
- ``numpyro``: ``SVI(model, AutoNormal(model), optax.adam(1e-2), Trace_ELBO()).run(...)``;
- BlackJAX's VI, on the model's unconstrained log density (NumPyro's potential), started at
  the same point as fit's default guide (``init_to_median``), with the same budget of
  gradient evaluations (N steps of one draw each, ``optax.adam(1e-2)``):
  ``blackjax_meanfield_vi`` and ``blackjax_fullrank_vi``; and ``blackjax_pathfinder``, whose
  L-BFGS takes at most 100 iterations (BlackJAX's default is 30) and stops earlier at its own
  convergence test; its gradient evaluations stay far below the budget. (With maxiter = N,
  BlackJAX's pathfinder did not finish in 5 minutes on eight schools: its path arrays grow
  with maxiter.)

The reference is NUTS (NumPyro, 2 chains of 2000 draws after 1000 warmup steps, target accept
0.95). Over every scalar component of every latent sample site, with draws of each guide:

- ``mean_error``: mean over components of |mean_q - mean_ref| / sd_ref;
- ``log_sd_error``: mean over components of |log(sd_q / sd_ref)|.

A fit whose parameters are NaN scores NaN. Each measure is reported per seed and as the mean
over seeds. **Target: never NaN, and errors no larger than NumPyro's on every model** (the
BlackJAX rows are peers for context; the target compares vi_ext with NumPyro).

Run from the repository root: ``python benchmarks/posterior_quality.py [--quick]``.
"""

from __future__ import annotations

import argparse
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
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoNormal  # noqa: E402
from numpyro.infer.initialization import init_to_median  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

import vi_ext as vx  # noqa: E402
from benchmarks._report import environment, write  # noqa: E402
from models import eight_schools, logistic_regression, time_series  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "posterior_quality.json")

MODELS = {
    "eight_schools_centered": (eight_schools.centered, eight_schools.data),
    "eight_schools_noncentered": (eight_schools.noncentered, eight_schools.data),
    "logistic_regression": (logistic_regression.model, logistic_regression.data),
    "time_series_centered_ar1": (time_series.model, time_series.data),
}


def latent_names(model, kw):
    with numpyro.validation_enabled(False):
        tr = handlers.trace(handlers.seed(model, 0)).get_trace(**kw)
    return [n for n, s in tr.items() if s["type"] == "sample" and not s.get("is_observed")]


def nuts_reference(model, kw, quick):
    warm, draws = (300, 500) if quick else (1000, 2000)
    mcmc = MCMC(NUTS(model, target_accept_prob=0.95), num_warmup=warm, num_samples=draws,
                num_chains=2, chain_method="sequential", progress_bar=False)
    with numpyro.validation_enabled(False):  # NUTS treats a NaN density as a divergence
        mcmc.run(jax.random.PRNGKey(2024), **kw)
    extra = mcmc.get_extra_fields()
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
    return samples, int(np.sum(np.asarray(extra["diverging"])))


def errors(draws, ref, names):
    me, lse = [], []
    for n in names:
        q = np.asarray(draws[n], dtype=np.float64).reshape(len(draws[n]), -1)
        r = np.asarray(ref[n], dtype=np.float64).reshape(len(ref[n]), -1)
        sd_ref = r.std(0)
        me.extend(np.abs(q.mean(0) - r.mean(0)) / sd_ref)
        lse.extend(np.abs(np.log(q.std(0) / sd_ref)))
    return float(np.mean(me)), float(np.mean(lse))


def run_vi_ext(model, kw, steps, seed, names):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = vx.fit(model, num_steps=steps, key=seed, progress=False, **kw)
    draws = res.sample(4000, key=seed + 100)
    finite = all(np.all(np.isfinite(np.asarray(v))) for v in res.params.values())
    return draws, finite, {"rejected_steps": res.num_rejected,
                           "warnings": [str(w.message)[:200] for w in caught]}


def run_numpyro(model, kw, steps, seed, names):
    guide = AutoNormal(model)
    svi = SVI(model, guide, optax.adam(1e-2), Trace_ELBO())
    r = svi.run(jax.random.PRNGKey(seed), steps, progress_bar=False, **kw)
    losses = np.asarray(r.losses)
    draws = Predictive(model, guide=guide, params=r.params, num_samples=4000,
                       return_sites=names)(jax.random.PRNGKey(seed + 100), **kw)
    finite = all(np.all(np.isfinite(np.asarray(v))) for v in r.params.values())
    return draws, finite, {"nonfinite_losses": int(np.sum(~np.isfinite(losses))),
                           "first_nonfinite_step": int(np.argmax(~np.isfinite(losses)))
                           if np.any(~np.isfinite(losses)) else None}


def _unconstrained(model, kw, seed):
    with numpyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = initialize_model(jax.random.PRNGKey(seed), model, model_kwargs=kw,
                                init_strategy=init_to_median(num_samples=15))
    x0, unravel = ravel_pytree(info.param_info.z)

    def logdensity(x):
        return -info.potential_fn(unravel(x))

    def constrain(xs):
        return jax.vmap(lambda x: info.postprocess_fn(unravel(x)))(xs)

    return logdensity, x0, constrain


def _blackjax_vi(family):
    def run(model, kw, steps, seed, names):
        logdensity, x0, constrain = _unconstrained(model, kw, seed)
        algo = family(logdensity, optax.adam(1e-2), num_samples=1)
        state = algo.init(x0)

        def step(state, k):
            state, info = algo.step(k, state)
            return state, info.elbo

        state, elbos = jax.jit(lambda s, ks: jax.lax.scan(step, s, ks))(
            state, jax.random.split(jax.random.PRNGKey(seed), steps))
        xs = algo.sample(jax.random.PRNGKey(seed + 100), state, 4000)
        finite = all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(state[:2]))
        draws = constrain(xs) if finite else None
        return draws, finite, {"nonfinite_elbos": int(np.sum(~np.isfinite(np.asarray(elbos))))}

    return run


PATHFINDER_MAXITER = 100


def run_pathfinder(model, kw, steps, seed, names):
    logdensity, x0, constrain = _unconstrained(model, kw, seed)
    state, info = jax.jit(lambda k, x: blackjax.vi.pathfinder.approximate(
        k, logdensity, x, maxiter=PATHFINDER_MAXITER))(jax.random.PRNGKey(seed), x0)
    xs, _ = blackjax.vi.pathfinder.sample(jax.random.PRNGKey(seed + 100), state, 4000)
    finite = bool(jnp.all(jnp.isfinite(xs)))
    used = int(np.sum(np.isfinite(np.asarray(info.path.elbo))))
    return (constrain(xs) if finite else None), finite, {"lbfgs_iterations": used}


PEERS = (("vi_ext", run_vi_ext), ("numpyro", run_numpyro),
         ("blackjax_meanfield_vi", _blackjax_vi(blackjax.meanfield_vi)),
         ("blackjax_fullrank_vi", _blackjax_vi(blackjax.fullrank_vi)),
         ("blackjax_pathfinder", run_pathfinder))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, draws and seeds")
    ap.add_argument("--seeds", type=int, default=None,
                    help="number of seeds (default 5); with --models and --peers, a closer "
                         "look at one comparison, written to posterior_quality_seeds.json")
    ap.add_argument("--models", default=None, help="comma-separated subset of " +
                    ",".join(MODELS))
    ap.add_argument("--peers", default=None, help="comma-separated subset of the peers")
    args = ap.parse_args()
    steps = 1000 if args.quick else 5000
    seeds = [0, 1] if args.quick else list(range(args.seeds or 5))
    models = {k: v for k, v in MODELS.items()
              if args.models is None or k in args.models.split(",")}
    peers = [p for p in PEERS if args.peers is None or p[0] in args.peers.split(",")]
    out = {}
    for mname, (model, data_fn) in models.items():
        kw = data_fn()
        names = latent_names(model, kw)
        t = time.perf_counter()
        ref, divergences = nuts_reference(model, kw, args.quick)
        print(f"{mname}: NUTS {time.perf_counter() - t:.1f} s, {divergences} divergences",
              flush=True)
        rows = {}
        for who, runner in peers:
            per_seed = []
            for seed in seeds:
                t = time.perf_counter()
                try:
                    draws, finite, info = runner(model, kw, steps, seed, names)
                except Exception as e:  # a fit that cannot even start counts as NaN
                    draws, finite = None, False
                    info = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                secs = time.perf_counter() - t
                me, lse = errors(draws, ref, names) if finite else (float("nan"),) * 2
                per_seed.append({"seed": seed, "finite_params": finite, "mean_error": me,
                                 "log_sd_error": lse, "seconds": secs, **info})
            me = [r["mean_error"] for r in per_seed]
            lse = [r["log_sd_error"] for r in per_seed]
            rows[who] = {"mean_error": float(np.mean(me)), "log_sd_error": float(np.mean(lse)),
                         "nan_fits": int(sum(not r["finite_params"] for r in per_seed)),
                         "per_seed": per_seed}
            print(f"  {who:22s} mean_error {rows[who]['mean_error']:.3f}  log_sd_error "
                  f"{rows[who]['log_sd_error']:.3f}  NaN fits {rows[who]['nan_fits']}/"
                  f"{len(seeds)}", flush=True)
        v, n = rows["vi_ext"], rows["numpyro"]
        # paired by seed: the difference of the two errors, with its standard error
        for err in ("mean_error", "log_sd_error"):
            d = np.array([a[err] - b[err] for a, b in zip(v["per_seed"], n["per_seed"],
                                                          strict=True)])
            rows[f"vi_ext_minus_numpyro_{err}"] = {
                "mean": float(np.mean(d)),
                "se": float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None}
        rows["target_met"] = bool(
            v["nan_fits"] == 0
            and (n["nan_fits"] > 0 or (v["mean_error"] <= n["mean_error"]
                                       and v["log_sd_error"] <= n["log_sd_error"])))
        rows["reference"] = {"sampler": "NUTS", "divergences": divergences}
        out[mname] = rows
    result = {
        "benchmark": "posterior_quality",
        "protocol": {"steps": steps, "seeds": seeds, "guide_draws": 4000,
                     "numpyro": "AutoNormal + Trace_ELBO + optax.adam(1e-2)",
                     "vi_ext": "vx.fit defaults",
                     "blackjax": f"{blackjax.__version__}: meanfield_vi / fullrank_vi with "
                                 "optax.adam(1e-2), one draw per step, same number of steps; "
                                 "pathfinder with maxiter = 100"},
        "meta": environment(quick=args.quick),
        "results": out,
    }
    subset = args.seeds is not None or args.models is not None or args.peers is not None
    write(RESULTS.replace(".json", "_seeds.json") if subset else RESULTS, result)


if __name__ == "__main__":
    main()
