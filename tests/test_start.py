"""The robust start (vi_ext.start): candidate starts scored by a common-random-numbers ELBO."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import gaussian_model
from numpyro.infer.autoguide import AutoNormal

import vi_ext as vx
from vi_ext.start import (
    CANDIDATES,
    DEFAULT_CANDIDATES,
    choose_start,
    elbo_scores,
    unconstrained_problem,
)


def test_the_exact_posterior_scores_the_log_evidence_and_beats_its_neighbours():
    # z ~ N(0, 1), x ~ N(z, 1), x = 1.3: posterior N(0.65, 1/2), log p(x) = log N(1.3; 0, 2)
    problem = unconstrained_problem(gaussian_model, (), {"x": 1.3}, jax.random.PRNGKey(0))
    eps = jax.random.normal(jax.random.PRNGKey(1), (4000, 1))
    sd = math.sqrt(0.5)
    elbo, se = elbo_scores(problem.logdensity, jnp.array([[0.65], [0.75], [0.65]]),
                           jnp.array([[sd], [sd], [0.8 * sd]]), eps)
    log_evidence = -0.5 * math.log(2 * math.pi * 2.0) - 1.3**2 / 4.0
    assert abs(float(elbo[0]) - log_evidence) < 4 * float(se[0])
    # with common random numbers the exact posterior wins even against close neighbours
    assert float(elbo[0]) > float(elbo[1]) and float(elbo[0]) > float(elbo[2])


def test_elbo_estimates_match_the_closed_form_within_their_standard_error():
    problem = unconstrained_problem(gaussian_model, (), {"x": 1.3}, jax.random.PRNGKey(0))
    eps = jax.random.normal(jax.random.PRNGKey(2), (4000, 1))
    m, s = 0.0, 0.3
    elbo, se = elbo_scores(problem.logdensity, jnp.array([[m]]), jnp.array([[s]]), eps)
    # ELBO = log p(x) - KL(N(m, s^2) || N(0.65, 1/2))
    kl = math.log(math.sqrt(0.5) / s) + (s**2 + (m - 0.65) ** 2) / (2 * 0.5) - 0.5
    exact = -0.5 * math.log(2 * math.pi * 2.0) - 1.3**2 / 4.0 - kl
    assert abs(float(elbo[0]) - exact) < 4 * float(se[0])


def test_non_finite_draws_count_as_the_region_left_out():
    def model():
        numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.factor("wall", jnp.where(numpyro.sample("w", dist.Normal(0.0, 1.0)) > 0.5,
                                         jnp.nan, 0.0))

    problem = unconstrained_problem(model, (), {}, jax.random.PRNGKey(0))
    eps = jax.random.normal(jax.random.PRNGKey(1), (64, 2))
    # the flat vector is (w, z): sites in the order of their names
    elbo, _ = elbo_scores(problem.logdensity, jnp.zeros((2, 2)),
                          jnp.array([[1.0, 1.0], [1e-3, 1.0]]), eps)
    finite = np.asarray(eps[:, 0]) <= 0.5  # draws of w at scale 1
    lp = -0.5 * (np.asarray(eps) ** 2).sum(1) - np.log(2 * np.pi)  # two N(0, 1) sites
    entropy = 1.0 + np.log(2 * np.pi)
    expected = lp[finite].mean() + np.log(finite.mean()) + entropy
    assert float(elbo[0]) == pytest.approx(expected, rel=1e-5)
    # w held near 0 (scale 1e-3): every draw is finite and nothing is added
    lp1 = -0.5 * ((1e-3 * np.asarray(eps[:, 0])) ** 2 + np.asarray(eps[:, 1]) ** 2) \
        - np.log(2 * np.pi)
    assert float(elbo[1]) == pytest.approx(lp1.mean() + entropy + np.log(1e-3), rel=1e-5)



def test_choose_start_keeps_the_best_candidate_and_says_why():
    s = choose_start(gaussian_model, x=1.3, key=0)
    assert set(s.scores) == set(DEFAULT_CANDIDATES)
    assert s.name == max(s.scores, key=s.scores.get)
    assert s.name in s.reason and f"{s.scores[s.name]:.4g}" in s.reason
    # on a Gaussian target the fitted candidates land near the posterior N(0.65, 1/2): the
    # 8 fixed draws of the sample-average ELBO bias them a little (closed-form KL)
    assert s.name in ("saa_median", "saa_uniform")
    m, sd = float(s.locs["z"]), float(s.scales["z"])
    kl = math.log(math.sqrt(0.5) / sd) + (sd**2 + (m - 0.65) ** 2) / (2 * 0.5) - 0.5
    assert kl < 0.1
    assert s.gradient_evaluations == 2 * 300 * 8 and s.seconds > 0


def test_pathfinder_candidates_on_request():
    s = choose_start(gaussian_model, x=1.3, candidates=CANDIDATES, key=0)
    assert set(s.scores) == set(CANDIDATES)
    # Pathfinder's quasi-Newton Gaussian is exact on a Gaussian target
    assert s.scores["pathfinder"] == pytest.approx(max(s.scores.values()), abs=0.05)


def test_the_start_feeds_autonormal_through_init_params():
    from models import eight_schools

    kw = eight_schools.data()
    s = choose_start(eight_schools.centered_wide, key=0, **kw)
    # the prior median puts log_tau at 5; the data want it near 1 (posterior mean ~1.2)
    assert s.scores[s.name] > s.scores["median"] + 10
    assert float(s.locs["log_tau"]) < 3.0
    params = s.autonormal_params()
    assert set(params) == {f"{n}_auto_{k}" for n in ("mu", "log_tau", "theta")
                           for k in ("loc", "scale")}
    guide = AutoNormal(eight_schools.centered_wide)
    res = vx.fit(eight_schools.centered_wide, guide=guide, init_params=params, num_steps=10,
                 progress=False, **kw)
    np.testing.assert_allclose(res.losses[0], res.losses[0])  # it ran, finite
    assert np.all(np.isfinite(res.losses))


def test_a_subset_of_candidates_and_bad_names():
    s = choose_start(gaussian_model, x=1.3, candidates=("median", "uniform"), key=0)
    assert set(s.scores) == {"median", "uniform"} and s.gradient_evaluations == 0
    with pytest.raises(vx.ArgumentError) as e:
        choose_start(gaussian_model, x=1.3, candidates=("median", "laplace"))
    assert e.value.argument == "candidates"
