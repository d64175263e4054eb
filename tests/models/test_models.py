"""The example models: data, shapes, finite log densities, the NUTS fixture."""

import json
import os

import jax
import numpy as np
import pytest
from numpyro.infer import Predictive
from numpyro.infer.util import log_density

from models import eight_schools, logistic_regression

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "eight_schools_nuts.json")


@pytest.mark.parametrize("fn", [eight_schools.centered, eight_schools.noncentered])
def test_eight_schools_prior_predictive(fn):
    d = eight_schools.data()
    out = Predictive(fn, num_samples=3)(jax.random.PRNGKey(0), d["J"], d["sigma"], y=None)
    assert out["y"].shape == (3, 8) and out["mu"].shape == (3,)
    assert eight_schools.model is eight_schools.noncentered


def test_logistic_regression_data_and_model():
    d = logistic_regression.data()
    assert d["X"].shape == (569, 30) and set(np.unique(d["y"])) == {0, 1}
    np.testing.assert_allclose(d["X"].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(d["X"].std(0), 1, atol=1e-4)
    out = Predictive(logistic_regression.model, num_samples=2)(jax.random.PRNGKey(0), d["X"])
    assert out["y"].shape == (2, 569) and out["beta"].shape == (2, 30)
    lp, _ = log_density(logistic_regression.model, (), d,
                        {"alpha": 0.0, "beta": np.zeros(30, np.float32)})
    np.testing.assert_allclose(lp, 569 * np.log(0.5) + _normal_lp(0, 5) + 30 * _normal_lp(0, 1),
                               rtol=1e-5)
    train, test = logistic_regression.split(seed=0)
    assert train["X"].shape[0] + test["X"].shape[0] == 569


def _normal_lp(x, s):
    return -0.5 * np.log(2 * np.pi * s**2) - 0.5 * (x / s) ** 2


def test_nuts_fixture():
    with open(FIXTURE) as f:
        ref = json.load(f)
    sites = ref["noncentered"]["sites"]
    assert set(sites) >= {"mu", "tau", "theta_tilde", "theta"}
    for s in sites.values():
        assert np.all(np.isfinite(s["mean"])) and np.all(np.asarray(s["sd"]) > 0)
        assert s["r_hat_max"] < 1.01
    assert ref["noncentered"]["divergences"] == 0
