"""Bayesian logistic regression on the Wisconsin breast-cancer data.

With standardized features x_n in R^30 and labels y_n in {0, 1} (1 = benign):

    alpha ~ Normal(0, 5),  beta_d ~ Normal(0, 1)        d = 1..30
    y_n ~ Bernoulli(sigmoid(alpha + x_n . beta))        n = 1..569

The data ship with the package (models/data/breast_cancer.npz; see models/data/README.md
for source, licence and citation).

Reference: Gelman et al., Bayesian Data Analysis, 3rd ed., chapter 16.
"""

from __future__ import annotations

from importlib import resources

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The raw data: features [569, 30] (float32), labels [569] (int), feature names."""
    with resources.files("models").joinpath("data/breast_cancer.npz").open("rb") as f:
        d = np.load(f, allow_pickle=False)
        return d["X"], d["y"].astype(np.int32), d["feature_names"]


def model(X: ArrayLike, y: ArrayLike | None = None, num_data: int | None = None) -> None:
    """Logistic regression with a N(0, 5) intercept and N(0, 1) coefficients.

    alpha ~ N(0, 5); beta ~ N(0, I_D); y_n ~ Bernoulli(logits = alpha + X_n beta).

    Args:
        X: features, shape [N, D] (standardize them: the priors assume unit scale), or a
            minibatch of B rows of them.
        y: labels in {0, 1}, shape [N] (or [B]), or None to simulate them.
        num_data: N when X and y are a minibatch (the likelihood is scaled by N / B, e.g.
            ``vx.fit(model, data={"X": X, "y": y}, batch_size=B, num_data=N)``); None: X is
            all the data.
    """
    n, d = X.shape
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
    logits = alpha + X @ beta
    with numpyro.plate("data", num_data or n, subsample_size=n):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


def standardize(X: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit sd per feature, with the statistics of ``ref`` (default X)."""
    ref = X if ref is None else ref
    return ((X - ref.mean(0)) / ref.std(0)).astype(np.float32)


def data() -> dict:
    """All 569 rows, features standardized: keyword arguments X, y."""
    X, y, _ = load()
    return {"X": standardize(X), "y": y}


def split(seed: int = 0, test_fraction: float = 0.2) -> tuple[dict, dict]:
    """A random train/test split (standardized with training statistics)."""
    X, y, _ = load()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = idx[:n_test], idx[n_test:]
    return (
        {"X": standardize(X[train], X[train]), "y": y[train]},
        {"X": standardize(X[test], X[train]), "y": y[test]},
    )
