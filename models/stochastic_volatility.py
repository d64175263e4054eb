"""A stochastic-volatility model of daily returns, as Stan's user guide writes it.

    mu ~ Cauchy(0, 10),  phi ~ Uniform(-1, 1),  sigma ~ HalfCauchy(5)
    h_std_t ~ Normal(0, 1)                                      t = 1..T
    h_1 = mu + sigma h_std_1 / sqrt(1 - phi^2)
    h_t = mu + phi (h_{t-1} - mu) + sigma h_std_t               t = 2..T   (non-centered)
    y_t ~ Normal(0, exp(h_t / 2))

h_t is the log variance of the return on day t, an AR(1) around mu with persistence phi.

Data: T = 100 returns simulated once with a fixed seed (mu = -1, phi = 0.95, sigma = 0.25).

Reference: Kim, Shephard & Chib, "Stochastic volatility: likelihood inference and
comparison with ARCH models", Rev. Econ. Stud. 1998; Stan User's Guide, "Stochastic
volatility models"; the Inference Gym's ``StochasticVolatility``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

T = 100


def model(y=None, n: int = T) -> None:
    """Stochastic volatility, non-centered log variances.

    Args:
        y: returns, shape [T], or None to simulate them.
        n: T when y is None.
    """
    n = len(y) if y is not None else n
    mu = numpyro.sample("mu", dist.Cauchy(0.0, 10.0))
    phi = numpyro.sample("phi", dist.Uniform(-1.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(5.0))
    h_std = numpyro.sample("h_std", dist.Normal(jnp.zeros(n), 1.0).to_event(1))
    eps = sigma * h_std
    first = eps[0] / jnp.sqrt(1.0 - phi**2)

    def step(prev, e):
        cur = phi * prev + e
        return cur, cur

    _, rest = jax.lax.scan(step, first, eps[1:])
    h = numpyro.deterministic("h", mu + jnp.concatenate([first[None], rest]))
    numpyro.sample("y", dist.Normal(0.0, jnp.exp(h / 2.0)), obs=y)


def simulate(n: int = T, mu: float = -1.0, phi: float = 0.95, sigma: float = 0.25,
             seed: int = 1) -> np.ndarray:
    """Returns y [n] from the model at the given parameters."""
    rng = np.random.default_rng(seed)
    h = np.empty(n)
    h[0] = mu + sigma * rng.normal() / np.sqrt(1.0 - phi**2)
    for t in range(1, n):
        h[t] = mu + phi * (h[t - 1] - mu) + sigma * rng.normal()
    return (np.exp(h / 2.0) * rng.normal(size=n)).astype(np.float32)


def data() -> dict:
    """The bundled returns (simulated with a fixed seed)."""
    return {"y": simulate()}
