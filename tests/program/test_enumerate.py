"""Model sites summed out plate by plate (vi_ext.program.enumerate), against brute-force
sums over every joint assignment, and through fit, sample and the diagnostics."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy.special import logsumexp
from numpyro import handlers

import vi_ext as vx
from vi_ext.program.enumerate import model_log_density

X = jnp.array([-2.0, 0.1, 2.5, 3.0, -1.0])
W = jnp.array([0.2, 0.5, 0.3])
MU = jnp.array([-2.0, 0.0, 3.0])
PARALLEL = {"enumerate": "parallel"}


def mixture(x, scale=1.0):
    mu = numpyro.param("mu", MU)
    with handlers.scale(scale=scale), numpyro.plate("data", len(x)):
        c = numpyro.sample("c", dist.Categorical(W), infer=PARALLEL)
        numpyro.sample("x", dist.Normal(mu[c], 1.0), obs=x)


def exact_mixture(mu, x=X):
    return jnp.sum(logsumexp(jnp.log(W) + dist.Normal(mu, 1.0).log_prob(x[:, None]), axis=1))


def _density_objective(values):
    return vx.program.expectation(
        lambda m, g, *a, **k: vx.program.density(m, values, *a, **k))


def _no_guide(*args, **kwargs):
    pass


def test_the_summed_density_and_its_gradient_are_exact():
    value, grads = vx.estimate(_density_objective({}), mixture, _no_guide, {"mu": MU}, X)
    np.testing.assert_allclose(value, exact_mixture(MU), rtol=1e-6)
    np.testing.assert_allclose(grads["mu"], jax.grad(exact_mixture)(MU), rtol=1e-5)


def test_it_equals_the_sum_over_every_joint_assignment():
    def brute():
        terms = []
        for cs in itertools.product(range(3), repeat=len(X)):
            tr = handlers.trace(handlers.condition(mixture, {"c": jnp.array(cs)})).get_trace(X)
            terms.append(sum(jnp.sum(s["fn"].log_prob(s["value"])) for s in tr.values()
                             if s["type"] == "sample"))
        return logsumexp(jnp.array(terms))

    ours = model_log_density(mixture, {}, jax.random.PRNGKey(0), X)
    np.testing.assert_allclose(ours, brute(), rtol=1e-6)


def test_a_plate_scale_applies_after_the_sum():
    ours = model_log_density(mixture, {}, jax.random.PRNGKey(0), X, scale=2.5)
    np.testing.assert_allclose(ours, 2.5 * exact_mixture(MU), rtol=1e-6)


def nested(y):
    with numpyro.plate("groups", y.shape[1], dim=-1):
        c = numpyro.sample("c", dist.Bernoulli(0.3), infer=PARALLEL)
        with numpyro.plate("members", y.shape[0], dim=-2):
            numpyro.sample("y", dist.Normal(2.0 * c, 1.0), obs=y)


def test_factors_in_deeper_plates_multiply_within_each_position():
    y = jnp.array([[0.1, 2.2, 1.0], [-0.3, 1.9, 1.2]])  # [members, groups]
    per_k = jnp.stack([jnp.log(0.7) + dist.Normal(0.0, 1.0).log_prob(y).sum(0),
                       jnp.log(0.3) + dist.Normal(2.0, 1.0).log_prob(y).sum(0)])
    ours = model_log_density(nested, {}, jax.random.PRNGKey(0), y)
    np.testing.assert_allclose(ours, jnp.sum(logsumexp(per_k, axis=0)), rtol=1e-6)


def chain(x):
    a = numpyro.sample("a", dist.Bernoulli(0.5), infer=PARALLEL)
    b = numpyro.sample("b", dist.Bernoulli(0.5), infer=PARALLEL)
    numpyro.sample("x", dist.Normal(a + b, 1.0), obs=x)


def continuous(x):
    z = numpyro.sample("z", dist.Normal(0.0, 1.0), infer=PARALLEL)
    numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


@pytest.mark.parametrize("model, site, match", [
    (chain, "x", "depends on the enumerated sites"),
    (continuous, "z", "no finite support"),
])
def test_what_cannot_be_summed_out_is_refused_by_name(model, site, match):
    with pytest.raises(vx.SiteError, match=match) as e:
        model_log_density(model, {}, jax.random.PRNGKey(0), 0.5)
    assert e.value.site == site


def gmm(x):
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(2)))
    with numpyro.plate("k", 2):
        mu = numpyro.sample("mu", dist.Normal(jnp.array([-1.0, 1.0]), 5.0))
    with numpyro.plate("data", len(x)):
        c = numpyro.sample("c", dist.Categorical(w), infer=PARALLEL)
        numpyro.sample("x", dist.Normal(mu[c], 1.0), obs=x)


@pytest.fixture(scope="module")
def gmm_fit():
    rng = np.random.default_rng(0)
    x = jnp.asarray(np.concatenate([rng.normal(-3, 1, 30), rng.normal(3, 1, 20)]))
    return vx.fit(gmm, x, num_steps=1500, key=0, progress=False)


def test_fit_sums_the_assignments_out_and_sample_draws_them_from_their_posterior(gmm_fit):
    assert not any(k.startswith("c") for k in gmm_fit.params)  # the guide has no c
    assert gmm_fit.enumerated_sites() == ["c"]
    d = gmm_fit.sample(1000, key=1)
    assert d["c"].shape == (1000, 50)
    mu = d["mu"].mean(0)
    assert mu[0] < -2 and mu[1] > 2  # the two clusters, in the prior's order
    # points at the clusters' centres belong to them with near certainty
    x = np.asarray(gmm_fit.model_args[0])
    deep = np.abs(x - np.where(np.arange(50) < 30, -3.0, 3.0)) < 0.5
    assert np.all(d["c"][:, deep & (np.arange(50) < 30)].mean(0) < 0.01)
    assert np.all(d["c"][:, deep & (np.arange(50) >= 30)].mean(0) > 0.99)


def test_the_diagnostics_score_the_summed_model(gmm_fit):
    latents, lw = vx.diagnostics.weighted_draws(gmm_fit, 200, key=2)
    # each log weight is log p(x, w, mu) - log q(w, mu), the assignments summed out
    i = 7
    values = {k: v[i] for k, v in latents.items()}
    log_p = model_log_density(gmm, values, jax.random.PRNGKey(0), *gmm_fit.model_args)
    guide = handlers.condition(handlers.substitute(gmm_fit.guide, data=gmm_fit.params), values)
    tr = handlers.trace(handlers.seed(guide, 0)).get_trace(*gmm_fit.model_args)
    assert "c" not in values and np.isfinite(lw).all()
    assert float(log_p) - lw[i] == pytest.approx(
        float(sum(jnp.sum(s["fn"].log_prob(values[n])) for n, s in tr.items()
                  if s["type"] == "sample" and n in values)), rel=1e-4)
