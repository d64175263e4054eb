"""A log-Gaussian Cox process on a 1-D grid: Poisson counts with a Gaussian-process log rate.

    m ~ Normal(0, 2),  a ~ LogNormal(0, 0.5)
    f ~ MultivariateNormal(m 1, a^2 K)      K_ij = exp(-(s_i - s_j)^2 / (2 l^2)) + 1e-4 [i=j]
    y_i ~ Poisson(A exp(f_i))               i = 1..N

on N = 40 equal cells s_i of [0, 1] (cell area A = 1 / N, rate per unit length exp(f)) with a
known lengthscale l = 0.15. The GP is written centered, as a user writes it: the amplitude a
and the latent field f form a funnel.

Data: N = 40 counts simulated once with a fixed seed (m = log 200, a = 1).

Reference: Møller, Syversveen & Waagepetersen, "Log Gaussian Cox processes", Scand. J.
Statist. 1998; the Inference Gym's ``SyntheticLogGaussianCoxProcess``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

N = 40
LENGTHSCALE = 0.15
JITTER = 1e-4


def grid(n: int = N) -> np.ndarray:
    """Cell centres s_i of n equal cells of [0, 1]."""
    return ((np.arange(n) + 0.5) / n).astype(np.float32)


def kernel(s: np.ndarray, lengthscale: float = LENGTHSCALE) -> np.ndarray:
    """The squared-exponential Gram matrix with unit amplitude and a small jitter."""
    d = s[:, None] - s[None, :]
    return (np.exp(-0.5 * (d / lengthscale) ** 2) + JITTER * np.eye(len(s))).astype(np.float32)


def model(y=None, n: int = N) -> None:
    """The LGCP on n cells.

    Args:
        y: counts per cell, shape [n], or None to simulate them.
        n: number of cells when y is None.
    """
    n = len(y) if y is not None else n
    chol = jnp.asarray(np.linalg.cholesky(kernel(grid(n))))
    m = numpyro.sample("m", dist.Normal(0.0, 2.0))
    a = numpyro.sample("a", dist.LogNormal(0.0, 0.5))
    f = numpyro.sample("f", dist.MultivariateNormal(m * jnp.ones(n), scale_tril=a * chol))
    numpyro.sample("y", dist.Poisson(jnp.exp(f) / n), obs=y)


def simulate(n: int = N, m: float = float(np.log(200.0)), a: float = 1.0,
             seed: int = 2) -> np.ndarray:
    """Counts y [n] from the model at the given parameters."""
    rng = np.random.default_rng(seed)
    f = m + a * np.linalg.cholesky(kernel(grid(n)).astype(np.float64)) @ rng.normal(size=n)
    return rng.poisson(np.exp(f) / n).astype(np.float32)


def data() -> dict:
    """The bundled counts (simulated with a fixed seed)."""
    return {"y": simulate()}
