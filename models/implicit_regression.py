"""A model whose mean solves an inner optimization problem: Bayesian regularization strength.

An L2-penalized logistic regression is fitted on a training set inside the model,

    w*(lambda) = argmin_w  sum_n softplus(-s_n x_n^T w) + lambda / 2 ||w||^2,   s_n = 2 y_n - 1,

by Newton's method in a ``lax.while_loop``, which reverse mode cannot differentiate. The
validation labels are then modeled with w*(lambda) and a temperature:

    log lambda ~ N(0, 1.5^2),   log T ~ N(0, 0.5^2),
    y_val_m ~ Bernoulli(sigmoid(x_val_m^T w*(lambda) / T)).

The posterior over lambda is an empirical-Bayes view of choosing the regularization by
validation. ``vx.solvers.custom_root`` gives w* its implicit derivative (the optimality
condition is the gradient of the inner objective; its Jacobian, the Hessian, is symmetric
positive definite, so the linear solve is ``"cg"``), in both modes: ``vx.fit`` differentiates
in reverse mode, NumPyro's NUTS with ``forward_mode_differentiation=True`` in forward mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import lax
from jax.typing import ArrayLike

from vi_ext.solvers import custom_root


def inner_gradient(w, lam, X, y):
    """Gradient of the penalized logistic loss: zero at w*(lambda)."""
    s = 2.0 * y - 1.0
    return -X.T @ (s * jax.nn.sigmoid(-s * (X @ w))) + lam * w


def _newton(init, lam, X, y, tol=1e-10, max_iterations=50):
    def hessian(w):
        p = jax.nn.sigmoid(X @ w)
        return (X.T * (p * (1 - p))) @ X + lam * jnp.eye(X.shape[1], dtype=X.dtype)

    def cond(state):
        _, step_norm, it = state
        return (step_norm > tol) & (it < max_iterations)

    def body(state):
        w, _, it = state
        step = jnp.linalg.solve(hessian(w), inner_gradient(w, lam, X, y))
        return w - step, jnp.max(jnp.abs(step)), it + 1

    w, _, _ = lax.while_loop(cond, body, (init, jnp.asarray(jnp.inf, X.dtype), 0))
    return w


inner_solution = custom_root(inner_gradient, solve="cg")(_newton)
inner_solution.__doc__ = """w*(lambda): the penalized logistic regression fitted by Newton's
method, with its implicit derivative (``inner_solution(init, lam, X, y)``)."""


def model(X: ArrayLike, y: ArrayLike, X_val: ArrayLike, y_val: ArrayLike | None = None) -> None:
    """Validation labels given the inner fit on (X, y); latents ``log_lam`` and ``log_temp``."""
    X, y, X_val = jnp.asarray(X), jnp.asarray(y), jnp.asarray(X_val)
    log_lam = numpyro.sample("log_lam", dist.Normal(0.0, 1.5))
    log_temp = numpyro.sample("log_temp", dist.Normal(0.0, 0.5))
    w = inner_solution(jnp.zeros(X.shape[1], X.dtype), jnp.exp(log_lam), X, y)
    numpyro.deterministic("w", w)
    with numpyro.plate("val", X_val.shape[0]):
        numpyro.sample("y_val", dist.Bernoulli(logits=X_val @ w / jnp.exp(log_temp)), obs=y_val)


def data(n_train: int = 60, n_val: int = 80, dim: int = 6, seed: int = 0) -> dict:
    """A small synthetic problem: Gaussian features, labels from a sparse true weight."""
    rng = np.random.default_rng(seed)
    w_true = np.zeros(dim)
    w_true[:2] = [1.5, -1.0]
    X = rng.normal(size=(n_train + n_val, dim))
    y = (rng.uniform(size=n_train + n_val) < 1 / (1 + np.exp(-X @ w_true))).astype(np.float32)
    X = X.astype(np.float32)
    return {"X": X[:n_train], "y": y[:n_train], "X_val": X[n_train:], "y_val": y[n_train:]}
