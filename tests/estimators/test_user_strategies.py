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


class ScoreWithConstantBaseline:
    """A user's score-function strategy: asks for the learning signal, subtracts a constant."""

    name = "score_b"

    def __init__(self, b):
        self.b = b

    def sample(self, site, key):
        z = jax.lax.stop_gradient(site.fn.sample(key, site.sample_shape))
        return vx.estimators.Draw(z, signal=True)

    def contribute(self, view):
        lp = view.position_log_prob
        signal = jax.lax.stop_gradient(view.signal)
        return vx.estimators.Contribution(
            jnp.sum((signal - self.b) * (lp - jax.lax.stop_gradient(lp))))


class MyLocalEnum:
    """A user's strategy of the local-enumeration kind (integrate, check affinity)."""

    name = "my_local_enum"

    def sample(self, site, key):
        return vx.estimators.Draw(jax.lax.stop_gradient(site.fn.sample(key)), integrate=True)

    def contribute(self, view):
        if view.terms_affine() or view.value_used:
            view.refuse("the value must be affine in this site's terms")


class MyDReG:
    """A user's strategy of the DReG kind (stop params, rescale the path)."""

    name = "my_dreg"

    def sample(self, site, key):
        return vx.estimators.Draw(site.fn.rsample(key, site.sample_shape), stop_params=True)

    def contribute(self, view):
        if view.log_prob_affine:
            return None
        lme = view.logmeanexp()
        if isinstance(lme, str) or not lme.only_channel or lme.log_q_coefficient is None:
            view.refuse("needs a * logmeanexp of importance log weights over its particles")
        return vx.estimators.Contribution(
            path_scale=1.0 + lme.log_q_coefficient * (1.0 - lme.weights))


@pytest.mark.parametrize("strategy", [ScoreWithConstantBaseline(-1.5), MyLocalEnum()],
                         ids=["score", "local-enum"])
def test_users_strategies_of_the_score_and_integrating_kinds_are_unbiased(strategy):
    values, grads = estimates(vx.objectives.elbo(), bern_model, bern_guide,
                              {"p": jnp.array(0.6)}, {"z": strategy}, x=X_OBS)
    assert_unbiased(values, exact_iwae(0.6, 1))
    assert_unbiased(grads["p"], jax.grad(exact_iwae)(0.6, 1))
    if not isinstance(strategy, MyLocalEnum):
        return
    with pytest.raises(vx.SiteError, match="site 'z'.*my_local_enum"):
        vx.estimate(vx.objectives.iwae(3), bern_model, bern_guide, {"p": jnp.array(0.6)},
                    x=X_OBS, estimators={"z": MyLocalEnum()})


def test_a_users_strategy_of_the_dreg_kind_matches_the_iwae_gradient():
    params = {"m": jnp.array(0.3), "s": jnp.array(0.8)}
    _, mine = estimates(vx.objectives.iwae(4), gaussian_model, gaussian_guide, params,
                        {"z": MyDReG()}, x=1.3)
    _, plain = estimates(vx.objectives.iwae(4), gaussian_model, gaussian_guide, params,
                         {"z": vx.estimators.reparam()}, n=16000, x=1.3)
    for name in params:
        a, b = np.asarray(mine[name]), np.asarray(plain[name])
        se = np.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) <= 4.5 * se
    assert np.var(mine["m"]) < 0.5 * np.var(plain["m"])
