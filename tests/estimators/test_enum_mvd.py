"""Enumeration and measure-valued derivatives, alone and mixed with other strategies."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import gaussian_guide, gaussian_model
from test_reinforce import X_OBS, assert_unbiased, bern_guide, bern_model, estimates, exact_iwae

import vi_ext as vx

E = vx.estimators


def test_enum_is_exact_for_a_bernoulli_site():
    params = {"p": jnp.array(0.6)}
    v, g = vx.estimate(vx.objectives.elbo(), bern_model, bern_guide, params, x=X_OBS,
                       estimators={"z": E.enum()})
    np.testing.assert_allclose(v, exact_iwae(0.6, 1), rtol=1e-5)
    np.testing.assert_allclose(g["p"], jax.grad(exact_iwae)(0.6, 1), rtol=1e-4)


def test_enum_from_the_guide_infer_dict_and_in_a_plate():
    probs = jnp.array([0.2, 0.5, 0.7])
    obs = jnp.array([0.3, -1.0, 2.0])

    def model(x=None):
        with numpyro.plate("n", 3):
            z = numpyro.sample("z", dist.Bernoulli(0.4))
            numpyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)

    def guide(x=None):
        p = numpyro.param("p", probs, constraint=dist.constraints.unit_interval)
        with numpyro.plate("n", 3):
            numpyro.sample("z", dist.Bernoulli(p), infer={"estimator": E.enum()})

    def exact(p):  # the ELBO factorizes over the plate
        def one(z):
            return (dist.Bernoulli(0.4).log_prob(z) + dist.Normal(2 * z - 1, 1).log_prob(obs)
                    - dist.Bernoulli(p).log_prob(z))
        return jnp.sum(p * one(1.0) + (1 - p) * one(0.0))

    v, g = vx.estimate(vx.objectives.elbo(), model, guide, {"p": probs}, x=obs)
    np.testing.assert_allclose(v, exact(probs), rtol=1e-5)
    np.testing.assert_allclose(g["p"], jax.grad(exact)(probs), rtol=1e-4, atol=1e-5)


def test_mvd_bernoulli_unbiased():
    values, grads = estimates(vx.objectives.elbo(), bern_model, bern_guide,
                              {"p": jnp.array(0.6)}, {"z": E.mvd()}, x=X_OBS)
    assert_unbiased(values, exact_iwae(0.6, 1))
    assert_unbiased(grads["p"], jax.grad(exact_iwae)(0.6, 1))


def test_mvd_normal_unbiased():
    m, s, x = 0.3, 0.8, 1.3

    def exact_elbo(m, s):
        return (-jnp.log(2 * jnp.pi) - 0.5 * ((m**2 + s**2) + ((x - m) ** 2 + s**2))
                + 0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2))

    _, grads = estimates(vx.objectives.elbo(), gaussian_model, gaussian_guide,
                         {"m": jnp.array(m), "s": jnp.array(s)}, {"z": E.mvd()}, x=x)
    gm, gs = jax.grad(exact_elbo, argnums=(0, 1))(m, s)
    assert_unbiased(grads["m"], gm)
    assert_unbiased(grads["s"], gs)


# a model with a categorical, a Bernoulli and a Gaussian latent, whose ELBO is exact
PI0, RHO0, X = jnp.array([0.2, 0.5, 0.3]), 0.4, 2.2


def mixed_model(x=None):
    c = numpyro.sample("c", dist.Categorical(PI0))
    b = numpyro.sample("b", dist.Bernoulli(RHO0))
    z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    numpyro.sample("x", dist.Normal(z + c + b, 1.0), obs=x)


def mixed_guide(x=None):
    theta = numpyro.param("theta", jnp.array([0.1, -0.3, 0.4]))
    p = numpyro.param("p", 0.3, constraint=dist.constraints.unit_interval)
    m = numpyro.param("m", 0.5)
    s = numpyro.param("s", 0.7, constraint=dist.constraints.positive)
    numpyro.sample("c", dist.Categorical(logits=theta))
    numpyro.sample("b", dist.Bernoulli(p))
    numpyro.sample("z", dist.Normal(m, s))


def mixed_exact(params):
    pi = jax.nn.softmax(params["theta"])
    p, m, s = params["p"], params["m"], params["s"]
    total = 0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2) - 0.5 * jnp.log(2 * jnp.pi) - 0.5 * (
        m**2 + s**2)
    for c in range(3):
        for b, qb in ((0, 1 - p), (1, p)):
            lik = -0.5 * jnp.log(2 * jnp.pi) - 0.5 * ((X - c - b - m) ** 2 + s**2)
            logp = jnp.log(PI0[c]) + (jnp.log(RHO0) if b else jnp.log(1 - RHO0))
            total = total + pi[c] * qb * (lik + logp - jnp.log(pi[c]) - jnp.log(qb))
    return total


MIXED_PARAMS = {"theta": jnp.array([0.1, -0.3, 0.4]), "p": jnp.array(0.3), "m": jnp.array(0.5),
                "s": jnp.array(0.7)}


@pytest.mark.parametrize("strategies", [
    {"c": E.enum(), "b": E.mvd(), "z": E.reparam()},
    {"c": E.mvd(), "b": E.enum(), "z": E.mvd()},
    {"c": E.reinforce(), "b": E.mvd(), "z": E.reparam()},
], ids=["enum-mvd-reparam", "mvd-enum-mvd", "reinforce-mvd-reparam"])
def test_mixed_strategies_stay_unbiased(strategies):
    values, grads = estimates(vx.objectives.elbo(), mixed_model, mixed_guide, MIXED_PARAMS,
                              strategies, n=3000, x=X)
    exact_grads = jax.grad(mixed_exact)(MIXED_PARAMS)
    assert_unbiased(values, mixed_exact(MIXED_PARAMS))
    for name in MIXED_PARAMS:
        g = np.asarray(grads[name]).reshape(len(values), -1)
        ex = np.asarray(exact_grads[name]).reshape(-1)
        for j in range(g.shape[1]):
            assert_unbiased(g[:, j], ex[j])


def test_enum_of_an_infinite_support_site():
    with pytest.raises(vx.SiteError, match="site 'z'.*enum.*Normal.*not finite"):
        vx.estimate(vx.objectives.elbo(), gaussian_model, gaussian_guide,
                    {"m": jnp.array(0.0), "s": jnp.array(1.0)}, x=1.0,
                    estimators={"z": E.enum()})


def test_enum_inside_particles_is_refused():
    with pytest.raises(vx.SiteError, match="site 'z'.*inside vx.program.particles"):
        vx.estimate(vx.objectives.iwae(3), bern_model, bern_guide, {"p": jnp.array(0.5)},
                    x=X_OBS, estimators={"z": E.enum()})


def test_mvd_unsupported_distribution():
    def model():
        numpyro.sample("g", dist.Gamma(2.0, 1.0))

    def guide():
        a = numpyro.param("a", 2.0, constraint=dist.constraints.positive)
        numpyro.sample("g", dist.Gamma(a, 1.0))

    with pytest.raises(vx.SiteError, match="site 'g'.*mvd\\(\\) supports"):
        vx.estimate(vx.objectives.elbo(), model, guide, {"a": jnp.array(2.0)},
                    estimators={"g": E.mvd()})


def test_enum_too_many_values():
    def guide(x=None):
        with numpyro.plate("n", 20):
            numpyro.sample("z", dist.Bernoulli(0.5))

    def model(x=None):
        with numpyro.plate("n", 20):
            numpyro.sample("z", dist.Bernoulli(0.5))

    with pytest.raises(vx.SiteError, match="site 'z'.*2\\^20 joint values"):
        vx.estimate(vx.objectives.elbo(), model, guide, {}, estimators={"z": E.enum()})
