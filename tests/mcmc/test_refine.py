"""The BlackJAX bridge: to_blackjax, refine (NUTS warmed by the fit), PSIS-corrected draws."""

import warnings

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import assert_matches_eight_schools_nuts
from numpyro import handlers
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from numpyro.infer.util import initialize_model

import vi_ext as vx
from vi_ext.result import FitResult

# conjugate: mu ~ N(0, 10^2 I_2), y_n ~ N(mu, I_2); lam ~ Gamma(2, 1), c_n ~ Poisson(lam)
Y = np.random.default_rng(1).normal([1.5, -0.5], 1.0, size=(12, 2))
C = np.random.default_rng(2).poisson(3.0, size=15)


def conjugate(y, c):
    mu = numpyro.sample("mu", dist.Normal(jnp.zeros(2), 10.0).to_event(1))
    lam = numpyro.sample("lam", dist.Gamma(2.0, 1.0))
    numpyro.deterministic("lam2", 2 * lam)
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)
    with numpyro.plate("m", c.shape[0]):
        numpyro.sample("c", dist.Poisson(lam), obs=c)


def exact():
    n = Y.shape[0]
    prec = 1 / 100 + n
    a, b = 2.0 + C.sum(), 1.0 + len(C)
    return {"mu": (Y.sum(0) / prec, np.full(2, np.sqrt(1 / prec))),
            "lam": (a / b, np.sqrt(a) / b)}


@pytest.fixture(scope="module")
def conjugate_fit():
    # mean-field: the diagonal mass matrix below is AutoNormal's
    return vx.fit(conjugate, Y, C, guide=AutoNormal(conjugate), num_steps=1500, key=0,
                  progress=False)


@pytest.fixture(scope="module")
def refined(conjugate_fit):
    return conjugate_fit.refine(num_samples=500, num_chains=4, num_warmup=150, key=1,
                                progress=False)


def _within(draws, ess, name, mean, sd, k=4.0):
    got = draws[name].mean(0)
    se = sd / np.sqrt(ess[name])
    assert np.all(np.abs(got - mean) < k * se), (name, got, mean, k * se)


def test_to_blackjax_gives_numpyros_density_guide_positions_and_covariance(conjugate_fit):
    p = conjugate_fit.to_blackjax(num_chains=3, key=0)
    assert p.dim == 3 and p.initial_positions.shape == (3, 3) and set(p.sites) == {"mu", "lam"}
    # the log density is NumPyro's potential energy, negated
    info = initialize_model(jax.random.PRNGKey(0), conjugate, model_args=(Y, C))
    x = p.initial_positions[0]
    assert np.allclose(p.logdensity_fn(x), -info.potential_fn(p.unravel(x)), rtol=1e-6)
    # AutoNormal is mean-field: a diagonal inverse mass matrix, its variances on R^D
    params = conjugate_fit.params
    var = np.concatenate([np.asarray(params[f"{n}_auto_scale"]).reshape(-1) ** 2
                          for n in p.sites])
    assert p.inverse_mass_matrix.shape == (3,)
    # relative standard error of a variance from 1000 draws: sqrt(2 / 1000)
    np.testing.assert_allclose(p.inverse_mass_matrix, var, rtol=4 * np.sqrt(2 / 1000))
    # positions map back to constrained sites, deterministic ones included
    c = p.constrain(p.initial_positions)
    assert c["mu"].shape == (3, 2) and np.all(c["lam"] > 0)
    np.testing.assert_allclose(c["lam2"], 2 * c["lam"], rtol=1e-6)
    # and BlackJAX runs on it as it is
    nuts = blackjax.nuts(p.logdensity_fn, 0.3, p.inverse_mass_matrix)
    state, _ = nuts.step(jax.random.key(0), nuts.init(p.initial_positions[0]))
    assert np.all(np.isfinite(state.position))


def test_a_correlated_guide_gives_a_dense_mass_matrix():
    guide = AutoMultivariateNormal(conjugate)
    res = vx.fit(conjugate, Y, C, guide=guide, num_steps=300, key=0, progress=False)
    p = res.to_blackjax(num_chains=2)
    assert p.inverse_mass_matrix.shape == (3, 3)
    L = np.asarray(res.params["auto_scale_tril"])
    cov = L @ L.T  # the guide's flat order is its own: compare what does not depend on it
    np.testing.assert_allclose(np.sort(np.diag(p.inverse_mass_matrix)), np.sort(np.diag(cov)),
                               rtol=4 * np.sqrt(2 / 1000))
    assert res.to_blackjax(num_chains=2, dense=False).inverse_mass_matrix.shape == (3,)


