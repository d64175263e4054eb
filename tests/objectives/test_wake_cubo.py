"""Reweighted wake-sleep (pwake, qwake), normalize(), and the CUBO worked example."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from conftest import gaussian_guide, gaussian_model

import vi_ext as vx
from vi_ext.program import expectation, normalize

X = 1.3


def model_with_param(x=None):
    loc = numpyro.param("loc", 0.2)
    z = numpyro.sample("z", dist.Normal(loc, 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def many(objective, model, guide, params, n, **kw):
    keys = jax.random.split(jax.random.PRNGKey(4), n)
    return jax.jit(jax.vmap(lambda k: vx.estimate(objective, model, guide, params, key=k,
                                                  **kw)))(keys)


def test_pwake_gradient_is_the_model_gradient_and_the_guide_gets_none():
    params = {"m": jnp.array(0.3), "s": jnp.array(0.8), "loc": jnp.array(0.2)}
    values, grads = many(vx.objectives.pwake(1), model_with_param, gaussian_guide, params,
                         3000, x=X)
    g = np.asarray(grads["loc"])
    # K = 1: E_q[d/dloc log N(z; loc, 1)] = m - loc
    assert abs(g.mean() - (0.3 - 0.2)) < 4 * g.std() / np.sqrt(len(g))
    assert np.all(np.asarray(grads["m"]) == 0) and np.all(np.asarray(grads["s"]) == 0)


def test_normalize_is_differentiable_in_the_model_and_matches_iwae():
    """log_evidence is the IWAE estimate with the proposal held constant: its gradient in
    the model's parameters is the IWAE gradient in them (same draws), the guide's is zero."""
    params = {"m": jnp.array(0.3), "s": jnp.array(0.8), "loc": jnp.array(0.2)}

    @expectation
    def evidence(model, guide, *args, **kwargs):
        return normalize(model, guide, *args, num_particles=8, **kwargs).log_evidence

    _, g_norm = many(evidence, model_with_param, gaussian_guide, params, 3000, x=X)
    _, g_iwae = many(vx.objectives.iwae(8), model_with_param, gaussian_guide, params, 3000,
                     x=X)
    a, b = np.asarray(g_norm["loc"]), np.asarray(g_iwae["loc"])
    se = np.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(a.mean() - b.mean()) <= 4.5 * se
    assert np.all(np.asarray(g_norm["m"]) == 0)


def test_qwake_gradient_approaches_minus_grad_of_kl_p_q():
    m, s = 0.3, 0.8
    mp = X / 2  # exact posterior N(X/2, sqrt(1/2))
    params = {"m": jnp.array(m), "s": jnp.array(s)}
    _, grads = many(vx.objectives.qwake(500), gaussian_model, gaussian_guide, params, 400, x=X)
    g = np.asarray(grads["m"])
    exact = (mp - m) / s**2  # -d/dm KL(p || q)
    # tolerance: 4 standard errors plus the self-normalization bias, O(1/K) = 0.2% at K=500
    assert abs(g.mean() - exact) < 4 * g.std() / np.sqrt(len(g)) + 0.01 * abs(exact)


def test_normalize_weights_and_evidence():
    @expectation
    def evidence(model, guide, *args, **kwargs):
        post = normalize(model, guide, *args, num_particles=64, **kwargs)
        assert post.values["z"].shape == (64,)
        return post.log_evidence + 0.0 * jnp.sum(post.weights)

    params = {"m": jnp.array(X / 2), "s": jnp.sqrt(jnp.array(0.5))}  # exact posterior
    v, _ = vx.estimate(evidence, gaussian_model, gaussian_guide, params, key=0, x=X)
    np.testing.assert_allclose(v, dist.Normal(0.0, jnp.sqrt(2.0)).log_prob(X), rtol=1e-5)


def test_wake_sleep_fits_a_discrete_guide_without_any_strategy():
    def model(x=None):
        z = numpyro.sample("z", dist.Bernoulli(0.3))
        numpyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)

    def guide(x=None):
        p = numpyro.param("p", 0.5, constraint=dist.constraints.unit_interval)
        numpyro.sample("z", dist.Bernoulli(p))

    res = vx.fit(model, x=0.5, guide=guide, objective=vx.objectives.qwake(50), num_steps=1500,
                 progress=False,
                 optimizer=optax.adam(optax.cosine_decay_schedule(0.05, 1500, alpha=0.02)))
    l1 = np.log(0.3) + dist.Normal(1.0, 1.0).log_prob(0.5)
    l0 = np.log(0.7) + dist.Normal(-1.0, 1.0).log_prob(0.5)
    post = float(1 / (1 + np.exp(l0 - l1)))
    # the wake-phase optimum is the posterior, up to the O(1/K) self-normalization bias
    assert abs(float(res.params["p"]) - post) < 0.05


def test_cubo_is_exact_at_the_posterior_and_fits():
    params = {"m": jnp.array(X / 2), "s": jnp.sqrt(jnp.array(0.5))}
    v, _ = vx.estimate(vx.objectives.cubo(2.0, 8), gaussian_model, gaussian_guide, params,
                       key=0, x=X)
    np.testing.assert_allclose(-v, dist.Normal(0.0, jnp.sqrt(2.0)).log_prob(X), rtol=1e-5)
    res = vx.fit(gaussian_model, x=X, guide=gaussian_guide, objective="cubo", num_steps=300,
                 progress=False)
    assert np.all(np.isfinite(res.losses))
