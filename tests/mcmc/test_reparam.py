"""Learned centering and non-centered forms (vi_ext.reparam): which sites they touch, their
errors, the non-centered joint density, and refine at the learned parameterization matching
reference NUTS on centered eight schools."""

import os

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import assert_matches_eight_schools_nuts
from hypothesis import given, settings
from hypothesis import strategies as st
from numpyro import handlers
from numpyro.infer.util import log_density

import vi_ext as vx
from models import eight_schools

#: VX_PROPERTY_EXAMPLES=N runs the generated-case tests below on N cases
LARGE = int(os.environ.get("VX_PROPERTY_EXAMPLES", "0"))


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


@pytest.mark.parametrize("sites, name, match", [(["nope"], "nope", "not a site of the model"),
                                               (["x"], "x", "observed"),
                                               (["s"], "s", "Gamma")])
def test_noncentered_names_a_site_it_cannot_take(sites, name, match):
    with pytest.raises(vx.SiteError, match=match) as e:
        _trace(vx.reparam.noncentered(mixed, sites=sites))
    assert e.value.site == name
    with pytest.raises(vx.ArgumentError) as e:
        vx.reparam.noncentered(mixed, sites="v")
    assert e.value.argument == "sites"


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


def test_hierarchical_sites_are_those_whose_location_or_scale_depends_on_a_latent():
    from models import time_series

    assert vx.reparam.hierarchical_sites(mixed) == ("t", "v")
    data = eight_schools.data()
    assert vx.reparam.hierarchical_sites(eight_schools.centered, (), data) == ("theta",)
    assert vx.reparam.hierarchical_sites(eight_schools.noncentered, (), data) == ()
    # x0 ~ N(0, sigma / sqrt(1 - phi^2)) qualifies, and so does x ~ N(phi x_prev, sigma),
    # drawn inside a scan body (it depends on phi and sigma, not only on its own past)
    assert vx.reparam.hierarchical_sites(time_series.model, (), time_series.data()) == \
        ("x0", "x")


@settings(max_examples=30, deadline=None)
@given(family=st.sampled_from(["Normal", "StudentT", "Laplace", "Cauchy", "Logistic"]),
       m=st.floats(-3, 3), s=st.floats(0.1, 3), z=st.floats(-4, 4))
def test_noncentered_is_the_same_joint_density_up_to_its_jacobian(family, m, s, z):
    # log p(m, s, z' ) non-centered = log p(m, s, z) as written + log |dz / dz'|, at
    # z = m + s z': the same distribution of every site, for any family and any values
    def fn(loc, scale):
        if family == "StudentT":
            return dist.StudentT(4.0, loc, scale)
        return getattr(dist, family)(loc, scale)

    def model():
        loc = numpyro.sample("m", dist.Normal(0.0, 2.0))
        scale = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
        numpyro.sample("z", fn(loc, scale))

    nc = vx.reparam.noncentered(model, ["z"])
    written, _ = log_density(model, (), {}, {"m": m, "s": s, "z": m + s * z})
    other, _ = log_density(nc, (), {}, {"m": m, "s": s, "z_decentered": z})
    assert np.isclose(float(other), float(written) + np.log(s), rtol=1e-5, atol=1e-4)


def test_a_learned_centering_leaves_scan_sites_alone_and_names_one_asked_for():
    from models import time_series

    # (phi is drawn from N(0, 1): beyond 1 the stationary scale of x0 is NaN)
    ar1 = handlers.substitute(time_series.model, data={"phi": 0.5})
    tr = _trace(vx.reparam.learned_centering(ar1), **time_series.data())
    assert tr["x"]["type"] == "sample" and "x0_decentered" in tr
    with pytest.raises(vx.SiteError, match="scan") as e:
        _trace(vx.reparam.learned_centering(ar1, ["x"]), **time_series.data())
    assert e.value.site == "x"


def _walk(noncentered_by_hand, length):
    """A random walk with drift in a scan body, x_t ~ N(x_{t-1} + mu, s), and two noisy
    copies w_t ~ N(x_t, 1) drawn in the same body."""
    from numpyro.contrib.control_flow import scan

    def model():
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        s = numpyro.sample("s", dist.LogNormal(0.0, 0.5))

        def step(prev, _):
            if noncentered_by_hand:
                x = prev + mu + s * numpyro.sample("x_decentered", dist.Normal(0.0, 1.0))
                w = x + numpyro.sample("w_decentered", dist.Normal(0.0, 1.0).expand([2])
                                       .to_event(1))
            else:
                x = numpyro.sample("x", dist.Normal(prev + mu, s))
                w = numpyro.sample("w", dist.Normal(x, 1.0).expand([2]).to_event(1))
            return x, w

        _, ws = scan(step, 0.0, None, length=length)
        numpyro.sample("y", dist.Normal(ws, 0.5).to_event(2), obs=np.ones((length, 2)))

    return model


@settings(max_examples=LARGE or 6, deadline=None)
@given(length=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_noncentered_reaches_into_scan_bodies(length, seed):
    # the non-centered form of sites sampled in a scan body is the model written
    # non-centered by hand, inside the body: the same log density at the same values
    rng = np.random.default_rng(seed)
    values = {"mu": rng.normal(), "s": rng.lognormal(0.0, 0.5),
              "x_decentered": rng.normal(size=length),
              "w_decentered": rng.normal(size=(length, 2))}
    written = _walk(False, length)
    nc = vx.reparam.noncentered(written, ["x", "w"])
    auto, by_hand = jax.jit(lambda v: (log_density(nc, (), {}, v)[0],
                                       log_density(_walk(True, length), (), {}, v)[0]))(values)
    np.testing.assert_allclose(float(auto), float(by_hand), rtol=1e-5)
    tr = _trace(nc)
    assert tr["x"]["type"] == "deterministic" and np.shape(tr["x"]["value"]) == (length,)
    assert tr["w_decentered"]["type"] == "sample"


def test_hierarchical_sites_in_a_scan_body():
    assert vx.reparam.hierarchical_sites(_walk(False, 3)) == ("x", "w")


def test_noncentered_leaves_a_cond_branch_as_written():
    # cond announces itself to the handlers as scan does; its branches are not reached
    from numpyro.contrib.control_flow import cond

    def model():
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        z = numpyro.sample("z", dist.Normal(mu, 1.0))
        cond(mu > 0, lambda _: numpyro.sample("a", dist.Normal(mu, 1.0)),
             lambda _: numpyro.sample("a", dist.Normal(-mu, 1.0)), None)
        return z

    tr = _trace(vx.reparam.noncentered(model, ["z"]))
    assert tr["z"]["type"] == "deterministic" and tr["a"]["type"] == "sample"


def test_noncentered_names_a_scan_site_it_cannot_take():
    from numpyro.contrib.control_flow import scan

    def model():
        def step(prev, _):
            x = numpyro.sample("x", dist.Gamma(2.0, 1.0 + prev ** 2))
            return x, x

        scan(step, 0.0, None, length=3)

    with pytest.raises(vx.SiteError, match="Gamma") as e:
        _trace(vx.reparam.noncentered(model, ["x"]))
    assert e.value.site == "x"
