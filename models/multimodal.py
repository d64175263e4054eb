"""Multimodal and curved targets for boosting VI (no data: the posterior is the prior).

- :func:`mixture_1d`: x ~ 0.4 N(-2.5, 0.6^2) + 0.6 N(2, 0.9^2).
- :func:`mixture_2d`: x ~ 0.3 N((-3, 0), diag(0.7^2, 1)) + 0.3 N((3, 2), .) + 0.4 N((0, -4), .).
- :func:`banana`: x1 ~ N(0, 2^2), x2 | x1 ~ N(x1^2 / 4 - 1, 0.5^2) (a curved ridge).
- :func:`mixture_10d`: x ~ sum_k 1/4 N(m_k, I) in 10 dimensions, the m_k drawn once with a
  fixed seed from N(0, 3^2 I).

All are normalized densities, so KL(q || p) = -ELBO for any guide q. A single Gaussian can
cover one mode (or the ridge's middle) only; a mixture can do better.

Reference: Locatello et al., "Boosting Black Box Variational Inference", NeurIPS 2018
(mixtures); Haario, Saksman & Tamminen, "Adaptive proposal distribution for random walk
Metropolis", 1999 (the banana).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist


def _mixture(weights, locs, scales) -> dist.Distribution:
    comps = dist.Normal(jnp.asarray(locs), jnp.asarray(scales))
    if comps.batch_shape and len(comps.batch_shape) > 1:
        comps = comps.to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(probs=jnp.asarray(weights)), comps)


def mixture_1d() -> None:
    """x ~ 0.4 N(-2.5, 0.6^2) + 0.6 N(2, 0.9^2)."""
    numpyro.sample("x", _mixture([0.4, 0.6], [-2.5, 2.0], [0.6, 0.9]))


def mixture_2d() -> None:
    """Three well-separated 2-D Gaussians."""
    locs = [[-3.0, 0.0], [3.0, 2.0], [0.0, -4.0]]
    numpyro.sample("x", _mixture([0.3, 0.3, 0.4], locs, [[0.7, 1.0]] * 3))


def banana() -> None:
    """x1 ~ N(0, 2^2); x2 | x1 ~ N(x1^2 / 4 - 1, 0.5^2)."""
    x1 = numpyro.sample("x1", dist.Normal(0.0, 2.0))
    numpyro.sample("x2", dist.Normal(x1**2 / 4.0 - 1.0, 0.5))


MEANS_10D = np.random.default_rng(10).normal(0.0, 3.0, (4, 10)).astype(np.float32)


def mixture_10d() -> None:
    """An equal-weight mixture of four unit Gaussians in 10 dimensions."""
    numpyro.sample("x", _mixture(np.full(4, 0.25), MEANS_10D, np.ones((4, 10))))


model = mixture_1d


def data() -> dict:
    """No observations: the target is the model's prior."""
    return {}
