"""Bayesian probit regression on the bundled Wisconsin breast-cancer data.

With standardized features x_n in R^30 and labels y_n in {0, 1} (1 = benign):

    alpha ~ Normal(0, 5),  beta_d ~ Normal(0, 1)        d = 1..30
    y_n ~ Bernoulli(Phi(alpha + x_n . beta))            n = 1..569

Phi is the standard normal CDF. The data are those of :mod:`models.logistic_regression`
(models/data/breast_cancer.npz). The probit link's lighter tails make the posterior tighter
and more correlated than the logistic one on the same data.

Reference: Albert & Chib, "Bayesian analysis of binary and polychotomous response data",
JASA 1993; posteriordb's probit regression models.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.stats as jss
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike

from models import logistic_regression


def model(X: ArrayLike, y: ArrayLike | None = None) -> None:
    """Probit regression with a N(0, 5) intercept and N(0, 1) coefficients.

    alpha ~ N(0, 5); beta ~ N(0, I_D); y_n ~ Bernoulli(Phi(alpha + X_n beta)).

    Args:
        X: standardized features, shape [N, D].
        y: labels in {0, 1}, shape [N], or None to simulate them.
    """
    n, d = X.shape
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
    eta = alpha + X @ beta
    # log Phi and log (1 - Phi) in a stable form, as logits of the Bernoulli
    logits = jss.norm.logcdf(eta) - jss.norm.logcdf(-eta)
    with numpyro.plate("data", n):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


def data() -> dict:
    """All 569 rows, features standardized: keyword arguments X, y."""
    return logistic_regression.data()
