"""A centered latent AR(1) time series with heavy-tailed priors, as a new user writes it.

    phi ~ Normal(0, 1),   sigma ~ HalfCauchy(1),   tau ~ HalfCauchy(1)
    x_1 ~ Normal(0, sigma / sqrt(1 - phi^2))          (the stationary distribution)
    x_t ~ Normal(phi x_{t-1}, sigma)                  t = 2..T   (centered)
    y_t ~ StudentT(4, x_t, tau)                       t = 1..T

The stationary scale sigma / sqrt(1 - phi^2) is only defined for |phi| < 1, but the prior on
phi does not say so: wherever the guide puts phi beyond +-1 the log density is NaN. With the
data below (phi = 0.97, near the boundary), NumPyro's SVI with AutoNormal and Adam(1e-2)
meets such a draw within about a thousand steps, and its parameters are NaN from then on;
vi_ext's fit rejects those steps and carries on (``FitResult.num_rejected`` counts them).
The fix a careful modeller makes is ``phi ~ Uniform(-1, 1)`` (:func:`stationary`); the
centered form also puts a funnel between sigma and x.

Data: T = 100 points simulated once with a fixed seed (phi = 0.97, sigma = 0.3, Student-t
observation noise with 4 degrees of freedom and scale 0.5).

Reference: Durbin & Koopman, Time Series Analysis by State Space Methods, 2nd ed., 2012.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan

T = 100


def _ar1(phi, y, n) -> None:
    sigma = numpyro.sample("sigma", dist.HalfCauchy(1.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(1.0))
    x0 = numpyro.sample("x0", dist.Normal(0.0, sigma / jnp.sqrt(1.0 - phi**2)))

    def transition(prev, _):
        xt = numpyro.sample("x", dist.Normal(phi * prev, sigma))
        return xt, xt

    _, xs = scan(transition, x0, None, length=n - 1)
    xs = jnp.concatenate([x0[None], xs])
    numpyro.sample("y", dist.StudentT(4.0, xs, tau), obs=y)


def model(y=None, n: int = T) -> None:
    """The centered AR(1) with phi ~ Normal(0, 1): NaN log density where |phi| >= 1."""
    n = len(y) if y is not None else n
    phi = numpyro.sample("phi", dist.Normal(0.0, 1.0))
    _ar1(phi, y, n)


def stationary(y=None, n: int = T) -> None:
    """The same model with phi ~ Uniform(-1, 1), so every draw is stationary."""
    n = len(y) if y is not None else n
    phi = numpyro.sample("phi", dist.Uniform(-1.0, 1.0))
    _ar1(phi, y, n)


def simulate(n: int = T, phi: float = 0.97, sigma: float = 0.3, tau: float = 0.5,
             seed: int = 0) -> np.ndarray:
    """Observations y [n] from the model at the given parameters."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    x[0] = rng.normal(0.0, sigma / np.sqrt(1.0 - phi**2))
    for t in range(1, n):
        x[t] = phi * x[t - 1] + rng.normal(0.0, sigma)
    return (x + tau * rng.standard_t(4, n)).astype(np.float32)


def data() -> dict:
    """The bundled series (simulated with a fixed seed)."""
    return {"y": simulate()}


def noncentered(y=None, n: int = T) -> None:
    """The same posterior as :func:`model`, non-centered: the states are deterministic
    functions of standard normal innovations (x0 = sigma / sqrt(1 - phi^2) e_0,
    x_t = phi x_{t-1} + sigma e_t), so NUTS meets no funnel between sigma and x. The sites
    phi, sigma, tau, x0 and x carry the same values as in :func:`model`."""
    n = len(y) if y is not None else n
    phi = numpyro.sample("phi", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(1.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(1.0))
    e = numpyro.sample("e", dist.Normal(jnp.zeros(n), 1.0).to_event(1))
    x0 = numpyro.deterministic("x0", sigma / jnp.sqrt(1.0 - phi**2) * e[0])

    def transition(prev, et):
        xt = phi * prev + sigma * et
        return xt, xt

    _, xs = jax.lax.scan(transition, x0, e[1:])
    numpyro.deterministic("x", xs)
    numpyro.sample("y", dist.StudentT(4.0, jnp.concatenate([x0[None], xs]), tau), obs=y)
