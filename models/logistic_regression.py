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


def generate(directory: str, num_rows: int, num_features: int = 100, seed: int = 0,
             rows_per_write: int = 1_000_000) -> dict:
    """Write a synthetic logistic-regression dataset as memory-mappable ``.npy`` files.

    x_n ~ N(0, I_D) (float32), y_n ~ Bernoulli(sigmoid(alpha + x_n . beta)) (int8) with
    alpha = 0.5 and beta_d ~ N(0, 9 / D) drawn once from ``seed``, so the logits have sd 3.
    Rows are written ``rows_per_write`` at a time: memory stays flat in ``num_rows``. Files
    that already exist with the right shape are kept.

    Args:
        directory: where to write ``X.npy`` and ``y.npy`` (created if needed).
        num_rows: N.
        num_features: D.
        seed: the seed of the coefficients and the rows.
        rows_per_write: rows generated and written per block.

    Returns:
        ``{"X": path, "y": path}``, ready for ``vx.fit(model, data=..., num_data=N)``.
    """
    import os

    os.makedirs(directory, exist_ok=True)
    paths = {"X": os.path.join(directory, "X.npy"), "y": os.path.join(directory, "y.npy")}
    shapes = {"X": (num_rows, num_features), "y": (num_rows,)}
    if all(os.path.exists(p) and np.load(p, mmap_mode="r").shape == shapes[k]
           for k, p in paths.items()):
        return paths
    rng = np.random.default_rng(seed)
    beta = rng.normal(0.0, 3.0 / np.sqrt(num_features), num_features).astype(np.float32)
    X = np.lib.format.open_memmap(paths["X"] + ".tmp", "w+", np.float32, shapes["X"])
    y = np.lib.format.open_memmap(paths["y"] + ".tmp", "w+", np.int8, shapes["y"])
    for lo in range(0, num_rows, rows_per_write):
        hi = min(num_rows, lo + rows_per_write)
        x = rng.standard_normal((hi - lo, num_features), dtype=np.float32)
        p = 1.0 / (1.0 + np.exp(-(0.5 + x @ beta)))
        X[lo:hi], y[lo:hi] = x, rng.random(hi - lo) < p
    X.flush()
    y.flush()
    del X, y
    for p in paths.values():
        os.replace(p + ".tmp", p)
    return paths
