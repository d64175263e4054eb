"""vx.fit on models and guides: what it fits, reproducibility, and every argument error."""

import json
import os

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from conftest import gaussian_guide, gaussian_model
from numpyro.infer.autoguide import AutoDelta, AutoMultivariateNormal

import vi_ext as vx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "eight_schools_nuts.json")


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


def test_learning_rate_schedules_come_from_optax():
    sched = optax.exponential_decay(0.05, transition_steps=100, decay_rate=0.5)
    res = vx.fit(gaussian_model, guide=gaussian_guide, num_steps=300, key=7, progress=False,
                 x=1.3, optimizer=optax.adam(sched))
    assert np.isfinite(res.losses).all()


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


def _counting(model):
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return model(*args, **kwargs)

    return counted, calls


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
        (dict(chunk_size=0), "chunk_size"),
        (dict(checkpoint_every=5), "checkpoint_every"),
    ],
)
def test_bad_arguments_are_named_before_the_model_runs(kwargs, argument):
    model, calls = _counting(gaussian_model)
    with pytest.raises(vx.ArgumentError) as e:
        vx.fit(model, x=1.0, **{"num_steps": 10, "progress": False, **kwargs})
    assert e.value.argument == argument
    assert not calls  # checked before the model is traced, let alone compiled


def test_an_unknown_init_param_is_named_before_any_step_is_built(monkeypatch):
    from vi_ext.fit import fitter

    built = []
    monkeypatch.setattr(fitter, "make_step", lambda *a, **k: built.append(1))
    with pytest.raises(vx.ArgumentError) as e:
        vx.fit(gaussian_model, x=1.0, guide=gaussian_guide, init_params={"nope": 1.0},
               num_steps=10, progress=False)
    assert e.value.argument == "init_params" and not built


def test_build_refuses_the_loops_options_by_name():
    from vi_ext.fit import build

    for option, value in (("checkpoint", "fit.npz"), ("callbacks", [print]), ("progress", False),
                          ("chunk_size", 10)):
        with pytest.raises(vx.ArgumentError, match=f"argument '{option}'.*loop"):
            build(gaussian_model, x=1.0, guide=gaussian_guide, **{option: value})


def test_options_come_in_one_config_and_by_name():
    cfg = vx.FitConfig(num_steps=30, key=3, progress=False)
    a = vx.fit(gaussian_model, x=1.3, guide=gaussian_guide, config=cfg)
    b = vx.fit(gaussian_model, x=1.3, guide=gaussian_guide, num_steps=30, key=3,
               progress=False)
    np.testing.assert_array_equal(a.losses, b.losses)
    c = vx.fit(gaussian_model, x=1.3, guide=gaussian_guide, config=cfg, num_steps=20)
    assert len(c.losses) == 20  # a named option overrides the config's
    with pytest.raises(vx.ArgumentError, match="'config'"):
        vx.fit(gaussian_model, x=1.3, config={"num_steps": 3})
    import inspect

    params = inspect.signature(vx.fit).parameters
    assert set(vx.FitConfig.names()) <= set(params) and "model_kwargs" in params


def test_not_a_model():
    with pytest.raises(vx.ArgumentError, match="argument 'model'"):
        vx.fit("eight_schools", num_steps=10)