def test_refine_matches_the_exact_posterior_of_a_conjugate_model(refined):
    r = refined
    assert r.samples["mu"].shape == (2000, 2) and r.by_chain["mu"].shape == (4, 500, 2)
    assert r.samples["lam2"].shape == (2000,)
    assert r.max_rhat < 1.05 and r.info.num_divergent == 0
    for name, (mean, sd) in exact().items():
        _within(r.samples, r.ess, name, mean, sd)
    # the spread too: sd within 4 standard errors (se of an sd ~ sd / sqrt(2 ess))
    sd_mu = r.samples["mu"].std(0)
    se = exact()["mu"][1] / np.sqrt(2 * r.ess["mu"])
    assert np.all(np.abs(sd_mu - exact()["mu"][1]) < 4 * se)
    assert r.info.gradient_evals["warmup"] > 0 and set(r.info.seconds) >= {"warmup", "sampling"}


def test_refine_results_surface(refined):
    idata = refined.to_arviz()
    post = idata["posterior"]
    assert post["mu"].shape[:2] == (4, 500)
    assert "diverging" in idata["sample_stats"]
    assert "lam" in refined.summary().index[1]
    assert refined.get_samples(group_by_chain=True)["lam"].shape == (4, 500)
    assert "max_rhat" in repr(refined)


def test_refine_with_the_guides_mass_matrix_kept_matches_too(conjugate_fit):
    r = conjugate_fit.refine(num_samples=400, num_chains=2, num_warmup=100, adapt="step_size",
                             key=2, progress=False)
    assert r.inverse_mass_matrix.shape == (3,)
    for name, (mean, sd) in exact().items():
        _within(r.samples, r.ess, name, mean, sd)


def test_refine_matches_reference_nuts_on_eight_schools(eight_schools_fit):
    r = eight_schools_fit.refine(num_samples=500, num_chains=4, num_warmup=200, key=3,
                                 progress=False)
    assert_matches_eight_schools_nuts(r)


def _underdispersed(res, factor):
    params = dict(res.params)
    for n in params:
        if n.endswith("_auto_scale"):
            params[n] = params[n] * factor
    return FitResult(**{**res.__dict__, "params": params})


def test_psis_correction_reduces_the_error_of_an_underdispersed_guide(conjugate_fit):
    narrow = _underdispersed(conjugate_fit, 0.8)
    plain = narrow.sample(3000, key=4)
    fixed = narrow.sample(3000, key=4, correct="psis", num_proposals=12000)
    assert isinstance(fixed, dict) and fixed.khat < 0.7 and fixed.ess > 100
    assert fixed["mu"].shape == (3000, 2) and fixed["lam2"].shape == (3000,)
    _, sd = exact()["mu"]
    err_plain = np.abs(plain["mu"].std(0) / sd - 1)
    err_psis = np.abs(fixed["mu"].std(0) / sd - 1)
    # the guide's sd is 0.8x the posterior's (up to the fit); PSIS is within 4 standard
    # errors of an sd estimated from `ess` effective draws, and closer than the guide
    assert np.all(err_psis < 4 / np.sqrt(2 * fixed.ess))
    assert np.all(err_psis < err_plain)


def test_psis_warns_when_khat_says_it_cannot_be_trusted(conjugate_fit):
    narrow = _underdispersed(conjugate_fit, 0.25)
    with pytest.warns(UserWarning, match="k-hat"):
        d = narrow.sample(500, key=5, correct="psis")
    assert d.khat > 0.7
    with pytest.raises(ValueError, match="correct"):
        conjugate_fit.sample(10, correct="is")


def test_psis_smoothing_matches_arviz():
    import arviz as az

    lw = np.random.default_rng(0).standard_t(4, 2000)
    ours, k = vx.mcmc.smooth(lw)
    theirs, k_az = az.psislw(lw.copy())
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    assert abs(k - float(k_az)) < 1e-12


