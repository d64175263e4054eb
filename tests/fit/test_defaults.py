"""fit(model, **data) with no tuning: the default guide, its start, objective, optimizer and
stopping rule (docs/defaults.md measures them on the 15 posteriors of models.suite)."""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from conftest import gaussian_guide, gaussian_model
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

import vi_ext as vx
from models.suite import SUITE, reference
from vi_ext.fit.fitter import MAX_FULL_RANK, default_guide
from vi_ext.start import choose_start


def test_the_inference_gyms_eight_schools_lands_with_no_tuning():
    # the case: centered, log_tau ~ N(5, 1); the prior median starts tau near e^5
    target = SUITE["eight_schools_wide_centered"]
    res = vx.fit(target.model, progress=False, **target.data())
    assert res.converged, res.stop_reason
    assert isinstance(res.guide, AutoMultivariateNormal)
    assert res.objective.num_particles == 4
    # the race fitted the non-centered form (the centered one is a funnel)
    assert res.start.noncentered == ("theta",), res.start.reason
    best = max(res.start.scores, key=res.start.scores.get)
    assert res.start.name == best and best.startswith("saa_"), res.start.scores
    ref = reference("eight_schools_wide_centered")["sites"]
    draws = res.sample(4000, key=1)
    z = np.concatenate([
        np.abs(np.ravel(draws[n].mean(0)) - np.asarray(r["mean"])) / np.asarray(r["sd"])
        for n, r in ref.items()])
    # the bar is 0.12; 4000 draws add a Monte Carlo error of about 0.01
    assert z.mean() <= 0.12, z.mean()


def _wide(n):
    def model():
        numpyro.sample("z", dist.Normal(0.0, 1.0).expand([n]).to_event(1))
    return model


@pytest.mark.parametrize("n, family", [(MAX_FULL_RANK, AutoMultivariateNormal),
                                       (MAX_FULL_RANK + 1, AutoNormal)])
def test_the_default_guide_is_full_rank_up_to_its_limit_then_mean_field(n, family):
    key = jax.random.PRNGKey(0)
    made = default_guide(_wide(n), (), {}, key, start="median")
    assert type(made.guide) is family and made.start is None


def _two_sites(x=None):
    # sampled out of alphabetical order, of different sizes and supports: the guide's flat
    # layout is the model's order, not the names'
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    a = numpyro.sample("a", dist.LogNormal(0.0, 1.0))
    numpyro.sample("x", dist.Normal(b.sum() * a, 1.0), obs=x)


def test_the_default_guide_starts_where_the_start_says():
    start = choose_start(_two_sites, x=1.3)
    made = default_guide(_two_sites, (), {"x": 1.3}, jax.random.PRNGKey(0), start=start)
    res = vx.fit(_two_sites, guide=made.guide, init_params=made.init_params, num_steps=1,
                 stopping=None, optimizer=optax.sgd(0.0), progress=False, x=1.3)
    median = res.guide.median(res.params)
    for n in ("a", "b"):
        np.testing.assert_allclose(median[n], start.values[n], rtol=1e-5, err_msg=n)
    tril = np.asarray(res.params["auto_scale_tril"])
    np.testing.assert_allclose(np.diag(tril), np.minimum(0.1, np.concatenate(
        [np.ravel(start.scales["b"]), np.ravel(start.scales["a"])])), rtol=1e-5)


def test_a_start_of_ones_own_the_median_start_and_bad_starts():
    start = choose_start(gaussian_model, x=1.3)
    opts = dict(num_steps=20, stopping=None, progress=False, x=1.3)
    res = vx.fit(gaussian_model, start=start, **opts)
    assert res.start is start
    assert vx.fit(gaussian_model, start="median", **opts).start is None
    with pytest.raises(vx.ArgumentError, match="start"):
        vx.fit(gaussian_model, start="prior", **opts)
    with pytest.raises(vx.ArgumentError, match="start.*guide of your own"):
        vx.fit(gaussian_model, guide=gaussian_guide, start="median", **opts)


def test_the_default_objective_optimizer_and_rule():
    res = vx.fit(gaussian_model, guide=gaussian_guide, x=1.3, progress=False, key=0)
    # one particle with a guide of one's own (its strategies may not run inside particles)
    assert res.objective.program.keywords["num_particles"] == 1
    assert res.converged and res.stop_reason.startswith("converged (stationary)")
    assert len(res.losses) < 20000
    # the exact posterior is N(0.65, 1/2); the params are the last phase's average
    assert float(res.params["m"]) == pytest.approx(0.65, abs=0.03)
    assert float(res.params["s"]) == pytest.approx(np.sqrt(0.5), abs=0.03)
