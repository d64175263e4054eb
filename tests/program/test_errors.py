"""Bad input gets an error that names the site or argument and says what to do."""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import gaussian_guide, gaussian_model

import vi_ext as vx

PARAMS = {"m": jnp.array(0.3), "s": jnp.array(0.8)}


def test_guide_missing_a_model_site():
    def model(x=None):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        numpyro.sample("x", dist.Normal(z + w, 1.0), obs=x)

    with pytest.raises(vx.SiteError, match="site 'w'.*guide does not provide it") as e:
        vx.estimate(vx.objectives.elbo(), model, gaussian_guide, PARAMS, x=1.0)
    assert e.value.site == "w"


def test_mismatched_shapes():
    def model(x=None):
        with numpyro.plate("n", 3):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("x", dist.Normal(z.sum(), 1.0), obs=x)

    with pytest.raises(vx.SiteError, match=r"site 'z'.*shape \(\).*shape \(3,\)"):
        vx.estimate(vx.objectives.elbo(), model, gaussian_guide, PARAMS, x=1.0)


def test_reparam_asked_of_a_discrete_site():
    def guide(x=None):
        p = numpyro.param("p", 0.5, constraint=dist.constraints.unit_interval)
        numpyro.sample("z", dist.Bernoulli(p))

    def model(x=None):
        z = numpyro.sample("z", dist.Bernoulli(0.5))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(vx.SiteError, match="site 'z'.*reparam.*Bernoulli.*discrete"):
        vx.estimate(vx.objectives.elbo(), model, guide, {"p": jnp.array(0.5)}, x=1.0,
                    estimators={"z": vx.estimators.reparam()})
    with pytest.raises(vx.SiteError, match="site 'z'.*cannot be reparameterized"):
        vx.estimate(vx.objectives.elbo(), model, guide, {"p": jnp.array(0.5)}, x=1.0)


def test_strategy_for_a_site_that_does_not_exist():
    with pytest.raises(vx.SiteError, match="site 'nope'.*no latent site of that name.*'z'"):
        vx.estimate(vx.objectives.elbo(), gaussian_model, gaussian_guide, PARAMS, x=1.0,
                    estimators={"nope": vx.estimators.reparam()})


def test_not_a_strategy():
    with pytest.raises(vx.SiteError, match="site 'z'.*not a strategy"):
        vx.estimate(vx.objectives.elbo(), gaussian_model, gaussian_guide, PARAMS, x=1.0,
                    estimators={"z": "reparam"})


def test_unknown_objective_name():
    with pytest.raises(vx.ArgumentError, match="unknown objective name 'elbow'.*elbo"):
        vx.estimate("elbow", gaussian_model, gaussian_guide, PARAMS, x=1.0)


def test_bad_key():
    with pytest.raises(vx.ArgumentError, match="argument 'key'"):
        vx.estimate("elbo", gaussian_model, gaussian_guide, PARAMS, key="zero", x=1.0)


def test_non_scalar_program():
    @vx.program.expectation
    def vector(model, guide, *args, **kwargs):
        return vx.program.particles(2, lambda: vx.program.sim(guide, *args, **kwargs).log_density)

    with pytest.raises(vx.ArgumentError, match="must return a scalar"):
        vx.estimate(vector, gaussian_model, gaussian_guide, PARAMS, x=1.0)
