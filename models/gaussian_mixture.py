"""A one-dimensional Gaussian mixture with discrete assignments.

    w ~ Dirichlet(1_K),   mu_k ~ Normal(0, 10),   sigma ~ LogNormal(0, 1)
    c_n ~ Categorical(w),   x_n ~ Normal(mu_{c_n}, sigma)          n = 1..N

The assignments c_n are discrete latents: the guide below draws them from per-point
categorical distributions, and their gradients need a strategy (``reinforce``, ``mvd``;
``enum`` jointly only for very small N). The data are synthetic, drawn once with a fixed seed
from three well-separated components.

Reference: Bishop, Pattern Recognition and Machine Learning, 2006, chapter 9.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro.distributions import constraints

K = 3
TRUE_LOCS = np.array([-4.0, 0.0, 5.0])
TRUE_SCALE = 1.0


def simulate(n: int = 60, seed: int = 0) -> np.ndarray:
    """N points from the three-component mixture with weights (0.3, 0.3, 0.4)."""
    rng = np.random.default_rng(seed)
    c = rng.choice(K, size=n, p=[0.3, 0.3, 0.4])
    return (TRUE_LOCS[c] + TRUE_SCALE * rng.standard_normal(n)).astype(np.float32)


def model(x: ArrayLike | None = None, n: int | None = None, k: int = K) -> None:
    """w ~ Dir(1); mu_k ~ N(0, 10); sigma ~ LogNormal(0, 1); c_n ~ Cat(w); x_n ~ N(mu_c, sigma).

    Args:
        x: observations [N], or None to simulate (then give ``n``).
        n: number of points when ``x`` is None.
        k: number of components.
    """
    n = x.shape[0] if x is not None else n
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(k)))
    with numpyro.plate("components", k):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("data", n):
        c = numpyro.sample("c", dist.Categorical(w))
        numpyro.sample("x", dist.Normal(mu[c], sigma), obs=x)


def guide(x=None, n: int | None = None, k: int = K) -> None:
    """Mean-field: Dirichlet w, Normal mu, LogNormal sigma, per-point Categorical c_n."""
    n = x.shape[0] if x is not None else n
    conc = numpyro.param("w_conc", jnp.ones(k), constraint=constraints.positive)
    numpyro.sample("w", dist.Dirichlet(conc))
    # spread the initial locations over the data's quantiles (the usual guard against the
    # local optima of mixture likelihoods; Bishop 2006, section 9.2.2)
    init = jnp.linspace(-3.0, 3.0, k) if x is None else jnp.quantile(x, (jnp.arange(k) + 0.5) / k)
    mu_loc = numpyro.param("mu_loc", init)
    mu_scale = numpyro.param("mu_scale", jnp.ones(k), constraint=constraints.positive)
    with numpyro.plate("components", k):
        numpyro.sample("mu", dist.Normal(mu_loc, mu_scale))
    s_loc = numpyro.param("sigma_loc", 0.0)
    s_scale = numpyro.param("sigma_scale", 0.5, constraint=constraints.positive)
    numpyro.sample("sigma", dist.LogNormal(s_loc, s_scale))
    # initial assignments: the responsibilities of the initial locations at unit scale
    logits0 = jnp.zeros((n, k)) if x is None else -0.5 * (x[:, None] - init[None, :]) ** 2
    logits = numpyro.param("c_logits", logits0)
    with numpyro.plate("data", n):
        numpyro.sample("c", dist.Categorical(logits=logits))


def data() -> dict:
    """60 synthetic points."""
    return {"x": simulate()}
