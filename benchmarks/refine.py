"""refine after fit against cold-started NUTS: effective samples per second and time to R-hat.

On eight schools (centered) and Bayesian logistic regression, each method draws 4 chains of
``S`` kept draws:

- ``refine_recipe`` (the headline): the fit docs/exact.md recommends before refine,
  ``vx.fit(vx.reparam.learned_centering(model), guide=AutoMultivariateNormal(...),
  num_steps=F)``, then ``res.refine(num_warmup=200)``: NUTS at the parameterization the fit
  learned (the same posterior), with a dense mass matrix from the full-rank guide;
- ``refine``: fit's defaults, ``vx.fit(model, num_steps=F)`` (the default guide, a
  full-rank Gaussian from the chosen start, on the model as written: F = 3000 steps is below
  the form race's 10 000), then ``res.refine(num_warmup=200)`` (a short window adaptation
  started at the guide's covariance); also ``refine_step_size`` (``adapt="step_size"``: the guide's
  covariance kept, only the step size tuned);
- ``numpyro_nuts``: NumPyro's NUTS with Stan's default warmup of 1000 iterations, chains
  vectorized (``chain_method="vectorized"``; on one CPU device NumPyro's default "parallel"
  runs them one after the other, which was slower here);
- ``blackjax_nuts``: BlackJAX ``window_adaptation`` (1000 iterations) then NUTS, each chain
  started from a prior draw, chains vmapped in one compiled program.

All use NUTS with target acceptance 0.8 and maximum tree depth 10. Measures, per run:

- ``ess``: the smallest bulk effective sample size over every scalar latent component of
  the model as written (for ``refine_recipe``: mu, tau, theta, not the decentered copies);
- ``seconds``: warmup plus sampling, compilation excluded: each method runs once with
  another key before the timed run (NumPyro and BlackJAX then reuse their compiled programs;
  refine compiles its NUTS program ahead of time on every call and reports that apart, and
  its setup, the guide's draws and NumPyro's potential, counts as warmup); for refine the
  fit's time is reported beside it and counted in ``ess_per_second_with_fit``;
- ``ess_per_second`` = ess / seconds (the headline), and with compilation included;
- ``seconds_to_rhat``: warmup time plus the sampling time of the first n draws per chain
  whose largest split R-hat is below 1.01 (draws accrue at a constant rate; n on a grid of
  25), ``inf`` if never;
- ``divergences``; and the largest |difference of posterior means| over components, in
  Monte Carlo standard errors, against NumPyro's NUTS (the same posterior: it stays below 4).

Medians over ``--repeats`` runs with different keys. **Target: refine at least 2x the
effective samples per second of either cold start, with the same posterior.**

Run from the repository root: ``python benchmarks/refine.py [--quick]``.
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
from jax.flatten_util import ravel_pytree  # noqa: E402
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402
from numpyro.infer.autoguide import AutoMultivariateNormal  # noqa: E402
from numpyro.infer.initialization import init_to_sample  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

import vi_ext as vx  # noqa: E402
from benchmarks._report import environment, write  # noqa: E402
from models import eight_schools, logistic_regression  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "refine.json")
MODELS = {
    "eight_schools_centered": (eight_schools.centered, eight_schools.data, 3000),
    "logistic_regression": (logistic_regression.model, logistic_regression.data, 3000),
}
CHAINS = 4


def _flat(by_chain: dict) -> np.ndarray:
    """{site: [chains, draws, ...]} -> [chains, draws, components] (sorted sites)."""
    return np.concatenate([np.asarray(by_chain[k], np.float64).reshape(
        by_chain[k].shape[0], by_chain[k].shape[1], -1) for k in sorted(by_chain)], axis=-1)


def measures(x: np.ndarray, warm: float, sample: float) -> dict:
    """ESS, ESS/s and time to R-hat < 1.01 of draws x [chains, draws, components]."""
    n = x.shape[1]
    ess = float(np.min(effective_sample_size(x)))
    to_rhat = float("inf")
    for m in range(25, n + 1, 25):
        if float(np.max(split_gelman_rubin(x[:, :m]))) < 1.01:
            to_rhat = warm + sample * m / n
            break
    return {"ess": ess, "seconds": warm + sample, "warmup_seconds": warm,
            "sampling_seconds": sample, "ess_per_second": ess / (warm + sample),
            "seconds_to_rhat": to_rhat, "max_rhat": float(np.max(split_gelman_rubin(x)))}


def run_refine(model, kw, fit_steps, seed, samples, adapt, recipe=False, names=None):
    """fit then refine; ``recipe``: fit the model with learned centering and a full-rank
    guide (what docs/exact.md recommends before refine) instead of fit's defaults."""
    guide = None
    if recipe:
        model = vx.reparam.learned_centering(model)
        guide = AutoMultivariateNormal(model)
    t = time.perf_counter()
    res = vx.fit(model, guide=guide, num_steps=fit_steps, key=seed, progress=False, **kw)
    jax.block_until_ready(res.params)
    fit_s = time.perf_counter() - t
    r = res.refine(num_samples=samples, num_chains=CHAINS, num_warmup=200, adapt=adapt,
                   key=seed, progress=False)
    s = r.info.seconds
    # ESS of the model's own latents (with learned centering, not of z_decentered)
    names = names if names is not None else r.problem.sites
    # the guide's draws and NumPyro's potential (setup) are part of refine's warmup cost
    out = measures(_flat({k: v for k, v in r.by_chain.items() if k in names}),
                   s["setup"] + s["warmup"], s["sampling"])
    out.update(fit_seconds=fit_s, compile_seconds=s["compile"],
               ess_per_second_with_fit=out["ess"] / (out["seconds"] + fit_s),
               ess_per_second_with_compile=out["ess"] / (out["seconds"] + s["compile"]),
               divergences=r.info.num_divergent, step_size=r.info.step_size.tolist(),
               warmup_gradient_evals=r.info.gradient_evals["warmup"],
               sampling_gradient_evals=r.info.gradient_evals["sampling"])
    return out, r.by_chain


