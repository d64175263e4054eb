"""local_enum(): the ELBO's expectation over a discrete guide site taken position by
position, against joint enumeration (every assignment), and its errors."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints

import vi_ext as vx
from models import gaussian_mixture

X = jnp.array([-4.2, 0.3, 5.1, 4.4, -3.0, 0.8])


def _params(model, guide, *args):
    return vx.init_params(model, guide, *args, key=1)


def _both(objective, model, guide, params, *args, site="c"):
    local = vx.estimate(objective, model, guide, params, *args, key=3,
                        estimators={site: vx.estimators.local_enum()})
    joint = vx.estimate(objective, model, guide, params, *args, key=3,
                        estimators={site: vx.estimators.enum()})
    return local, joint


def test_local_enumeration_equals_joint_enumeration_on_the_mixture():
    # 3^6 = 729 joint assignments against 6 x 3 local terms; the continuous sites are drawn
    # with the same keys, so value and gradient agree to rounding
    params = _params(gaussian_mixture.model, gaussian_mixture.guide, X)
    (v1, g1), (v2, g2) = _both(vx.objectives.elbo(), gaussian_mixture.model,
                               gaussian_mixture.guide, params, X)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for name in g2:
        np.testing.assert_allclose(g1[name], g2[name], rtol=2e-4, atol=1e-4, err_msg=name)
    assert float(jnp.max(jnp.abs(g1["c_logits"]))) > 0  # the guide's probabilities learn


def nested_model(x):
    """z_n ~ Bernoulli(0.3); x_nm ~ N(2 z_n - 1, 1) in an inner plate of M per n."""
    loc = numpyro.param("loc", jnp.array(1.0))
    with numpyro.plate("n", x.shape[0], dim=-2):
        z = numpyro.sample("z", dist.Bernoulli(0.3))
        with numpyro.plate("m", x.shape[1], dim=-1):
            numpyro.sample("x", dist.Normal(loc * (2 * z - 1), 1.0), obs=x)


def nested_guide(x):
    logits = numpyro.param("z_logits", jnp.zeros((x.shape[0], 1)))
    with numpyro.plate("n", x.shape[0], dim=-2):
        numpyro.sample("z", dist.Bernoulli(logits=logits))


def test_local_enumeration_with_a_deeper_plate_of_dependents():
    x = jnp.array([[1.2, 0.4, 2.0, 0.9], [-1.0, -0.3, -2.2, 0.1], [0.2, -0.1, 0.5, 0.0]])
    params = {"loc": jnp.array(0.8), "z_logits": jnp.array([[0.3], [-0.5], [1.0]])}
    (v1, g1), (v2, g2) = _both(vx.objectives.elbo(), nested_model, nested_guide, params, x,
                               site="z")
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for name in g2:
        np.testing.assert_allclose(g1[name], g2[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_local_enumeration_errors_name_the_site():
    params = _params(gaussian_mixture.model, gaussian_mixture.guide, X)
    local = {"c": vx.estimators.local_enum()}
    with pytest.raises(vx.SiteError, match="site 'c'.*local_enum.*not affine in"):
        vx.estimate(vx.objectives.iwae(4), gaussian_mixture.model, gaussian_mixture.guide,
                    params, X, estimators=local)
    with pytest.raises(vx.SiteError, match="site 'w'.*not finite"):
        vx.estimate(vx.objectives.elbo(), gaussian_mixture.model, gaussian_mixture.guide,
                    params, X, estimators={**local, "w": vx.estimators.local_enum()})

    def dependent_guide(x):  # sigma's guide depends on the assignments
        gaussian_mixture.guide(x)
        c = numpyro.sample("c2", dist.Bernoulli(0.5))
        s = numpyro.param("s", 1.0, constraint=constraints.positive)
        numpyro.sample("extra", dist.Normal(c, s))

    def model_with_extra(x):
        gaussian_mixture.model(x)
        c = numpyro.sample("c2", dist.Bernoulli(0.5))
        numpyro.sample("extra", dist.Normal(c, 1.0))

    p2 = _params(model_with_extra, dependent_guide, X)
    with pytest.raises(vx.SiteError, match="site 'c2'.*local_enum.*uses the draw's value"):
        vx.estimate(vx.objectives.elbo(), model_with_extra, dependent_guide, p2, X,
                    estimators={**local, "c2": vx.estimators.local_enum()})

    def guide_with_stray(x):
        gaussian_mixture.guide(x)
        numpyro.sample("stray", dist.Bernoulli(0.5))

    p3 = _params(gaussian_mixture.model, gaussian_mixture.guide, X)
    with pytest.raises(vx.SiteError, match="site 'stray'.*model has no latent site"):
        vx.estimate(vx.objectives.elbo(), gaussian_mixture.model, guide_with_stray, p3, X,
                    estimators={**local, "stray": vx.estimators.local_enum()})


def test_a_fit_with_local_enumeration_finds_the_components():
    x = gaussian_mixture.data()["x"]
    res = vx.fit(gaussian_mixture.model, x, guide=gaussian_mixture.guide, num_steps=1500,
                 estimators={"c": vx.estimators.local_enum()}, progress=False, key=0)
    locs = np.sort(np.asarray(res.params["mu_loc"]))
    # 60 points, about 20 per component at unit scale: each mean's posterior sd is ~0.22
    assert np.all(np.abs(locs - gaussian_mixture.TRUE_LOCS) < 4 * 0.25)
    assert np.isfinite(res.losses[-1]) and res.losses[-1] < res.losses[0]
