"""FitResult: draws, summaries, ArviZ data, the predictive, plots (vi_ext.result)."""

import os
import warnings

import jax
import numpy as np
import pytest

from models import eight_schools


def test_fit_result_surface(eight_schools_fit, tmp_path):
    res = eight_schools_fit
    # fit's defaults: the stopping rule ended it
    assert res.converged and isinstance(res.losses, np.ndarray)
    assert res.losses.shape == (int(res.state.step),) and len(res.losses) < 20000
    assert np.all(np.isfinite(res.losses)) and res.num_rejected == 0
    # the loss goes down
    assert res.losses[-500:].mean() < res.losses[:100].mean()
    draws = res.sample(7, key=2)
    assert set(draws) == {"mu", "tau", "theta_tilde", "theta"}
    assert draws["mu"].shape == (7,) and draws["theta"].shape == (7, 8)
    again = res.sample(7, key=2)
    np.testing.assert_array_equal(draws["theta"], again["theta"])
    summary = res.summary(num_samples=200)
    assert "mean" in summary.columns and "theta[0]" in summary.index
    idata = res.to_arviz(num_samples=50)
    assert idata.posterior["theta"].shape == (1, 50, 8)
    pred = res.predictive(num_samples=11)

    data = eight_schools.data()
    out = pred(jax.random.PRNGKey(0), data["J"], data["sigma"], y=None)
    assert out["y"].shape == (11, 8)
    path = res.plot(str(tmp_path / "loss.png"))
    assert os.path.getsize(path) > 1000
    assert "elbo" in repr(res)


def test_plot_shows_losses_and_marginals_against_the_prior(eight_schools_fit, tmp_path):
    pytest.importorskip("matplotlib")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = eight_schools_fit.plot(str(tmp_path / "fit.png"), num_samples=500)
    assert os.path.getsize(path) > 20_000
    prior = eight_schools_fit.prior_sample(200)
    assert set(prior) >= {"mu", "tau", "theta"} and prior["theta"].shape == (200, 8)
