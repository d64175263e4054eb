"""Models with Sinkhorn inside, fitted by vx.fit: latent matching and an OT likelihood."""

import numpy as np
import optax
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.initialization import init_to_median

import vi_ext as vx
from models import optimal_transport as ot


def _mean_field(model):
    return AutoNormal(model, init_loc_fn=init_to_median(num_samples=15))


def _check(res, truth):
    draws = res.sample(2000, key=1)
    for name, value in truth.items():
        mean, sd = draws[name].mean(0), draws[name].std(0)
        # the fitted posterior covers the truth: within 4 of its standard deviations
        assert np.all(np.abs(mean - value) < 4 * sd), (name, mean, sd, value)


def test_shuffled_regression_recovers_the_weights_without_the_matching():
    # (a mean-field guide, one particle: the Sinkhorn solve is the cost of every step)
    res = vx.fit(ot.shuffled_regression, **ot.shuffled_data(), num_steps=800, key=0,
                 guide=_mean_field(ot.shuffled_regression), progress=False)
    assert res.num_rejected == 0
    _check(res, {"w": np.array([2.0, -1.0])})


def test_an_ot_likelihood_fits_a_clouds_location_and_scale():
    res = vx.fit(ot.cloud_likelihood, **ot.cloud_data(), num_steps=400, key=0, progress=False,
                 guide=_mean_field(ot.cloud_likelihood), optimizer=optax.adam(0.05))
    assert res.num_rejected == 0
    _check(res, {"loc": np.array([1.0, -2.0]), "log_scale": np.log(0.5)})
