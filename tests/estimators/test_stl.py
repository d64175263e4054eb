"""Sticking the landing: unbiased, and zero variance at the exact posterior."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import gaussian_guide, gaussian_model
from test_reinforce import assert_unbiased, estimates

import vi_ext as vx

X = 1.3


def exact_elbo(m, s):
    return (-jnp.log(2 * jnp.pi) - 0.5 * ((m**2 + s**2) + ((X - m) ** 2 + s**2))
            + 0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2))


def test_stl_unbiased_for_the_elbo():
    params = {"m": jnp.array(0.3), "s": jnp.array(0.8)}
    _, grads = estimates(vx.objectives.elbo(), gaussian_model, gaussian_guide, params,
                         {"z": vx.estimators.stl()}, x=X)
    gm, gs = jax.grad(exact_elbo, argnums=(0, 1))(0.3, 0.8)
    assert_unbiased(grads["m"], gm)
    assert_unbiased(grads["s"], gs)


def test_stl_has_zero_variance_at_the_posterior():
    params = {"m": jnp.array(X / 2), "s": jnp.sqrt(jnp.array(0.5))}
    _, stl = estimates(vx.objectives.elbo(), gaussian_model, gaussian_guide, params,
                       {"z": vx.estimators.stl()}, n=200, x=X)
    _, plain = estimates(vx.objectives.elbo(), gaussian_model, gaussian_guide, params,
                         {"z": vx.estimators.reparam()}, n=200, x=X)
    assert np.max(np.abs(stl["m"])) < 1e-5 and np.max(np.abs(stl["s"])) < 1e-5
    assert np.std(plain["s"]) > 0.1


def test_stl_refused_under_logmeanexp_with_a_pointer_to_dreg():
    params = {"m": jnp.array(0.3), "s": jnp.array(0.8)}
    import pytest

    with pytest.raises(vx.SiteError, match="site 'z'.*biased.*dreg"):
        vx.estimate(vx.objectives.iwae(4), gaussian_model, gaussian_guide, params, x=X,
                    estimators={"z": vx.estimators.stl()})


def test_stl_with_a_mean_of_particles_stays_unbiased():
    params = {"m": jnp.array(0.3), "s": jnp.array(0.8)}
    _, grads = estimates(vx.objectives.elbo(4), gaussian_model, gaussian_guide, params,
                         {"z": vx.estimators.stl()}, x=X)
    gm, gs = jax.grad(exact_elbo, argnums=(0, 1))(0.3, 0.8)
    assert_unbiased(grads["m"], gm)
    assert_unbiased(grads["s"], gs)
