"""A sigmoid belief network on the digits that scikit-learn ships (8x8, binarized).

    h_{n,j} ~ Bernoulli(sigmoid(a_j))                        j = 1..H
    x_{n,i} ~ Bernoulli(sigmoid(b_i + sum_j W_ij h_{n,j}))    i = 1..64

with model parameters (a, b, W) fitted by maximum marginal likelihood, and an amortized
guide q(h_n | x_n) = prod_j Bernoulli(sigmoid(c_j + sum_i V_ji x_{n,i})). The latents are
binary, so gradients need a strategy: ``reinforce`` (with a leave-one-out baseline under
``iwae``), ``mvd``, or the wake-sleep objectives ``pwake``/``qwake``.

Pixels are binarized at half intensity (> 8 of 16 grey levels). Data: models/data/digits.npz
(see models/data/README.md).

Reference: Neal, "Connectionist learning of belief networks", Artificial Intelligence, 1992;
Mnih & Gregor, "Neural Variational Inference and Learning in Belief Networks", ICML 2014.
"""

from __future__ import annotations

from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike

NUM_HIDDEN = 20
NUM_PIXELS = 64


def load() -> tuple[np.ndarray, np.ndarray]:
    """Binarized images [1797, 64] (float32 in {0, 1}) and labels [1797]."""
    with resources.files("models").joinpath("data/digits.npz").open("rb") as f:
        d = np.load(f, allow_pickle=False)
        return (d["images"] > 8).astype(np.float32), d["target"].astype(np.int32)


def _init(shape, scale=0.1, seed=0):
    return lambda key: scale * jax.random.normal(jax.random.fold_in(key, seed), shape)


def model(x: ArrayLike | None = None, n: int | None = None,
          num_hidden: int = NUM_HIDDEN) -> None:
    """h ~ Bernoulli(sigmoid(a)); x ~ Bernoulli(sigmoid(b + W h)), per image.

    Args:
        x: binary images [N, 64], or None to simulate (then give ``n``).
        n: number of images when ``x`` is None.
        num_hidden: H.
    """
    n = x.shape[0] if x is not None else n
    a = numpyro.param("prior_logits", jnp.zeros(num_hidden))
    b = numpyro.param("pixel_bias", jnp.zeros(NUM_PIXELS))
    w = numpyro.param("weights", _init((NUM_PIXELS, num_hidden), seed=1))
    with numpyro.plate("images", n):
        h = numpyro.sample("h", dist.Bernoulli(logits=a).to_event(1))
        numpyro.sample("x", dist.Bernoulli(logits=b + h @ w.T).to_event(1), obs=x)


def guide(x=None, n: int | None = None, num_hidden: int = NUM_HIDDEN) -> None:
    """q(h | x) = Bernoulli(sigmoid(c + V x)), an amortized (encoder) guide."""
    c = numpyro.param("enc_bias", jnp.zeros(num_hidden))
    v = numpyro.param("enc_weights", _init((num_hidden, NUM_PIXELS), seed=2))
    with numpyro.plate("images", x.shape[0]):
        numpyro.sample("h", dist.Bernoulli(logits=c + x @ v.T).to_event(1))


def data(n: int = 256, seed: int = 0) -> dict:
    """A random subset of ``n`` binarized images (all 1797 with n=None)."""
    x, _ = load()
    if n is not None:
        x = x[np.random.default_rng(seed).permutation(len(x))[:n]]
    return {"x": x}
