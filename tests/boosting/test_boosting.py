"""Boosting VI, the loop: a FitResult whose guide is the mixture, the Frank-Wolfe steps'
promises checked against the exact KL, the variants, and the doors in (boost, fit)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from boosting_targets import FAST, bimodal

import vi_ext as vx
from models import eight_schools, multimodal
from vi_ext.boosting import mixture as mx
from vi_ext.boosting.moves import frank_wolfe_line
from vi_ext.flat import FunctionDensity


def test_boosting_a_numpyro_model(boosted):
    assert isinstance(boosted, vx.FitResult) and len(boosted.history) == 4
    w = boosted.guide.weights
    assert abs(w.sum() - 1.0) < 1e-5 and np.all(w > 0)
    draws = boosted.sample(1000)
    assert draws["theta"].shape == (1000, 8) and draws["tau"].min() > 0
    est = boosted.elbo(1000)
    assert np.isfinite(est.value) and est.se > 0
    # the mixture's ELBO is no worse than its first component's, beyond noise
    assert est.value > boosted.history[0]["elbo"] - 4 * est.se - 0.5


def _grid_kl(log_q):
    """KL(q || p) for the normalized 1-D two-mode target, by quadrature."""
    grid = jnp.linspace(-10.0, 10.0, 40001)[:, None]
    lq, lp = log_q(grid), jax.vmap(bimodal)(grid)
    q = jnp.exp(lq)
    return float(jnp.sum(jnp.where(q > 0, q * (lq - lp), 0.0)) * (grid[1, 0] - grid[0, 0]))


def test_every_accepted_adaptive_step_decreases_the_exact_kl_as_it_promised(boosted_1d):
    """An accepted step promised, by its sufficient-decrease test on its own draws, a
    decrease of at least f_before - bound. The exact KL (quadrature), which the step never
    saw, must decrease that much, within 4 standard errors of the estimate (from fresh
    draws of the same estimator)."""
    history = boosted_1d.history
    final = boosted_1d.guide.mixture
    density = FunctionDensity(bimodal)
    taken = [t for t in range(1, len(history))
             if history[t]["gamma"] > 0 and not history[t]["fallback"]]
    assert taken  # on this target steps are taken

    def mixture_after(t):
        w = np.zeros(final.capacity)
        w[: len(history[t]["weights"])] = history[t]["weights"]
        return final.replace(log_weights=jnp.log(jnp.asarray(w)))

    for t in taken:
        h = history[t]
        before, after = mixture_after(t - 1), mixture_after(t)
        exact = _grid_kl(lambda z, m=after: mx.log_prob(m, z)) - \
            _grid_kl(lambda z, m=before: mx.log_prob(m, z))
        promised = h["f_before"] - h["bound"]
        assert promised > 0 and 0 < h["gamma"] <= 1 and h["tries"] >= 1
        s = final.component(t)
        diffs = []
        for k in range(8):
            line, _ = frank_wolfe_line(density, before, s, jax.random.PRNGKey(100 + k), FAST)
            diffs.append(float(line.f(h["gamma"])) - line.f0)
        se = float(np.std(diffs, ddof=1))
        assert exact <= -promised + 4 * se, (t, exact, promised, se)


def test_bad_arguments():
    kw = eight_schools.data()
    with pytest.raises(vx.ArgumentError, match="num_components"):
        vx.boosting.boost(eight_schools.model, num_components=0, **kw)
    S = vx.boosting.Settings
    for bad, field in ((S(anchor=-0.1), "anchor"), (S(tau=0.5), "tau"), (S(eta=0.0), "eta"),
                       (S(relbo_steps=0), "relbo_steps"), (S(defensive_weight=1.0),
                                                           "defensive_weight"),
                       (S(first_learning_rate="fast"), "first_learning_rate"),
                       (S(entropy_weight="big"), "entropy_weight")):
        with pytest.raises(vx.ArgumentError, match=f"'settings'.*settings.{field}"):
            vx.boosting.boost(eight_schools.model, settings=bad, **kw)
    with pytest.raises(vx.ArgumentError, match="entropy_weight gave lambda_1 = -1"):
        vx.boosting.boost(None, log_density=bimodal, dim=1, num_components=2, progress=False,
                          settings=FAST._replace(entropy_weight=lambda t: -1.0))
    with pytest.raises(vx.ArgumentError, match="variant"):
        vx.boosting.boost(multimodal.mixture_1d, variant="sideways", progress=False)
    for variant in ("away", "pairwise"):
        with pytest.raises(vx.ArgumentError, match=f"{variant} steps need"):
            vx.boosting.boost(multimodal.mixture_1d, variant=variant, step_size="fixed",
                              progress=False)

    def discrete():
        numpyro.sample("c", dist.Bernoulli(0.3))

    with pytest.raises(vx.SiteError, match="site 'c'.*discrete"):
        vx.boosting.boost(discrete, num_components=2, progress=False)


@pytest.mark.slow
def test_boosting_a_bimodal_target_beats_the_best_single_gaussian():
    # the best single Gaussian (mode-seeking KL) sits on the heavier mode; a normalized
    # target, so KL(q || p) = -ELBO is computed by quadrature
    res = vx.boosting.boost(None, log_density=bimodal, dim=1, num_components=4,
                            step_size="line_search", progress=False, key=0)
    mixture = res.guide.mixture
    single = mx.single(mixture.component(0))
    kl_single = _grid_kl(lambda z: mx.log_prob(single, z))
    kl_mix = _grid_kl(res.guide.log_density)
    assert kl_single > 0.3
    assert kl_mix < 0.25 * kl_single
    # the missed mode was found
    active = np.asarray(mixture.weights) > 0
    locs = np.asarray(mixture.params["loc"][:, 0])[active]
    assert np.any(np.abs(locs + 2.5) < 0.5) and np.any(np.abs(locs - 2.0) < 0.5)


def test_multimodal_models_are_normalized_and_boostable(boosted_1d):
    from numpyro.infer.util import log_density

    g = jnp.linspace(-10.0, 10.0, 20001)
    lp = jax.vmap(lambda x: log_density(multimodal.mixture_1d, (), {}, {"x": x})[0])(g)
    assert abs(float(jnp.sum(jnp.exp(lp)) * (g[1] - g[0])) - 1.0) < 2e-3
    assert boosted_1d.sample(100)["x"].shape == (100,)
    assert boosted_1d.history[-1]["elbo"] > boosted_1d.history[0]["elbo"]


def test_the_mixture_guide_agrees_with_the_mixture_on_the_flat_space(boosted):
    """The AutoMixture guide (NumPyro's transforms and Jacobians) and the mixture on the
    model's flat unconstrained space are one distribution: equal ELBOs, equal draws."""
    assert set(boosted.params) == {"boost_log_weights", "boost_loc", "boost_log_scale"}
    guide = boosted.guide
    z = mx.sample(guide.mixture, jax.random.PRNGKey(2), 3000)
    lw = np.asarray(jax.vmap(guide.flat.log_density)(z) - guide.log_density(z), np.float64)
    flat_elbo, flat_se = lw.mean(), lw.std(ddof=1) / np.sqrt(len(lw))
    # (1000 draws, as the other tests of this fixture take: one compiled program)
    est = boosted.elbo(1000, key=1)
    assert abs(est.value - flat_elbo) < 4 * np.hypot(est.se, flat_se)
    draws = boosted.sample(1000, key=3)
    ref = jax.vmap(guide.flat.constrain)(mx.sample(guide.mixture, jax.random.PRNGKey(4), 4000))
    for name in ("mu", "theta"):
        sd = np.asarray(ref[name]).std(0)
        assert np.all(np.abs(draws[name].mean(0) - np.asarray(ref[name]).mean(0))
                      < 4 * sd * np.sqrt(1 / 1000 + 1 / 4000))
    assert "mu" in boosted.summary(num_samples=1000).index


def test_a_bare_log_density_gets_a_fit_result_too():
    res = vx.boosting.boost(None, log_density=bimodal, dim=1, num_components=1,
                            progress=False, settings=FAST)
    assert isinstance(res, vx.FitResult) and res.sample(50)["z"].shape == (50, 1)
    assert np.isfinite(res.elbo(200).value)


def test_the_former_boost_result_names_still_work_with_a_warning(boosted):
    with pytest.warns(DeprecationWarning, match="res.guide.weights"):
        w = boosted.weights
    np.testing.assert_array_equal(w, boosted.guide.weights)
    with pytest.warns(DeprecationWarning, match="FitResult"):
        assert vx.boosting.BoostResult is vx.FitResult
    with pytest.warns(DeprecationWarning):
        assert boosted.as_fit_result() is boosted


def test_boosting_is_reachable_from_fit():
    kw = eight_schools.data()
    # (fit's num_steps is the first component's: the settings, and so the compiled
    # programs, are the ``boosted`` fixture's)
    spec = vx.boosting.BoostedMixture(num_components=2, settings=FAST)
    res = vx.fit(eight_schools.model, guide=spec, num_steps=300, progress=False, **kw)
    assert isinstance(res, vx.FitResult) and res.objective.name == "boosting"
    assert len(res.losses) == 2 and res.sample(50)["theta"].shape == (50, 8)
    with pytest.raises(vx.ArgumentError, match="optimizer.*does not apply"):
        vx.fit(eight_schools.model, guide=spec, optimizer=optax.sgd(0.1), **kw)
    with pytest.raises(vx.ArgumentError, match="objective"):
        vx.fit(eight_schools.model, guide=spec, objective=vx.objectives.iwae(4), **kw)


@pytest.mark.parametrize("option, value", [
    ("data", {"y": np.zeros(8)}), ("batch_size", 4), ("devices", 1), ("mesh", "a mesh"),
    ("max_rejections", 3), ("chunk_size", 10), ("callback_every", 5),
    ("checkpoint_every", 5), ("shuffle", False)])
def test_fit_refuses_by_name_every_option_boosting_cannot_honour(option, value):
    # (until 0.1 fit dropped these silently and boosted as if they were not given)
    spec = vx.boosting.BoostedMixture(num_components=2, settings=FAST)
    with pytest.raises(vx.ArgumentError, match=f"argument '{option}'.*does not apply"):
        vx.fit(eight_schools.model, guide=spec, num_steps=10, progress=False,
               **{option: value}, **eight_schools.data())


def test_boosting_with_away_steps_keeps_the_weights_on_the_simplex():
    res = vx.boosting.boost(multimodal.mixture_1d, num_components=5, step_size="line_search",
                            variant="away", progress=False, settings=FAST)
    w = res.guide.weights
    assert abs(w.sum() - 1.0) < 1e-5 and np.all(w > 0)
    assert {h.get("step") for h in res.history[1:]} <= {"frank_wolfe", "away", "drop"}


@pytest.mark.parametrize("variant", ["pairwise", "corrective"])
def test_boosting_with_pairwise_and_corrective_variants(variant):
    res = vx.boosting.boost(multimodal.mixture_1d, num_components=4, step_size="adaptive",
                            variant=variant, progress=False, settings=FAST)
    w = res.guide.weights
    assert abs(w.sum() - 1.0) < 1e-5 and np.all(w >= 0)
    steps = {h.get("step") for h in res.history[1:]}
    expected = {"pairwise", "pairwise_drop"} if variant == "pairwise" else {"fully_corrective"}
    assert steps <= expected and steps
    assert all(np.isfinite(h["elbo"]) for h in res.history)


def test_a_boosted_mixture_hands_over_to_blackjax(boosted):
    # (refine() on it is refine on a FitResult: tests/mcmc)
    p = boosted.to_blackjax(num_chains=2)
    # a mixture's covariance has correlations: a dense mass matrix, symmetric and positive
    assert p.inverse_mass_matrix.shape == (p.dim, p.dim)
    assert np.all(np.linalg.eigvalsh(np.asarray(p.inverse_mass_matrix)) > 0)
    assert np.all(np.isfinite(np.asarray(jax.vmap(p.logdensity_fn)(p.initial_positions))))
    draws = boosted.sample(300, key=1, correct="psis", num_proposals=1000)
    assert draws["theta"].shape == (300, 8) and np.isfinite(draws.khat)
