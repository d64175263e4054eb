"""vx.estimate: unbiased value and gradient of the ELBO against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import gaussian_guide, gaussian_model

import vi_ext as vx
from vi_ext.program import Choices, density, expectation, logmeanexp, particles, sim

X = 1.3
M, S = 0.3, 0.8


def exact_elbo(m, s, x=X):
    """ELBO of q = N(m, s^2) for z ~ N(0,1), x ~ N(z,1), in closed form."""
    e_log_p = -jnp.log(2 * jnp.pi) - 0.5 * ((m**2 + s**2) + ((x - m) ** 2 + s**2))
    entropy = 0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2)
    return e_log_p + entropy


def many_estimates(objective, n=4000, estimators=None):
    params = {"m": jnp.array(M), "s": jnp.array(S)}
    keys = jax.random.split(jax.random.PRNGKey(1), n)

    @jax.jit
    def run(keys):
        return jax.vmap(
            lambda k: vx.estimate(objective, gaussian_model, gaussian_guide, params, key=k,
                                  estimators=estimators, x=X)
        )(keys)

    return run(keys)


def assert_unbiased(samples, exact, n_se=4.0):
    samples = np.asarray(samples)
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(samples.mean() - float(exact)) <= n_se * se + 1e-6, (
        samples.mean(), float(exact), se)


@pytest.mark.parametrize("num_particles", [1, 3])
def test_elbo_value_and_gradient_unbiased(num_particles):
    values, grads = many_estimates(vx.objectives.elbo(num_particles))
    exact_value = exact_elbo(M, S)
    exact_grad = jax.grad(exact_elbo, argnums=(0, 1))(M, S)
    assert_unbiased(values, exact_value)
    assert_unbiased(grads["m"], exact_grad[0])
    assert_unbiased(grads["s"], exact_grad[1])


def test_user_written_objective_matches_library_elbo():
    @expectation(name="hand_elbo")
    def hand_elbo(model, guide, *args, **kwargs):
        q = sim(guide, *args, **kwargs)
        return density(model, q, *args, **kwargs) - q.log_density

    params = {"m": jnp.array(M), "s": jnp.array(S)}
    a = vx.estimate(hand_elbo, gaussian_model, gaussian_guide, params, key=3, x=X)
    b = vx.estimate(vx.objectives.elbo(), gaussian_model, gaussian_guide, params, key=3, x=X)
    assert hand_elbo.name == "hand_elbo"
    np.testing.assert_allclose(a[0], b[0])
    np.testing.assert_allclose(a[1]["m"], b[1]["m"])


def test_estimate_accepts_typed_key_and_name_and_is_deterministic():
    params = {"m": jnp.array(M), "s": jnp.array(S)}
    v1, g1 = vx.estimate("elbo", gaussian_model, gaussian_guide, params, key=jax.random.key(5),
                         x=X)
    v2, g2 = vx.estimate("elbo", gaussian_model, gaussian_guide, params, key=jax.random.key(5),
                         x=X)
    assert float(v1) == float(v2) and float(g1["s"]) == float(g2["s"])


def test_particles_and_logmeanexp():
    @expectation
    def iw_bound(model, guide, *args, **kwargs):
        def one():
            q = sim(guide, *args, **kwargs)
            return density(model, q, *args, **kwargs) - q.log_density

        return logmeanexp(particles(5, one))

    params = {"m": jnp.array(M), "s": jnp.array(S)}
    values, _ = jax.vmap(
        lambda k: vx.estimate(iw_bound, gaussian_model, gaussian_guide, params, key=k, x=X)
    )(jax.random.split(jax.random.PRNGKey(0), 500))
    log_evidence = dist.Normal(0.0, jnp.sqrt(2.0)).log_prob(X)
    # an importance-weighted bound lies between the ELBO and log p(x)
    assert exact_elbo(M, S) < values.mean() < log_evidence
    np.testing.assert_allclose(logmeanexp(jnp.array([0.0, jnp.log(3.0)])), jnp.log(2.0),
                               rtol=1e-6)


def test_primitives_outside_transformation_raise():
    with pytest.raises(vx.VIError, match="outside an objective transformation"):
        sim(gaussian_guide, x=X)


def test_grads_reach_model_params():
    def model(x=None):
        loc = numpyro.param("prior_loc", 0.0)
        z = numpyro.sample("z", dist.Normal(loc, 1.0))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=x)

    params = {"m": jnp.array(M), "s": jnp.array(S), "prior_loc": jnp.array(0.0)}
    _, grads = vx.estimate(vx.objectives.elbo(), model, gaussian_guide, params, key=0, x=X)
    # d/d loc E_q[log N(z; loc, 1)] = E_q[z - loc] = m, exactly (no sampling in this term's mean)
    assert set(grads) == {"m", "s", "prior_loc"}
    assert np.isfinite(grads["prior_loc"])


def test_choices_dict_accepted_by_density():
    @expectation
    def with_dict(model, guide, *args, **kwargs):
        q = sim(guide, *args, **kwargs)
        assert isinstance(q, Choices)
        return density(model, dict(q.values), *args, **kwargs) - q.log_density

    params = {"m": jnp.array(M), "s": jnp.array(S)}
    v, _ = vx.estimate(with_dict, gaussian_model, gaussian_guide, params, key=0, x=X)
    assert np.isfinite(v)


def test_a_guide_whose_transform_has_no_inverse_scores_its_draws_from_intermediates():
    """AutoBNAFNormal's flow has no inverse: sim must score the draw with the intermediates
    NumPyro records at sampling (it used to recompute log q from the value and fail); the
    strategies that need log q at a given value refuse it by name."""
    from numpyro.infer.autoguide import AutoBNAFNormal

    def model():
        numpyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    guide = AutoBNAFNormal(model, hidden_factors=[2])
    params = vx.init_params(model, guide)
    value, grads = vx.estimate(vx.objectives.elbo(), model, guide, params, key=0)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))
    with pytest.raises(vx.SiteError, match="site '_auto_latent'.*stl\\(\\).*reparam"):
        vx.estimate(vx.objectives.elbo(), model, guide, params, key=0,
                    estimators={"_auto_latent": vx.estimators.stl()})