def run_numpyro(model, kw, seed, samples, names):
    mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=samples, num_chains=CHAINS,
                chain_method="vectorized", progress_bar=False)
    t = time.perf_counter()
    mcmc.warmup(jax.random.PRNGKey(10_000 + seed), **kw)  # compiles warmup
    mcmc.run(mcmc.post_warmup_state.rng_key, **kw)  # compiles sampling
    jax.block_until_ready(mcmc.get_samples())
    first = time.perf_counter() - t
    t = time.perf_counter()
    mcmc.warmup(jax.random.PRNGKey(seed), **kw, extra_fields=("diverging",))
    jax.block_until_ready(mcmc.post_warmup_state)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    mcmc.run(mcmc.post_warmup_state.rng_key, **kw, extra_fields=("diverging",))
    draws = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(draws)
    sample = time.perf_counter() - t
    by_chain = {k: np.asarray(v) for k, v in draws.items() if k in names}
    out = measures(_flat(by_chain), warm, sample)
    out.update(first_run_seconds=first, ess_per_second_with_compile=out["ess"] / first,
               divergences=int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"]))))
    return out, by_chain


def _problem(model, kw):
    with numpyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = initialize_model(jax.random.PRNGKey(0), model, model_kwargs=kw,
                                init_strategy=init_to_sample)
    x0, unravel = ravel_pytree(info.param_info.z)

    def logdensity(x):
        return -info.potential_fn(unravel(x))

    def prior_position(k):
        with numpyro.validation_enabled(False):
            i = initialize_model(k, model, model_kwargs=kw, init_strategy=init_to_sample)
        return ravel_pytree(i.param_info.z)[0]

    return logdensity, prior_position, info.postprocess_fn, unravel


def blackjax_runner(model, kw, samples):
    logdensity, prior_position, postprocess, unravel = _problem(model, kw)

    def chain(key, x0):
        k_warm, k_run = jax.random.split(key)
        warmup = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, params), _ = warmup.run(k_warm, x0, num_steps=1000)
        nuts = blackjax.nuts(logdensity, **params)

        def step(s, k):
            s, info = nuts.step(k, s)
            return s, (s.position, info.is_divergent)

        return state, params, nuts, step, k_run

    def warm(key, x0):
        state, params, _, _, _ = chain(key, x0)
        return state, params

    def sample(key, state, params):
        nuts = blackjax.nuts(logdensity, **params)

        def step(s, k):
            s, info = nuts.step(k, s)
            return s, (s.position, info.is_divergent, info.num_integration_steps)

        return jax.lax.scan(step, state, jax.random.split(key, samples))[1]

    warm_all = jax.jit(jax.vmap(warm))
    sample_all = jax.jit(jax.vmap(sample))

    def run(seed):
        keys = jax.random.split(jax.random.PRNGKey(seed), 2 * CHAINS)
        x0 = jnp.stack([prior_position(k) for k in keys[:CHAINS]])
        t = time.perf_counter()
        state, params = jax.block_until_ready(warm_all(keys[:CHAINS], x0))
        w = time.perf_counter() - t
        t = time.perf_counter()
        xs, div, n_steps = jax.block_until_ready(sample_all(keys[CHAINS:], state, params))
        s = time.perf_counter() - t
        return xs, div, n_steps, w, s

    def go(seed, names):
        t = time.perf_counter()
        run(10_000 + seed)  # compile
        first = time.perf_counter() - t
        xs, div, n_steps, w, s = run(seed)
        by_chain = jax.vmap(jax.vmap(lambda x: postprocess(unravel(x))))(xs)
        by_chain = {k: np.asarray(v) for k, v in by_chain.items() if k in names}
        out = measures(_flat(by_chain), w, s)
        out.update(first_run_seconds=first, ess_per_second_with_compile=out["ess"] / first,
                   divergences=int(np.sum(np.asarray(div))),
                   sampling_gradient_evals=int(np.sum(np.asarray(n_steps))))
        return out, by_chain

    return go


