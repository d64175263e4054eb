"""vx.fit: models, guides, reproducibility, FitResult, and every error path."""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from conftest import gaussian_guide, gaussian_model
from numpyro.infer.autoguide import AutoDelta, AutoMultivariateNormal

import vi_ext as vx

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "eight_schools_nuts.json")


def test_noncentered_eight_schools_matches_nuts(eight_schools_fit):
    """Guide means agree with a long NUTS run.

    The tolerance is an approximation-quality bound, not a Monte Carlo one: mean-field VI is
    biased, so we ask for a standardized error |mean_q - mean_nuts| / sd_nuts below 0.25 for
    every latent, plus 4 Monte Carlo standard errors of both estimates.
    """
    with open(FIXTURE) as f:
        ref = json.load(f)
    ref = ref.get("noncentered", ref)
    draws = eight_schools_fit.sample(4000, key=1)
    for name in ("mu", "tau", "theta_tilde", "theta"):
        r = ref["sites"][name] if "sites" in ref else ref[name]
        mean_ref, sd_ref = np.asarray(r["mean"]), np.asarray(r["sd"])
        mcse_ref = np.asarray(r.get("mcse_mean", r.get("mcse", 0.0)))
        mean_q = draws[name].mean(0)
        mcse_q = draws[name].std(0) / np.sqrt(draws[name].shape[0])
        tol = 0.25 * sd_ref + 4 * np.sqrt(mcse_q**2 + mcse_ref**2)
        err = np.abs(mean_q - mean_ref)
        assert np.all(err <= tol), (name, mean_q, mean_ref, sd_ref)


def test_fit_result_surface(eight_schools_fit, tmp_path):
    res = eight_schools_fit
    assert isinstance(res.losses, np.ndarray) and res.losses.shape == (4000,)
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
    from models import eight_schools

    data = eight_schools.data()
    out = pred(jax.random.PRNGKey(0), data["J"], data["sigma"], y=None)
    assert out["y"].shape == (11, 8)
    path = res.plot(str(tmp_path / "loss.png"))
    assert os.path.getsize(path) > 1000
    assert "elbo" in repr(res)
    assert int(res.state.step) == 4000


def test_logistic_regression_fits():
    from models import logistic_regression

    data = logistic_regression.data()
    res = vx.fit(logistic_regression.model, num_steps=1500, key=0, progress=False, **data)
    draws = res.sample(200, key=0)
    names = [n for n in draws if draws[n].ndim == 2 and draws[n].shape[1] == data["X"].shape[1]]
    assert names, draws.keys()
    coefs = draws[names[0]].mean(0)
    intercept_names = [n for n in draws if draws[n].ndim == 1]
    b = draws[intercept_names[0]].mean() if intercept_names else 0.0
    accuracy = np.mean(((np.asarray(data["X"]) @ coefs + b) > 0) == np.asarray(data["y"]))
    assert accuracy > 0.95
    assert res.losses[-100:].mean() < res.losses[:20].mean()


def test_same_key_same_fit_bit_for_bit_and_chunking_does_not_matter():
    kw = dict(x=1.3, guide=gaussian_guide, num_steps=60, progress=False)
    a = vx.fit(gaussian_model, key=4, chunk_size=60, **kw)
    b = vx.fit(gaussian_model, key=4, chunk_size=60, **kw)
    c = vx.fit(gaussian_model, key=4, chunk_size=7, **kw)
    d = vx.fit(gaussian_model, key=5, chunk_size=60, **kw)
    for n in ("m", "s"):
        assert float(a.params[n]) == float(b.params[n])
        np.testing.assert_allclose(a.params[n], c.params[n], rtol=1e-6)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert float(a.params["m"]) != float(d.params["m"])


def test_handwritten_guide_converges_to_exact_posterior():
    schedule = optax.cosine_decay_schedule(0.05, 2000, alpha=0.01)
    res = vx.fit(gaussian_model, x=1.3, guide=gaussian_guide, num_steps=2000, key=0,
                 progress=False, optimizer=optax.adam(schedule),
                 objective=vx.objectives.elbo(num_particles=8))
    # exact posterior N(0.65, 1/2); the decayed step size leaves little optimizer noise
    assert abs(float(res.params["m"]) - 0.65) < 0.05
    assert abs(float(res.params["s"]) - np.sqrt(0.5)) < 0.05
    assert res.params["s"] > 0  # constrained


