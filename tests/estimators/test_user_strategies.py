"""Strategies users add: reinforce_from (a sampler and a log density of their own) and a
class following the strategy protocol, each unbiased against an exact gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gaussian_guide, gaussian_model
from test_reinforce import X_OBS, assert_unbiased, bern_guide, bern_model, estimates, exact_iwae

import vi_ext as vx


def inverse_cdf_bernoulli(site, key):
    """A Bernoulli drawn by inverting its CDF (not NumPyro's sampler)."""
    u = jax.random.uniform(key, tuple(site.sample_shape) + tuple(site.fn.batch_shape))
    return (u < site.fn.probs).astype(jnp.float32)


def bernoulli_log_prob(site, z):
    p = site.fn.probs
    return z * jnp.log(p) + (1.0 - z) * jnp.log1p(-p)


@pytest.mark.parametrize("baseline", [None, "average"])
def test_reinforce_from_a_users_sampler_and_density_is_unbiased(baseline):
    strategy = vx.estimators.reinforce_from(inverse_cdf_bernoulli, bernoulli_log_prob,
                                            baseline=baseline)
    values, grads = estimates(vx.objectives.elbo(), bern_model, bern_guide,
                              {"p": jnp.array(0.6)}, {"z": strategy}, x=X_OBS)
    assert_unbiased(values, exact_iwae(0.6, 1))
    assert_unbiased(grads["p"], jax.grad(exact_iwae)(0.6, 1))


class ShiftedReparam:
    """A user's reparameterization for Normal sites: z = loc + scale * eps (the protocol:
    a ``name`` and ``sample(site, key)``)."""

    name = "shifted_reparam"

    def sample(self, site, key):
        fn = vx.estimators.continuation.base_distribution(site.fn)
        eps = jax.random.normal(key, tuple(site.sample_shape) + tuple(site.fn.batch_shape))
        return fn.loc + fn.scale * eps


def test_a_strategy_class_of_the_users_is_unbiased():
    m, s, x = 0.3, 0.8, 1.3

    def exact_elbo(m, s):
        return (-jnp.log(2 * jnp.pi) - 0.5 * ((m**2 + s**2) + ((x - m) ** 2 + s**2))
                + 0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2))

    assert vx.estimators.is_strategy(ShiftedReparam())
    _, grads = estimates(vx.objectives.elbo(), gaussian_model, gaussian_guide,
                         {"m": jnp.array(m), "s": jnp.array(s)}, {"z": ShiftedReparam()}, x=x)
    gm, gs = jax.grad(exact_elbo, argnums=(0, 1))(m, s)
    assert_unbiased(grads["m"], gm)
    assert_unbiased(grads["s"], gs)


def test_reinforce_from_refuses_bad_arguments_by_name():
    with pytest.raises(vx.ArgumentError, match="'sample'"):
        vx.estimators.reinforce_from("uniform", bernoulli_log_prob)
    with pytest.raises(vx.ArgumentError, match="'log_prob'"):
        vx.estimators.reinforce_from(inverse_cdf_bernoulli, None)
    wrong = vx.estimators.reinforce_from(lambda site, key: jnp.zeros(3), bernoulli_log_prob)
    with pytest.raises(vx.SiteError, match=r"site 'z'.*sampler returned shape \(3,\)"):
        vx.estimate(vx.objectives.elbo(), bern_model, bern_guide, {"p": jnp.array(0.6)},
                    x=X_OBS, estimators={"z": wrong})
    assert "reinforce_from" in repr(vx.estimators.reinforce_from(inverse_cdf_bernoulli,
                                                                 bernoulli_log_prob))
    np.testing.assert_equal(vx.estimators.is_strategy(wrong), True)
