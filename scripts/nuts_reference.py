"""Reference posterior moments by long NUTS runs (NumPyro).

Without arguments, writes tests/fixtures/eight_schools_nuts.json: for every latent and
deterministic site, the posterior mean, sd and the Monte Carlo standard error of the mean
(ArviZ, from the bulk effective sample size), for the non-centered model (and the centered
one, with its number of divergences).

With ``--suite``, writes tests/fixtures/posterior_suite/NAME.json for every model of the
posterior-quality suite (:mod:`models.suite`), or for the comma-separated names given: per
latent sample site, flattened, the mean, sd, Monte Carlo standard error of the mean, bulk
ESS and R-hat, from SUITE_CHAINS chains of SUITE_WARMUP + SUITE_SAMPLES steps; for the
targets with known moments (``Target.exact``), the exact moments. Run from the repository
root (long: nice it on a shared machine):

    python scripts/nuts_reference.py
    python scripts/nuts_reference.py --suite [name,name,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import arviz as az
import jax
import numpy as np
import numpyro
from numpyro.infer import MCMC, NUTS

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models import eight_schools  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "eight_schools_nuts.json")
SEED, NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 20261122, 4, 2000, 10000


def reference(model, target_accept_prob: float) -> dict:
    mcmc = MCMC(NUTS(model, target_accept_prob=target_accept_prob), num_warmup=NUM_WARMUP,
                num_samples=NUM_SAMPLES, num_chains=NUM_CHAINS, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(SEED), **eight_schools.data())
    draws = mcmc.get_samples(group_by_chain=True)
    idata = az.from_dict(posterior={k: np.asarray(v) for k, v in draws.items()})
    summary = az.summary(idata, kind="all")
    sites = {}
    for name, v in draws.items():
        v = np.asarray(v).reshape(-1, *v.shape[2:])
        mcse = np.asarray(az.mcse(idata, var_names=[name])[name].values)
        rhat = np.asarray(az.rhat(idata, var_names=[name])[name].values)
        sites[name] = {
            "mean": v.mean(0).tolist(),
            "sd": v.std(0).tolist(),
            "mcse_mean": mcse.tolist(),
            "r_hat_max": float(np.max(rhat)),
        }
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    del summary
    return {"sites": sites, "divergences": divergences}


SUITE_SEED, SUITE_CHAINS, SUITE_WARMUP, SUITE_SAMPLES = 20261130, 4, 1000, 5000


def suite_reference(name: str) -> dict:
    """The reference record of one suite model (exact moments or a long NUTS run)."""
    from models.suite import SUITE

    target = SUITE[name]
    kw = target.data()
    if target.exact is not None:
        sites = {k: {"mean": np.ravel(v["mean"]).tolist(), "sd": np.ravel(v["sd"]).tolist(),
                     "mcse_mean": np.zeros(np.size(v["mean"])).tolist()}
                 for k, v in target.exact().items()}
        return {"meta": {"source": "exact (closed-form moments)", "kind": target.kind},
                "sites": sites}
    t0 = time.perf_counter()
    sampled = target.reference_model or target.model
    kernel = NUTS(sampled, target_accept_prob=target.target_accept,
                  **({} if target.init is None else {
                      "init_strategy": numpyro.infer.init_to_value(values=target.init(kw))}))
    mcmc = MCMC(kernel, num_warmup=SUITE_WARMUP, num_samples=SUITE_SAMPLES,
                num_chains=SUITE_CHAINS, chain_method="sequential", progress_bar=False)
    # NUTS treats a NaN density (the AR(1)'s |phi| >= 1) as a divergence
    with numpyro.validation_enabled(False):
        mcmc.run(jax.random.PRNGKey(SUITE_SEED), extra_fields=("diverging", "num_steps"), **kw)
    seconds = time.perf_counter() - t0
    draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = mcmc.get_extra_fields()
    latent = _latent_names(target.model, kw)
    idata = az.from_dict(posterior={k: draws[k] for k in latent})
    sites = {}
    for k in latent:
        v = draws[k].reshape(SUITE_CHAINS, SUITE_SAMPLES, -1)
        sel = {"var_names": [k]}
        flat = v.reshape(-1, v.shape[-1])
        sites[k] = {
            "mean": flat.mean(0).tolist(),
            "sd": flat.std(0).tolist(),
            "mcse_mean": np.ravel(az.mcse(idata, **sel)[k].values).tolist(),
            "ess_bulk": np.ravel(az.ess(idata, **sel)[k].values).tolist(),
            "r_hat": np.ravel(az.rhat(idata, **sel)[k].values).tolist(),
        }
    chain_means = {k: draws[k].reshape(SUITE_CHAINS, SUITE_SAMPLES, -1).mean(1)[:, 0].tolist()
                   for k in latent}
    return {
        "meta": {
            "source": "numpyro NUTS", "kind": target.kind, "numpyro": numpyro.__version__,
            "seed": SUITE_SEED, "num_chains": SUITE_CHAINS, "num_warmup": SUITE_WARMUP,
            "num_samples_per_chain": SUITE_SAMPLES, "target_accept_prob": target.target_accept,
            "init": "init_to_uniform" if target.init is None else "given (see models.suite)",
            "sampled_model": f"{sampled.__module__}.{sampled.__name__}",
            "divergences": int(np.sum(np.asarray(extra["diverging"]))),
            "mean_tree_steps": float(np.mean(np.asarray(extra["num_steps"]))),
            "r_hat_max": float(max(max(s["r_hat"]) for s in sites.values())),
            "ess_bulk_min": float(min(min(s["ess_bulk"]) for s in sites.values())),
            "seconds": round(seconds, 1),
            "chain_means_first_component": chain_means,
        },
        "sites": sites,
    }


def _latent_names(model, kw) -> list[str]:
    from numpyro import handlers

    with numpyro.validation_enabled(False):
        tr = handlers.trace(handlers.seed(model, 0)).get_trace(**kw)
    return [n for n, s in tr.items() if s["type"] == "sample" and not s.get("is_observed")]


def main_suite(names: list[str] | None) -> None:
    from models.suite import FIXTURES, SUITE

    os.makedirs(FIXTURES, exist_ok=True)
    for name in names or list(SUITE):
        if name not in SUITE:
            raise SystemExit(f"unknown suite model {name!r}; known: {', '.join(SUITE)}")
        rec = suite_reference(name)
        path = os.path.join(FIXTURES, f"{name}.json")
        with open(path, "w") as f:
            json.dump(rec, f, indent=0)
        m = rec["meta"]
        print(f"{name}: {m['source']}", *(f"{k}={m[k]}" for k in (
            "seconds", "divergences", "r_hat_max", "ess_bulk_min") if k in m), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", nargs="?", const="", default=None,
                    help="write the suite's references (all, or these comma-separated names)")
    args = ap.parse_args()
    if args.suite is not None:
        main_suite([n for n in args.suite.split(",") if n] or None)
        return
    out = {
        "meta": {
            "sampler": "numpyro NUTS",
            "numpyro": numpyro.__version__,
            "seed": SEED,
            "num_chains": NUM_CHAINS,
            "num_warmup": NUM_WARMUP,
            "num_samples_per_chain": NUM_SAMPLES,
        },
        "noncentered": reference(eight_schools.noncentered, 0.9),
        "centered": reference(eight_schools.centered, 0.99),
    }
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    for k in ("noncentered", "centered"):
        s = out[k]["sites"]
        print(k, "divergences", out[k]["divergences"],
              {n: (np.round(s[n]["mean"], 2).tolist()) for n in ("mu", "tau")})
    print("wrote", os.path.abspath(OUT))


if __name__ == "__main__":
    main()