def same_posterior(a: dict, b: dict) -> float:
    """Largest |mean_a - mean_b| over components, in combined Monte Carlo standard errors."""
    xa, xb = _flat(a), _flat(b)

    def mean_se(x):
        sd = x.reshape(-1, x.shape[-1]).std(0)
        return x.mean((0, 1)), sd / np.sqrt(effective_sample_size(x))

    ma, sa = mean_se(xa)
    mb, sb = mean_se(xb)
    return float(np.max(np.abs(ma - mb) / np.hypot(sa, sb)))


def median_row(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {"median": {k: float(np.median([r[k] for r in runs])) for k in keys}, "runs": runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer draws and repeats")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    samples = 300 if args.quick else 1000
    repeats = args.repeats or (1 if args.quick else 3)
    out = {}
    for mname, (model, data_fn, fit_steps) in MODELS.items():
        kw = data_fn()
        bj = blackjax_runner(model, kw, samples)
        rows = {k: [] for k in ("refine_recipe", "refine", "refine_step_size", "numpyro_nuts",
                                "blackjax_nuts")}
        _, warm_draws = run_refine(model, kw, fit_steps, 10_000, samples, "window")  # caches
        names = set(warm_draws)
        run_refine(model, kw, fit_steps, 10_000, samples, "window", recipe=True, names=names)
        for seed in range(repeats):
            rr, draws_rr = run_refine(model, kw, fit_steps, seed, samples, "window",
                                      recipe=True, names=names)
            r, draws_r = run_refine(model, kw, fit_steps, seed, samples, "window")
            rw, draws_w = run_refine(model, kw, fit_steps, seed, samples, "step_size")
            n, draws_n = run_numpyro(model, kw, seed, samples, names)
            b, draws_b = bj(seed, names)
            sites = sorted(names & set(draws_n))
            ref = {k: draws_n[k] for k in sites}
            for row, draws in ((rr, draws_rr), (r, draws_r), (rw, draws_w), (b, draws_b)):
                row["z_vs_numpyro"] = same_posterior({k: draws[k] for k in sites}, ref)
            for k, v in (("refine_recipe", rr), ("refine", r), ("refine_step_size", rw),
                         ("numpyro_nuts", n), ("blackjax_nuts", b)):
                rows[k].append(v)
            print(f"{mname} seed {seed}: " + "  ".join(
                f"{k} {v[-1]['ess_per_second']:.0f} ess/s" for k, v in rows.items()),
                flush=True)
        res = {k: median_row(v) for k, v in rows.items()}
        eps = {k: v["median"]["ess_per_second"] for k, v in res.items()}
        cold = max(eps["numpyro_nuts"], eps["blackjax_nuts"])
        res["ratios"] = {
            "refine_recipe_over_best_cold_start": eps["refine_recipe"] / cold,
            "refine_recipe_with_fit_over_best_cold_start":
                res["refine_recipe"]["median"]["ess_per_second_with_fit"] / cold,
            "refine_over_best_cold_start": eps["refine"] / cold,
            "refine_step_size_over_best_cold_start": eps["refine_step_size"] / cold,
            "refine_with_fit_over_best_cold_start":
                res["refine"]["median"]["ess_per_second_with_fit"] / cold,
        }
        res["target_met"] = bool(eps["refine_recipe"] >= 2 * cold
                                 and res["refine_recipe"]["median"]["z_vs_numpyro"] < 4)
        res["target_met_with_fit_defaults"] = bool(
            eps["refine"] >= 2 * cold and res["refine"]["median"]["z_vs_numpyro"] < 4)
        out[mname] = res
        print(mname, {k: round(v, 1) for k, v in eps.items()}, res["ratios"], flush=True)
    write(RESULTS, {
        "benchmark": "refine",
        "protocol": {"chains": CHAINS, "samples_per_chain": samples, "repeats": repeats,
                     "refine_warmup": 200, "cold_warmup": 1000,
                     "fit_steps": {k: v[2] for k, v in MODELS.items()}},
        "meta": environment(quick=args.quick, blackjax=blackjax.__version__),
        "results": out,
    })


if __name__ == "__main__":
    main()
