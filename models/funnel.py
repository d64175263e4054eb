"""Neal's funnel in 10 dimensions (no data: the target is the prior).

    v ~ Normal(0, 3)
    x_i ~ Normal(0, exp(v / 2))        i = 1..9

The scale of x varies over orders of magnitude with v: a narrow neck where v is low and a
wide mouth where it is high. Its moments are known exactly: E v = 0, sd v = 3, E x_i = 0 and
sd x_i = sqrt(E exp(v)) = exp(9 / 4).

Reference: Neal, "Slice sampling", Ann. Statist. 2003.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

D = 9


def model() -> None:
    """v ~ N(0, 3); x ~ N(0, exp(v / 2) I_9)."""
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(jnp.zeros(D), jnp.exp(v / 2.0)).to_event(1))


def exact_moments() -> dict:
    """Exact posterior means and sds of every latent site."""
    return {"v": {"mean": 0.0, "sd": 3.0},
            "x": {"mean": np.zeros(D).tolist(), "sd": np.full(D, np.exp(2.25)).tolist()}}


def data() -> dict:
    """No observations."""
    return {}
