"""Mixtures of diagonal Gaussians: exact log density, sampling, L2 distances."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from boosting_targets import member

from vi_ext.boosting import mixture as mx


def _two():
    mix = mx.empty(3, 2)
    mix = mx.add(mix, 0, member([0.0, 1.0], [1.0, 0.5]), jnp.array(1.0))
    return mx.add(mix, 1, member([2.0, -1.0], [0.3, 2.0]), jnp.array(0.25))


def test_mixture_density_is_exact_and_weights_stay_on_the_simplex():
    mix = _two()
    w = np.asarray(mix.weights)
    np.testing.assert_allclose(w, [0.75, 0.25, 0.0], atol=1e-7)
    z = jnp.array([[0.3, 0.2], [1.5, -2.0], [-1.0, 4.0]])
    manual = np.log(
        0.75 * np.exp(np.asarray(dist.Normal(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.5]))
                                 .log_prob(z).sum(-1)))
        + 0.25 * np.exp(np.asarray(dist.Normal(jnp.array([2.0, -1.0]), jnp.array([0.3, 2.0]))
                                   .log_prob(z).sum(-1))))
    np.testing.assert_allclose(mx.log_prob(mix, z), manual, rtol=1e-5)
    mix3 = mx.add(mix, 2, member([0.0, 0.0], [1.0, 1.0]), jnp.array(0.4))
    assert abs(float(jnp.sum(mix3.weights)) - 1.0) < 1e-6 and int(mix3.num_active) == 3


def test_mixture_samples_have_the_mixture_moments():
    mix = _two()
    n = 40000
    z = np.asarray(mx.sample(mix, jax.random.PRNGKey(0), n))
    mean = 0.75 * np.array([0.0, 1.0]) + 0.25 * np.array([2.0, -1.0])
    second = (0.75 * (np.array([1.0, 0.25]) + np.array([0.0, 1.0]) ** 2)
              + 0.25 * (np.array([0.09, 4.0]) + np.array([2.0, -1.0]) ** 2))
    sd = np.sqrt(second - mean**2)
    assert np.all(np.abs(z.mean(0) - mean) < 4 * sd / np.sqrt(n))


def test_l2_distance_matches_quadrature():
    p = mx.single(member([0.0], [1.0]))
    q = mx.add(mx.add(mx.empty(2, 1), 0, member([1.0], [0.5]), jnp.array(1.0)), 1,
               member([-2.0], [1.0]), jnp.array(0.3))
    grid = jnp.linspace(-12, 12, 20001)[:, None]
    diff = jnp.exp(mx.log_prob(p, grid)) - jnp.exp(mx.log_prob(q, grid))
    numeric = float(jnp.sum(diff**2) * (grid[1, 0] - grid[0, 0]))
    np.testing.assert_allclose(float(jnp.exp(mx.log_sq_distance(p, q))), numeric, rtol=1e-3)