@pytest.mark.parametrize("guide_cls", [AutoMultivariateNormal, AutoDelta])
def test_other_autoguides(guide_cls):
    res = vx.fit(gaussian_model, x=1.3, guide=guide_cls(gaussian_model), num_steps=300,
                 progress=False)
    assert np.all(np.isfinite(res.losses))
    assert res.sample(5)["z"].shape == (5,)


def test_model_params_are_fitted():
    def model(x):
        loc = numpyro.param("loc", 0.0)
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        pass

    x = jnp.array([2.0, 3.0, 4.0])
    res = vx.fit(model, x, guide=guide, num_steps=500, progress=False,
                 optimizer=optax.adam(0.05))
    assert abs(float(res.params["loc"]) - 3.0) < 0.05


# ---------------------------------------------------------------------------- errors


def test_discrete_latent_with_default_guide_names_the_site():
    def model(x=None):
        c = numpyro.sample("c", dist.Categorical(jnp.ones(3) / 3))
        numpyro.sample("x", dist.Normal(c, 1.0), obs=x)

    with pytest.raises(vx.SiteError, match="site 'c'.*discrete latent.*estimators=") as e:
        vx.fit(model, x=1.0, num_steps=10, progress=False)
    assert e.value.site == "c"


def test_a_model_non_finite_everywhere_names_the_site_for_the_default_guide():
    """AutoNormal finds no finite starting point: NumPyro's bare RuntimeError becomes a
    SiteError naming the site at fault."""
    def model(x=1.0):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=x)
        numpyro.factor("penalty", jnp.log(-1.0 - z**2))   # log of a negative number

    with pytest.raises(vx.SiteError, match="site 'penalty'.*non-finite at every one") as e:
        vx.fit(model, num_steps=10, progress=False)
    assert e.value.site == "penalty"


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=-3), "num_steps"),
        (dict(num_steps=2.5), "num_steps"),
        (dict(objective="elbow"), "objective"),
        (dict(objective=3), "objective"),
        (dict(optimizer="adam"), "optimizer"),
        (dict(guide="auto"), "guide"),
        (dict(key="zero"), "key"),
        (dict(progress="yes"), "progress"),
        (dict(max_rejections=0), "max_rejections"),
        (dict(init_params={"nope": 1.0}, guide=gaussian_guide), "init_params"),
    ],
)
def test_bad_arguments_fail_fast(kwargs, argument):
    t = time.perf_counter()
    with pytest.raises(vx.ArgumentError) as e:
        vx.fit(gaussian_model, x=1.0, **{"num_steps": 10, "progress": False, **kwargs})
    assert e.value.argument == argument
    assert time.perf_counter() - t < 2.0  # before any compilation


def test_not_a_model():
    with pytest.raises(vx.ArgumentError, match="argument 'model'"):
        vx.fit("eight_schools", num_steps=10)


def nan_model(x=None):
    """Finite for z < 2, NaN beyond: fit must reject those steps and say where."""
    z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    scale = jnp.where(z < 2.0, 1.0, jnp.nan)
    numpyro.sample("x", dist.Normal(z, scale), obs=x)


def test_rare_nonfinite_steps_are_rejected_and_reported():
    def guide(x=None):
        m = numpyro.param("m", 0.0)
        numpyro.sample("z", dist.Normal(m, 1.0))

    with pytest.warns(RuntimeWarning, match=r"rejected \d+ of 400 steps.*first at step \d+"):
        res = vx.fit(nan_model, x=0.5, guide=guide, num_steps=400, progress=False,
                     optimizer=optax.adam(1e-3))
    assert res.num_rejected > 0
    assert np.all(np.isfinite(res.params["m"]))
    assert np.sum(~np.isfinite(res.losses)) == res.num_rejected


def test_persistent_nonfinite_stops_with_last_good_params():
    def guide(x=None):
        m = numpyro.param("m", 0.0)
        numpyro.sample("z", dist.Normal(m, 0.01))

    # the data pull m towards 10, where every draw is NaN
    with pytest.raises(vx.NonFiniteError, match=r"consecutive steps.*starting at step \d+.*"
                       r"non-finite at: x \(model\)") as e:
        vx.fit(nan_model, x=10.0, guide=guide, num_steps=3000, progress=False,
               optimizer=optax.sgd(0.05), max_rejections=5)
    err = e.value
    assert err.step >= 0 and err.sites == ("x (model)",)
    assert np.isfinite(err.last_good_params["m"]) and float(err.last_good_params["m"]) < 2.5
    assert err.result.params["m"] == err.last_good_params["m"]
