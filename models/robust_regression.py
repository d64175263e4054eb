"""Robust linear regression with Student-t noise of unknown degrees of freedom.

    alpha ~ Normal(0, 10),  beta ~ Normal(0, 10),  sigma ~ HalfCauchy(5)
    nu ~ Gamma(2, 0.1)                                   (Juarez & Steel's prior)
    y_n ~ StudentT(nu, alpha + beta x_n, sigma)          n = 1..N

The posterior of nu is heavy-tailed on the right (a few outliers cannot tell nu = 10 from
nu = 100), and sigma's is skewed: a target for the tails of a variational family.

Data: N = 40 points simulated once with a fixed seed (alpha = 1, beta = 2, sigma = 0.5,
noise Student-t with 3 degrees of freedom).

Reference: Juarez & Steel, "Model-based clustering of non-Gaussian panel data based on skew-t
distributions", J. Bus. Econ. Stat. 2010 (the Gamma(2, 0.1) prior on nu); Gelman et al.,
Bayesian Data Analysis, 3rd ed., chapter 17.
"""

from __future__ import annotations

import numpy as np
import numpyro
import numpyro.distributions as dist

N = 40


def model(x: np.ndarray, y=None) -> None:
    """Student-t regression.

    Args:
        x: covariate, shape [N].
        y: responses, shape [N], or None to simulate them.
    """
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(5.0))
    nu = numpyro.sample("nu", dist.Gamma(2.0, 0.1))
    with numpyro.plate("data", len(x)):
        numpyro.sample("y", dist.StudentT(nu, alpha + beta * x, sigma), obs=y)


def data(seed: int = 4) -> dict:
    """The bundled points: keyword arguments x, y."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, N)
    y = 1.0 + 2.0 * x + 0.5 * rng.standard_t(3.0, N)
    return {"x": x.astype(np.float32), "y": y.astype(np.float32)}
