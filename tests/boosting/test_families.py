"""Boosting's component families: exact densities, L2 distances (closed form and Monte
Carlo), boosting with each family and with a user's, and the errors for bad families."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from boosting_targets import FAST  # noqa: E402
from jax.scipy.special import logsumexp

import vi_ext as vx
from models import multimodal
from vi_ext.boosting import away
from vi_ext.boosting import mixture as mx

KEY = jax.random.PRNGKey(0)


def _full(loc, tril):
    """A full-rank member with Cholesky factor ``tril`` (positive diagonal)."""
    tril = jnp.asarray(tril, jnp.float32)
    raw = jnp.tril(tril, -1) + jnp.diag(jnp.log(jnp.diag(tril)))
    return {"loc": jnp.asarray(loc, jnp.float32), "scale_tril": raw}


def _ls(loc, scale):
    return {"loc": jnp.asarray(loc, jnp.float32),
            "log_scale": jnp.log(jnp.asarray(scale, jnp.float32))}


A = ([0.0, 1.0], [[1.0, 0.0], [0.8, 0.5]])
B = ([2.0, -1.0], [[0.3, 0.0], [-0.4, 1.5]])


def _full_pair():
    mix = mx.empty(3, 2, mx.full_normal)
    mix = mx.add(mix, 0, _full(*A), jnp.array(1.0))
    return mx.add(mix, 1, _full(*B), jnp.array(0.25))


def test_full_rank_and_laplace_mixture_densities_are_exact():
    z = jnp.array([[0.3, 0.2], [1.5, -2.0], [-1.0, 4.0]])
    manual = logsumexp(jnp.stack([
        jnp.log(0.75) + dist.MultivariateNormal(jnp.array(A[0]), scale_tril=jnp.array(A[1]))
        .log_prob(z),
        jnp.log(0.25) + dist.MultivariateNormal(jnp.array(B[0]), scale_tril=jnp.array(B[1]))
        .log_prob(z)]), axis=0)
    np.testing.assert_allclose(mx.log_prob(_full_pair(), z), manual, rtol=1e-5)

    lap = mx.add(mx.add(mx.empty(2, 2, mx.laplace), 0, _ls([0.0, 1.0], [1.0, 0.5]),
                        jnp.array(1.0)), 1, _ls([2.0, -1.0], [0.3, 2.0]), jnp.array(0.4))
    manual = logsumexp(jnp.stack([
        jnp.log(0.6) + dist.Laplace(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.5])).log_prob(z)
        .sum(-1),
        jnp.log(0.4) + dist.Laplace(jnp.array([2.0, -1.0]), jnp.array([0.3, 2.0]))
        .log_prob(z).sum(-1)]), axis=0)
    np.testing.assert_allclose(mx.log_prob(lap, z), manual, rtol=1e-5)
    n = 40000  # and draws have the mixture's mean, within 4 standard errors
    draws = np.asarray(mx.sample(lap, KEY, n))
    mean = 0.6 * np.array([0.0, 1.0]) + 0.4 * np.array([2.0, -1.0])
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * draws.std(0) / np.sqrt(n))


def test_full_rank_l2_distance_matches_quadrature():
    p, q = mx.single(_full(*A), mx.full_normal), _full_pair()
    g = jnp.linspace(-9.0, 9.0, 601)
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    diff = jnp.exp(mx.log_prob(p, grid)) - jnp.exp(mx.log_prob(q, grid))
    numeric = float(jnp.sum(diff**2) * (g[1] - g[0]) ** 2)
    np.testing.assert_allclose(float(jnp.exp(mx.log_sq_distance(p, q))), numeric, rtol=1e-3)


def _mc_distance(a, b, n, key):
    """The Monte Carlo log ||a - b||^2 and the standard error of exp of it."""
    ka, kb = jax.random.split(key)
    za, zb = mx.sample(a, ka, n), mx.sample(b, kb, n)
    la_a, lb_a, la_b, lb_b = (mx.log_prob(a, za), mx.log_prob(b, za), mx.log_prob(a, zb),
                              mx.log_prob(b, zb))
    est = mx.log_sq_distance_mc(la_a, lb_a, la_b, lb_b)
    fa = np.exp(np.asarray(mx.sq_distance_log_integrand(la_a, lb_a), np.float64))
    fb = np.exp(np.asarray(mx.sq_distance_log_integrand(la_b, lb_b), np.float64))
    se = 0.5 * np.sqrt(fa.var() / n + fb.var() / n)
    return float(est), se


def test_monte_carlo_l2_distance_is_unbiased_and_finite_where_the_linear_one_overflows():
    # Laplace mixtures in 1-D, against quadrature
    a = mx.single(_ls([0.0], [1.0]), mx.laplace)
    b = mx.add(mx.add(mx.empty(2, 1, mx.laplace), 0, _ls([1.0], [0.5]), jnp.array(1.0)), 1,
               _ls([-2.0], [1.0]), jnp.array(0.3))
    grid = jnp.linspace(-30.0, 30.0, 120001)[:, None]
    diff = jnp.exp(mx.log_prob(a, grid)) - jnp.exp(mx.log_prob(b, grid))
    numeric = float(jnp.sum(diff**2) * (grid[1, 0] - grid[0, 0]))
    est, se = _mc_distance(a, b, 20000, KEY)
    assert abs(np.exp(est) - numeric) < 4 * se
    # 60-D narrow Gaussians: ||a - b||^2 ~ 1e45 overflows float32; its log does not, and
    # matches the closed form within 4 standard errors (of the log: se / value)
    d = 60
    a = mx.single(_ls(jnp.zeros(d), jnp.full(d, 0.05)))
    b = mx.single(_ls(jnp.full(d, 0.02), jnp.full(d, 0.06)))
    exact = float(mx.log_sq_distance(a, b))
    assert exact > np.log(np.finfo(np.float32).max)
    ka, kb = jax.random.split(KEY)
    za, zb = mx.sample(a, ka, 20000), mx.sample(b, kb, 20000)
    fa = mx.sq_distance_log_integrand(mx.log_prob(a, za), mx.log_prob(b, za))
    fb = mx.sq_distance_log_integrand(mx.log_prob(a, zb), mx.log_prob(b, zb))
    est = float(mx.log_sq_distance_mc(mx.log_prob(a, za), mx.log_prob(b, za),
                                      mx.log_prob(a, zb), mx.log_prob(b, zb)))
    # relative standard error, computed in log space
    f = jnp.concatenate([fa, fb])
    m = jnp.max(f)
    w = np.exp(np.asarray(f - m, np.float64))
    rel_se = 0.5 * np.sqrt(w[:20000].var() / 20000 + w[20000:].var() / 20000) / (
        0.5 * (w[:20000].mean() + w[20000:].mean()))
    assert np.isfinite(est) and abs(est - exact) < 4 * rel_se + 1e-4


def test_away_and_pairwise_distances_by_monte_carlo_match_the_closed_form():
    mix = mx.add(mx.add(mx.add(mx.empty(3, 2), 0, _ls([0.0, 0.0], [1.0, 1.0]), jnp.array(1.0)),
                        1, _ls([3.0, 1.0], [0.5, 2.0]), jnp.array(0.3)), 2,
                 _ls([-2.0, 2.0], [0.7, 0.7]), jnp.array(0.2))
    draws = away.component_draws(lambda z: jnp.zeros(()), mix, KEY, n=40000)
    v, s = 1, 2
    exact_away = float(mx.log_sq_distance(mix, mx.single(mix.component(v))))
    exact_pair = float(mx.log_sq_distance(mx.single(mix.component(s)),
                                          mx.single(mix.component(v))))
    # (40000 draws per component: a relative standard error below 2%, measured)
    assert abs(float(away.log_sq_distance_away(draws, mix.log_weights, v)) - exact_away) < 0.05
    assert abs(float(away.log_sq_distance_pair(draws, s, v)) - exact_pair) < 0.05


def _correlated(z):
    """N(0, [[1, 0.9], [0.9, 1]]), normalized: KL(q || p) = -ELBO."""
    cov = jnp.array([[1.0, 0.9], [0.9, 1.0]])
    return dist.MultivariateNormal(jnp.zeros(2), cov).log_prob(z)


def test_a_full_rank_component_fits_a_correlated_target_a_diagonal_one_cannot():
    # the best diagonal Gaussian has KL = -log(1 - 0.81) / 2 = 0.83; a full-rank one, 0
    out = {}
    for family in ("diag_normal", "full_normal"):
        res = vx.boosting.boost(None, log_density=_correlated, dim=2, num_components=1,
                                family=family, progress=False, settings=FAST)
        out[family] = res.elbo(4000, key=1)
    diag, full = out["diag_normal"], out["full_normal"]
    assert abs(diag.value + 0.83) < 4 * diag.se + 0.05
    assert full.value > -0.05 - 4 * full.se and full.value > diag.value + 0.6


@pytest.mark.parametrize("family", [pytest.param("laplace", marks=pytest.mark.slow),
                                    "student_t"])
def test_boosting_with_a_family_without_closed_form_distances(family):
    if family == "student_t":  # a user's family
        family = vx.boosting.Family(
            "student_t", lambda loc, log_scale: {"loc": loc, "log_scale": log_scale},
            lambda p: dist.StudentT(5.0, p["loc"], jnp.exp(p["log_scale"])).to_event(1))
    res = vx.boosting.boost(multimodal.mixture_1d, num_components=3, step_size="adaptive",
                            variant="pairwise", family=family, progress=False, settings=FAST)
    assert abs(res.guide.weights.sum() - 1.0) < 1e-5 and np.all(res.guide.weights > 0)
    assert all(np.isfinite(h["elbo"]) for h in res.history)
    assert res.history[-1]["elbo"] > res.history[0]["elbo"]  # the missed mode is added
    # the NumPyro guide of this family draws what the mixture draws (x is its own
    # unconstrained value)
    assert set(res.params) == {"boost_log_weights", "boost_loc", "boost_log_scale"}
    a = res.sample(4000, key=1)["x"]
    b = np.asarray(mx.sample(res.guide.mixture, jax.random.PRNGKey(2), 4000))[:, 0]
    assert abs(a.mean() - b.mean()) < 4 * a.std() * np.sqrt(2 / 4000)


def test_bad_families_are_refused_by_name():
    loc_scale = lambda loc, log_scale: {"loc": loc, "log_scale": log_scale}  # noqa: E731
    bad = {
        "gaussian": "expected one of",
        vx.boosting.Family("no_event", loc_scale, lambda p: dist.Normal(p["loc"], 1.0)):
            "event shape",
        vx.boosting.Family("discrete", loc_scale,
                           lambda p: dist.Bernoulli(logits=p["loc"]).to_event(1)):
            "reparameterization",
        vx.boosting.Family("cauchy", loc_scale,
                           lambda p: dist.Cauchy(p["loc"], 1.0).to_event(1)): "finite",
        vx.boosting.Family("tuple", lambda loc, log_scale: (loc, log_scale),
                           lambda p: dist.Normal(p[0], 1.0).to_event(1)): "dict of arrays",
        (lambda p: p): "vx.boosting.Family",
    }
    for family, message in bad.items():
        with pytest.raises(vx.ArgumentError, match=f"'family'.*{message}"):
            vx.boosting.boost(multimodal.mixture_1d, family=family, progress=False)
