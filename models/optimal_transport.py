"""Models with optimal transport inside: a latent matching and an OT likelihood.

``shuffled_regression``: linear regression whose responses arrive in an unknown order
(record linkage, "unlabeled sensing"). The likelihood sums over the unknown matching; its
entropic relaxation replaces the best matching by the regularized transport cost between
the predictions and the responses,

    w ~ N(0, I),  sigma ~ HalfNormal(1),
    log p(y | X, w, sigma) ~= -n OT_eps(C) / (2 sigma^2) - n log sigma,
    C_ij = (y_i - x_j^T w)^2,

with uniform weights (OT_eps is an average under the plan, hence the factor n); eps is in
units of squared residuals, so the transport problem does not stiffen as sigma shrinks. At
eps -> 0 it is the log-likelihood of the best matching. The bundled data has one skewed
feature and an intercept: with symmetric features the set of predictions, all the shuffled
data can inform, would not identify w.

``cloud_likelihood``: a simulator-style model whose likelihood compares a simulated point
cloud with the observed one by the Sinkhorn divergence (Feydy et al. 2019),

    loc ~ N(0, 3^2 I),  log_scale ~ N(0, 1),
    simulated = loc + exp(log_scale) * noise   (noise fixed: common random numbers),
    log p(observed | ...) = -lam * n * S_eps(simulated, observed).

Both call :func:`vi_ext.solvers.sinkhorn` with implicit differentiation, fitted by
``vx.fit``. A Sinkhorn run that does not converge does not raise: its last iterate is used
(see ``converged`` on the output).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike

from vi_ext.solvers import sinkhorn, sinkhorn_divergence


def shuffled_regression(X: ArrayLike, y: ArrayLike, epsilon: float = 0.01,
                        max_iterations: int = 500) -> None:
    """Regression with an unknown correspondence between rows of X and entries of y."""
    X, y = jnp.asarray(X), jnp.asarray(y)
    n, d = X.shape
    w = numpyro.sample("w", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    pred = X @ w
    cost = (y[:, None] - pred[None, :]) ** 2
    ot = sinkhorn(cost=cost, epsilon=epsilon, threshold=1e-4, max_iterations=max_iterations)
    numpyro.factor("matching", -n * ot.reg_ot_cost / (2 * sigma**2) - n * jnp.log(sigma))


def shuffled_data(n: int = 40, seed: int = 0) -> dict:
    """y = 2 x - 1 + 0.1 noise with x ~ Exponential(1), X = [x, 1], y shuffled."""
    rng = np.random.default_rng(seed)
    x = rng.exponential(size=n)
    X = np.stack([x, np.ones(n)], axis=1).astype(np.float32)
    y = (X @ np.array([2.0, -1.0]) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return {"X": X, "y": rng.permutation(y)}


def cloud_likelihood(observed: ArrayLike, noise: ArrayLike, lam: float = 1.0,
                     epsilon: float = 0.1) -> None:
    """A Gaussian cloud's location and scale, fitted by the Sinkhorn divergence."""
    observed, noise = jnp.asarray(observed), jnp.asarray(noise)
    d = observed.shape[1]
    loc = numpyro.sample("loc", dist.Normal(jnp.zeros(d), 3.0).to_event(1))
    log_scale = numpyro.sample("log_scale", dist.Normal(0.0, 1.0))
    simulated = loc + jnp.exp(log_scale) * noise
    div = sinkhorn_divergence(simulated, observed, epsilon=epsilon, threshold=1e-3,
                              max_iterations=500)
    numpyro.factor("sinkhorn_divergence", -lam * observed.shape[0] * div)


def cloud_data(n: int = 60, seed: int = 0) -> dict:
    """An observed cloud N((1, -2), 0.5^2 I), and fixed simulation noise."""
    rng = np.random.default_rng(seed)
    observed = (np.array([1.0, -2.0]) + 0.5 * rng.normal(size=(n, 2))).astype(np.float32)
    noise = rng.normal(size=(n, 2)).astype(np.float32)
    return {"observed": observed, "noise": noise}
