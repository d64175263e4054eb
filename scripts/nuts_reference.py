"""Reference posterior moments of eight schools by long NUTS runs (NumPyro).

Writes tests/fixtures/eight_schools_nuts.json: for every latent and deterministic site, the
posterior mean, sd and the Monte Carlo standard error of the mean (ArviZ, from the bulk
effective sample size), for the non-centered model (and the centered one, with its number of
divergences). Run from the repository root:

    python scripts/nuts_reference.py
"""

from __future__ import annotations

import json
import os
import sys

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


def main() -> None:
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
