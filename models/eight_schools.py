"""Rubin's eight schools: a hierarchical normal model.

Eight schools ran a coaching programme for the SAT; y_j is the estimated effect in school j
and sigma_j its standard error. Effects are partially pooled towards a common mean mu with
spread tau:

    mu ~ Normal(0, 5),  tau ~ HalfCauchy(5)
    theta_j ~ Normal(mu, tau)                      j = 1..8
    y_j ~ Normal(theta_j, sigma_j)

The centered form samples theta directly and has a funnel between tau and theta that
troubles both MCMC and VI; the non-centered form samples theta_tilde_j ~ Normal(0, 1) and sets
theta_j = mu + tau * theta_tilde_j.

The ``*_wide`` variants are the Inference Gym's (mu ~ N(0, 10), log_tau ~ N(5, 1)): the
prior puts the group scale two orders of magnitude above where the data put it.

Reference: Rubin, "Estimation in parallel randomized experiments", J. Educational
Statistics, 1981; Gelman et al., Bayesian Data Analysis, 3rd ed., section 5.5; Sountsov,
Radul et al., "Inference Gym", 2020 (``EightSchools``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def centered(J: int, sigma: ArrayLike, y: ArrayLike | None = None) -> None:
    """Centered eight schools.

    mu ~ N(0, 5); tau ~ HalfCauchy(5); theta_j ~ N(mu, tau); y_j ~ N(theta_j, sigma_j).

    Args:
        J: number of schools.
        sigma: standard errors, shape [J].
        y: observed effects, shape [J], or None to simulate them.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def noncentered(J: int, sigma: ArrayLike, y: ArrayLike | None = None) -> None:
    """Non-centered eight schools.

    mu ~ N(0, 5); tau ~ HalfCauchy(5); theta_tilde_j ~ N(0, 1);
    theta_j = mu + tau * theta_tilde_j (deterministic); y_j ~ N(theta_j, sigma_j).

    Args:
        J: number of schools.
        sigma: standard errors, shape [J].
        y: observed effects, shape [J], or None to simulate them.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


model = noncentered


def data() -> dict:
    """The eight schools data as keyword arguments: J, sigma, y."""
    return {"J": 8, "sigma": SIGMA.copy(), "y": Y.copy()}


def centered_wide(J: int, sigma: ArrayLike, y: ArrayLike | None = None) -> None:
    """Centered eight schools with the wide priors of the Inference Gym.

    mu ~ N(0, 10); log_tau ~ N(5, 1), tau = exp(log_tau); theta_j ~ N(mu, tau);
    y_j ~ N(theta_j, sigma_j).

    The prior puts tau near e^5 ~ 150 while the data want it below 10: a fit started at the
    prior median (log_tau = 5) begins far from the posterior, in the wide mouth of the funnel.

    Args:
        J: number of schools.
        sigma: standard errors, shape [J].
        y: observed effects, shape [J], or None to simulate them.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    log_tau = numpyro.sample("log_tau", dist.Normal(5.0, 1.0))
    with numpyro.plate("J", J):
        theta = numpyro.sample("theta", dist.Normal(mu, jnp.exp(log_tau)))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def noncentered_wide(J: int, sigma: ArrayLike, y: ArrayLike | None = None) -> None:
    """Non-centered eight schools with the wide priors of the Inference Gym.

    mu ~ N(0, 10); log_tau ~ N(5, 1); theta_tilde_j ~ N(0, 1);
    theta_j = mu + exp(log_tau) theta_tilde_j (deterministic); y_j ~ N(theta_j, sigma_j).

    Args:
        J: number of schools.
        sigma: standard errors, shape [J].
        y: observed effects, shape [J], or None to simulate them.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    log_tau = numpyro.sample("log_tau", dist.Normal(5.0, 1.0))
    with numpyro.plate("J", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + jnp.exp(log_tau) * theta_tilde)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)
