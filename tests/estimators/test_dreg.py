"""Doubly reparameterized gradients: unbiased for IWAE, lower variance, zero at the posterior."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gaussian_guide, gaussian_model
from test_reinforce import estimates

import vi_ext as vx

X = 1.3
PARAMS = {"m": jnp.array(0.3), "s": jnp.array(0.8)}


def _diff_within(a, b, n_se=4.0):
    """Two independent unbiased estimators of the same mean agree within n_se errors."""
    a, b = np.asarray(a), np.asarray(b)
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) <= n_se * se, (a.mean(), b.mean(), se)


@pytest.mark.parametrize("k", [1, 8])
def test_dreg_matches_the_iwae_gradient(k):
    obj = vx.objectives.iwae(k)
    _, dreg = estimates(obj, gaussian_model, gaussian_guide, PARAMS,
                        {"z": vx.estimators.dreg()}, x=X)
    _, plain = estimates(obj, gaussian_model, gaussian_guide, PARAMS,
                         {"z": vx.estimators.reparam()}, x=X)
    for name in ("m", "s"):
        _diff_within(dreg[name], plain[name])


def test_dreg_has_lower_variance_for_many_particles_and_none_at_the_posterior():
    obj = vx.objectives.iwae(32)
    _, dreg = estimates(obj, gaussian_model, gaussian_guide, PARAMS,
                        {"z": vx.estimators.dreg()}, n=500, x=X)
    _, plain = estimates(obj, gaussian_model, gaussian_guide, PARAMS,
                         {"z": vx.estimators.reparam()}, n=500, x=X)
    assert np.var(dreg["s"]) < 0.5 * np.var(plain["s"])
    post = {"m": jnp.array(X / 2), "s": jnp.sqrt(jnp.array(0.5))}
    _, at_post = estimates(obj, gaussian_model, gaussian_guide, post,
                           {"z": vx.estimators.dreg()}, n=50, x=X)
    assert np.max(np.abs(at_post["m"])) < 1e-4 and np.max(np.abs(at_post["s"])) < 1e-4


def test_dreg_model_parameter_gradient_is_the_iwae_one():
    import numpyro
    import numpyro.distributions as dist

    def model(x=None):
        loc = numpyro.param("loc", 0.2)
        z = numpyro.sample("z", dist.Normal(loc, 1.0))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=x)

    params = {**PARAMS, "loc": jnp.array(0.2)}
    obj = vx.objectives.iwae(4)
    _, dreg = estimates(obj, model, gaussian_guide, params, {"z": vx.estimators.dreg()}, x=X)
    _, plain = estimates(obj, model, gaussian_guide, params, {"z": vx.estimators.reparam()},
                         x=X)
    _diff_within(dreg["loc"], plain["loc"])


def test_dreg_fits_with_iwae():
    res = vx.fit(gaussian_model, x=X, guide=gaussian_guide, objective=vx.objectives.iwae(8),
                 estimators={"z": vx.estimators.dreg()}, num_steps=1500, progress=False)
    # with K = 8 the IWAE optimum of a Gaussian guide is close to the exact posterior
    assert abs(float(res.params["m"]) - X / 2) < 0.1


def test_dreg_refused_for_objectives_it_is_not_derived_for():
    with pytest.raises(vx.SiteError, match="site 'z'.*dreg"):
        vx.estimate(vx.objectives.renyi(0.5, 4), gaussian_model, gaussian_guide, PARAMS, x=X,
                    estimators={"z": vx.estimators.dreg()})

    def two_calls(model, guide, *args, **kwargs):
        from vi_ext.objectives.iwae import log_weight
        from vi_ext.program import logmeanexp, particles

        a = logmeanexp(particles(2, log_weight, model, guide, *args, **kwargs))
        b = logmeanexp(particles(3, log_weight, model, guide, *args, **kwargs))
        return a + b

    with pytest.raises(vx.SiteError, match="site .z.*one\\s+vx.program.particles"):
        vx.estimate(vx.program.Objective(two_calls, "mine"), gaussian_model, gaussian_guide,
                    PARAMS, x=X, estimators={"z": vx.estimators.dreg()})
