"""Diagnostics of a fitted guide against their closed forms (vi_ext.diagnostics)."""


import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from conftest import gaussian_guide

import vi_ext as vx


def _fixed(m, s):
    """A FitResult of gaussian_guide at (m, s) on a prior-only model z ~ N(0, 1)."""

    def prior_model(x=None):
        numpyro.sample("z", dist.Normal(0.0, 1.0))

    res = vx.fit(prior_model, guide=gaussian_guide, num_steps=1, progress=False,
                 init_params={"m": m, "s": s}, optimizer=optax.sgd(0.0))
    res.params = {"m": jnp.array(m), "s": jnp.array(s)}
    return res


def test_elbo_matches_its_closed_form():
    m, s = 0.4, 0.7
    res = _fixed(m, s)
    est = res.elbo(num_samples=4000, key=1)
    exact = -(s**2 + m**2 - 1.0) / 2 + np.log(s)  # -KL(N(m, s) || N(0, 1))
    assert est.se > 0
    assert abs(est.value - exact) < 4 * est.se


def test_gradient_variance_matches_its_closed_form():
    # reparameterized ELBO gradient in m is -(m + s eps): variance s^2
    m, s, n = 0.4, 0.7, 400
    gv = _fixed(m, s).gradient_variance(num_samples=n, key=2)
    assert set(gv) == {"m", "s"}
    assert abs(gv["m"] - s**2) < 4 * s**2 * np.sqrt(2.0 / (n - 1))


def test_psis_khat_tells_a_narrow_guide_from_a_wide_one():
    narrow = _fixed(0.0, 0.3).psis_khat(num_samples=2000)
    wide = _fixed(0.0, 1.3).psis_khat(num_samples=2000)
    assert len(narrow.values) == 5 and narrow.verdict == "unreliable" and narrow.mean > 0.7
    assert wide.verdict == "good" and wide.max < 0.5


def test_log_predictive_matches_its_closed_form():
    # q(z) = N(m, s), y_n ~ N(z, 1): E_q p(y_n | z) = N(y_n | m, sqrt(1 + s^2))
    m, s, S = 0.4, 0.3, 4000
    res = _fixed(m, s)
    y = np.linspace(-2.0, 2.0, 7)

    def predictive_model(y=None):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", len(y)):
            numpyro.sample("y", dist.Normal(z, 1.0), obs=y)

    res.model = predictive_model
    res.guide = lambda y=None: gaussian_guide()
    res.model_kwargs = {"y": y}
    got = res.log_predictive(num_samples=S, key=3)
    exact = float(np.sum(dist.Normal(m, np.sqrt(1 + s**2)).log_prob(y)))
    # delta-method standard error of each point's log of a Monte Carlo mean, summed
    # (worst case: the points share their draws)
    z = np.asarray(dist.Normal(m, s).sample(jax.random.PRNGKey(0), (S,)))
    dens = np.exp(np.asarray(dist.Normal(z[:, None], 1.0).log_prob(y)))
    se = np.sum(dens.std(0) / (np.sqrt(S) * dens.mean(0)))
    assert abs(got - exact) < 4 * se
    pointwise = res.log_predictive(num_samples=S, key=3, pointwise=True)
    assert set(pointwise) == {"y"} and pointwise["y"].shape == (7,)
    np.testing.assert_allclose(np.sum(pointwise["y"]), got, rtol=1e-5)


def test_diagnostics_reject_bad_arguments():
    res = _fixed(0.0, 1.0)
    with pytest.raises(ValueError, match="num_samples"):
        res.elbo(num_samples=1)
    with pytest.raises(ValueError, match="num_samples"):
        res.gradient_variance(num_samples=0)
    with pytest.raises(ValueError, match="seeds"):
        res.psis_khat(seeds=())
