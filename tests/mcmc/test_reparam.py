"""Learned centering (vi_ext.reparam): which sites it touches, its errors, and refine at the
learned parameterization matching reference NUTS on centered eight schools."""

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import assert_matches_eight_schools_nuts
from numpyro import handlers

import vi_ext as vx
from models import eight_schools


def _trace(model, **kw):
    return handlers.trace(handlers.seed(model, 0)).get_trace(**kw)


def mixed():
    s = numpyro.sample("s", dist.Gamma(2.0, 2.0))
    numpyro.sample("t", dist.StudentT(3.0, 1.0, s))
    numpyro.sample("v", dist.Normal(0.0, s).expand([3]).to_event(1))
    numpyro.sample("x", dist.Normal(0.0, s), obs=0.5)


def test_every_location_scale_latent_gets_a_learned_centering_and_nothing_else():
    tr = _trace(vx.reparam.learned_centering(mixed))
    kinds = {n: s["type"] for n, s in tr.items()}
    assert kinds == {"s": "sample", "t_centered": "param", "t_decentered": "sample",
                     "t": "deterministic", "v_centered": "param", "v_decentered": "sample",
                     "v": "deterministic", "x": "sample"}
    assert np.shape(tr["v_centered"]["value"]) == (3,)  # one c per event element
    assert tr["x"]["is_observed"]
    # StudentT keeps its degrees of freedom
    assert float(tr["t_decentered"]["fn"].df) == 3.0


def test_named_sites_only():
    tr = _trace(vx.reparam.learned_centering(mixed, sites=["v"]))
    assert "v_centered" in tr and "t_centered" not in tr and tr["t"]["type"] == "sample"


@pytest.mark.parametrize(
    "sites, error, name, match",
    [
        (["nope"], vx.SiteError, "nope", "not a site of the model"),
        (["x"], vx.SiteError, "x", "observed"),
        (["s"], vx.SiteError, "s", "Gamma"),
    ],
)
def test_a_site_that_cannot_be_centered_is_named(sites, error, name, match):
    with pytest.raises(error, match=match) as e:
        _trace(vx.reparam.learned_centering(mixed, sites=sites))
    assert e.value.site == name


def test_bad_arguments_are_named():
    with pytest.raises(vx.ArgumentError) as e:
        vx.reparam.learned_centering(mixed, sites="v")
    assert e.value.argument == "sites"
    with pytest.raises(vx.ArgumentError) as e:
        vx.reparam.learned_centering("not a model")
    assert e.value.argument == "model"


@pytest.fixture(scope="module")
def vip_fit():
    model = vx.reparam.learned_centering(eight_schools.centered)
    return vx.fit(model, num_steps=2000, key=0, progress=False, **eight_schools.data())


def test_the_fit_learns_to_decenter_the_funnel(vip_fit):
    # the ELBO prefers the non-centered form of eight schools (c = 0); the fit starts at 0.5
    assert float(vip_fit.params["theta_centered"]) < 0.25


@pytest.mark.slow
def test_refine_at_the_learned_parameterization_matches_reference_nuts(vip_fit):
    # the centered model at the learned c has the same posterior of mu, tau and theta
    r = vip_fit.refine(num_samples=500, num_chains=4, num_warmup=200, key=3, progress=False)
    assert_matches_eight_schools_nuts(r)
