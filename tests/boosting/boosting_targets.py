"""Boosting tests' shared settings and targets (fixtures of boosted fits: tests/conftest.py)."""

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

import vi_ext as vx
from vi_ext.boosting import mixture as mx

#: small oracle fits: enough for every assertion below, a fraction of the default's time.
#: The first and the later components' fits take the same number of steps, so that they
#: share one compiled program (compiling costs far more than the extra steps).
FAST = vx.boosting.Settings(first_steps=300, relbo_steps=300, num_samples=256, candidates=64)


def member(loc, scale):
    """A diagonal Gaussian member's params."""
    return {"loc": jnp.asarray(loc, jnp.float32),
            "log_scale": jnp.log(jnp.asarray(scale, jnp.float32))}


def bimodal(z):
    """0.4 N(-2.5, 0.6^2) + 0.6 N(2, 0.9^2) on R (normalized: KL(q || p) = -ELBO)."""
    x = z[0]
    comps = jnp.array([jnp.log(0.4) + dist.Normal(-2.5, 0.6).log_prob(x),
                       jnp.log(0.6) + dist.Normal(2.0, 0.9).log_prob(x)])
    return jax.scipy.special.logsumexp(comps)


def std_normal(z):
    return dist.Normal(0.0, 1.0).log_prob(z[0])


def wasteful_mixture():
    """q = 0.9 N(0, 1) + 0.1 N(8, 0.5^2) for p = N(0, 1): the second component is waste."""
    return mx.add(mx.add(mx.empty(3, 1), 0, member([0.0], [1.0]), jnp.array(1.0)), 1,
                  member([8.0], [0.5]), jnp.array(0.1))