def mixture_model(y, mark=True):
    infer = {"enumerate": "parallel"} if mark else {}
    k = numpyro.sample("k", dist.Categorical(jnp.array([0.3, 0.7])), infer=infer)
    mu = numpyro.sample("mu", dist.Normal(jnp.array([-2.0, 2.0])[k], 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _unfitted(model, guide, *args):
    with handlers.seed(rng_seed=0):
        tr = handlers.trace(guide).get_trace(*args)
    params = {n: s["value"] for n, s in tr.items() if s["type"] == "param"}
    return FitResult(model=model, guide=guide, params=params, losses=np.zeros(1), state=None,
                     objective=None, model_args=args)


def test_a_discrete_latent_is_refused_by_name_unless_enumerated():
    y = 0.5
    guide = AutoNormal(handlers.block(mixture_model, hide=["k"]))
    res = _unfitted(lambda y: mixture_model(y, mark=False), guide, y)
    with pytest.raises(vx.SiteError, match="'k'.*enumerat"):
        res.refine(num_samples=10, progress=False)
    # marked for enumeration, k is summed out and mu sampled from its exact marginal
    res = _unfitted(mixture_model, guide, y)
    r = res.refine(num_samples=1000, num_chains=2, num_warmup=100, key=0, progress=False)
    m = np.array([-2.0, 2.0])
    post_k = np.array([0.3, 0.7]) * np.exp(-((y - m) ** 2) / 4)
    post_k /= post_k.sum()
    means, var = (m + y) / 2, 0.5
    mean = post_k @ means
    sd = np.sqrt(post_k @ (var + means**2) - mean**2)
    _within(r.samples, r.ess, "mu", mean, sd)


def test_bad_arguments_are_named(conjugate_fit):
    for kwargs, arg in [({"method": "hmc"}, "method"), ({"num_warmup": 2}, "num_warmup"),
                        ({"adapt": "full"}, "adapt"), ({"num_chains": 0}, "num_chains"),
                        ({"target_accept": 1.5}, "target_accept")]:
        with pytest.raises(vx.ArgumentError, match=arg):
            conjugate_fit.refine(progress=False, **kwargs)
    # a guide that misses a model site
    def guide(y, c):
        numpyro.sample("mu", dist.Normal(numpyro.param("m", jnp.zeros(2)), 1.0).to_event(1))

    res = _unfitted(conjugate, guide, Y, C)
    with pytest.raises(vx.SiteError, match="'lam'"):
        res.to_blackjax()


def test_a_point_mass_guide_warns_and_gets_a_unit_mass_matrix(conjugate_fit):
    narrow = _underdispersed(conjugate_fit, 0.0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p = narrow.to_blackjax(num_chains=2)
    assert any("no spread" in str(x.message) for x in w)
    np.testing.assert_allclose(p.inverse_mass_matrix, 1.0)


def test_a_stranded_chain_is_found_and_restarted_at_a_good_chains_state():
    from vi_ext.mcmc.nuts import _restart, _strays

    def logdensity(x):
        return -0.5 * jnp.sum(x**2)

    def _strays_of(pos, fn):  # what the sampler records: each draw's log density
        return _strays(jax.vmap(jax.vmap(fn))(jnp.asarray(pos)))

    rng = np.random.default_rng(0)
    pos = rng.normal(size=(200, 4, 5))  # [draws, chains, D]: four chains in the typical set
    assert not _strays_of(pos, logdensity).any()
    pos[:, 2] = 40.0 + 1e-3 * rng.normal(size=(200, 5))  # one stuck far out, barely moving
    stray = _strays_of(pos, logdensity)
    np.testing.assert_array_equal(stray, [False, False, True, False])
    pos[:, 1] = np.nan  # a non-finite log density is stranded too
    np.testing.assert_array_equal(_strays_of(pos, logdensity), [False, True, True, False])
    carry = (jnp.arange(4.0), jnp.arange(4.0) * 10, "imm")
    states, das, imm = _restart(carry, np.array([False, True, True, False]))
    np.testing.assert_array_equal(states, [0.0, 0.0, 3.0, 3.0])
    np.testing.assert_array_equal(das, [0.0, 0.0, 30.0, 30.0])
    assert imm == "imm"


def test_divergences_and_unmixed_chains_are_warned_about():
    from vi_ext.mcmc.nuts import _warn_if_unreliable

    with pytest.warns(RuntimeWarning, match="12 of 4000 transitions diverged.*learned_centering"):
        _warn_if_unreliable(12, 4000, 1.001)
    with pytest.warns(RuntimeWarning, match="split R-hat is 1.080"):
        _warn_if_unreliable(0, 4000, 1.08)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_unreliable(0, 4000, 1.004)
