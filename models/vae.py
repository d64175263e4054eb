"""A variational autoencoder on the bundled digits (8x8, binarized).

    z_n ~ Normal(0, I_20),   x_n ~ Bernoulli(sigmoid(decoder(z_n)))       n = 1..N

with an amortized Gaussian guide q(z_n | x_n) = Normal(mu(x_n), sigma(x_n)) from an encoder
64-200-20 (tanh hidden layer; sigma by softplus). Decoder 20-200-64. Encoder and decoder
weights are ``numpyro.param`` sites, so ``vx.fit`` learns both (the guide's and the model's
parameters), and :func:`encode` / :func:`decode` are plain functions of a parameter dict, for
a hand-written JAX baseline that computes the same thing.

Reference: Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from models.sigmoid_belief_net import load

LATENT = 20
HIDDEN = 200
PIXELS = 64


def _glorot(shape, seed):
    def init(key):
        scale = jnp.sqrt(2.0 / (shape[0] + shape[1]))
        return scale * jax.random.normal(jax.random.fold_in(key, seed), shape)

    return init


ENCODER_SHAPES = {"enc_w1": (PIXELS, HIDDEN), "enc_b1": (HIDDEN,),
                  "enc_w_loc": (HIDDEN, LATENT), "enc_b_loc": (LATENT,),
                  "enc_w_scale": (HIDDEN, LATENT), "enc_b_scale": (LATENT,)}
DECODER_SHAPES = {"dec_w1": (LATENT, HIDDEN), "dec_b1": (HIDDEN,),
                  "dec_w2": (HIDDEN, PIXELS), "dec_b2": (PIXELS,)}


def _params(shapes: dict, offset: int) -> dict:
    out = {}
    for i, (name, shape) in enumerate(shapes.items()):
        init = _glorot(shape, offset + i) if len(shape) == 2 else jnp.zeros(shape)
        out[name] = numpyro.param(name, init)
    return out


def encode(p: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mu, sigma) of q(z | x) for images x [N, 64]."""
    h = jnp.tanh(x @ p["enc_w1"] + p["enc_b1"])
    loc = h @ p["enc_w_loc"] + p["enc_b_loc"]
    scale = jax.nn.softplus(h @ p["enc_w_scale"] + p["enc_b_scale"]) + 1e-4
    return loc, scale


def decode(p: dict, z: jax.Array) -> jax.Array:
    """Pixel logits [N, 64] for codes z [N, 20]."""
    return jnp.tanh(z @ p["dec_w1"] + p["dec_b1"]) @ p["dec_w2"] + p["dec_b2"]


def model(x=None, n: int | None = None) -> None:
    """z ~ N(0, I); x ~ Bernoulli(logits=decoder(z)), per image."""
    n = x.shape[0] if x is not None else n
    p = _params(DECODER_SHAPES, 100)
    with numpyro.plate("images", n):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
        numpyro.sample("x", dist.Bernoulli(logits=decode(p, z)).to_event(1), obs=x)


def guide(x=None, n: int | None = None) -> None:
    """q(z | x) = N(mu(x), sigma(x)), the encoder."""
    p = _params(ENCODER_SHAPES, 0)
    loc, scale = encode(p, x)
    with numpyro.plate("images", x.shape[0]):
        numpyro.sample("z", dist.Normal(loc, scale).to_event(1))


def data(n: int = 256, seed: int = 0) -> dict:
    """``n`` binarized images (all 1797 with n=None)."""
    import numpy as np

    x, _ = load()
    if n is not None:
        x = x[np.random.default_rng(seed).permutation(len(x))[:n]]
    return {"x": x}
