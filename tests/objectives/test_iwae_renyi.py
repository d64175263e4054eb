"""IWAE and Renyi: values and reparameterized gradients on the Gaussian model."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from conftest import gaussian_guide, gaussian_model

import vi_ext as vx

X = 1.3
PARAMS = {"m": jnp.array(0.3), "s": jnp.array(0.8)}


def draws(objective, n=3000):
    keys = jax.random.split(jax.random.PRNGKey(2), n)
    f = jax.jit(jax.vmap(lambda k: vx.estimate(objective, gaussian_model, gaussian_guide,
                                               PARAMS, key=k, x=X)))
    return f(keys)


def test_bounds_are_ordered():
    log_px = float(dist.Normal(0.0, jnp.sqrt(2.0)).log_prob(X))
    means = {}
    for name, obj in [("elbo", vx.objectives.elbo()), ("iwae2", vx.objectives.iwae(2)),
                      ("iwae8", vx.objectives.iwae(8))]:
        v, _ = draws(obj)
        means[name] = (float(v.mean()), float(v.std() / np.sqrt(len(v))))
    (e, se_e), (i2, se2), (i8, se8) = means["elbo"], means["iwae2"], means["iwae8"]
    assert e < i2 + 4 * np.hypot(se_e, se2)
    assert i2 < i8 + 4 * np.hypot(se2, se8)
    assert i8 < log_px + 4 * se8


def test_renyi_limits():
    a = vx.estimate(vx.objectives.renyi(0.0, 4), gaussian_model, gaussian_guide, PARAMS, key=5,
                    x=X)
    b = vx.estimate(vx.objectives.iwae(4), gaussian_model, gaussian_guide, PARAMS, key=5, x=X)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5)
    np.testing.assert_allclose(a[1]["m"], b[1]["m"], rtol=1e-4)
    # alpha = 1 is the ELBO (same draws: same value and gradient), and alpha -> 1 tends to it
    c = vx.estimate(vx.objectives.renyi(1.0, 4), gaussian_model, gaussian_guide, PARAMS, key=5,
                    x=X)
    d = vx.estimate(vx.objectives.elbo(4), gaussian_model, gaussian_guide, PARAMS, key=5, x=X)
    np.testing.assert_allclose(c[0], d[0], rtol=1e-6)
    np.testing.assert_allclose(c[1]["m"], d[1]["m"], rtol=1e-5)
    near = vx.estimate(vx.objectives.renyi(1.0 - 1e-3, 4), gaussian_model, gaussian_guide,
                       PARAMS, key=5, x=X)
    np.testing.assert_allclose(near[0], d[0], rtol=1e-2)
    np.testing.assert_allclose(near[1]["m"], d[1]["m"], rtol=5e-2)


def test_reparam_and_reinforce_agree_on_iwae_gradient():
    """Two unbiased estimators of the same gradient: their means agree within 4 SE."""
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)

    def run(strategy):
        return jax.jit(jax.vmap(lambda k: vx.estimate(
            vx.objectives.iwae(3), gaussian_model, gaussian_guide, PARAMS, key=k, x=X,
            estimators={"z": strategy})[1]["m"]))(keys)

    a, b = np.asarray(run(vx.estimators.reparam())), np.asarray(run(
        vx.estimators.reinforce("loo")))
    se = np.hypot(a.std() / np.sqrt(len(a)), b.std() / np.sqrt(len(b)))
    assert abs(a.mean() - b.mean()) < 4 * se


def test_fit_accepts_objectives_by_name():
    for name in ("iwae", "renyi"):
        res = vx.fit(gaussian_model, x=X, guide=gaussian_guide, objective=name, num_steps=50,
                     progress=False)
        assert np.all(np.isfinite(res.losses)) and res.objective.name == name
