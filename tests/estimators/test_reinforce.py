"""REINFORCE and its baselines: unbiased against exact gradients (enumeration, closed forms)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import gaussian_guide, gaussian_model

import vi_ext as vx

N = 4000
X_OBS = 0.5
PRIOR = 0.3


def bern_model(x=None):
    z = numpyro.sample("z", dist.Bernoulli(PRIOR))
    numpyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)


def bern_guide(x=None):
    p = numpyro.param("p", 0.6, constraint=dist.constraints.unit_interval)
    numpyro.sample("z", dist.Bernoulli(p))


def log_w(z, p):
    """log p(x, z) - log q(z) for the Bernoulli model, z in {0, 1}."""
    lp = dist.Bernoulli(PRIOR).log_prob(z) + dist.Normal(2.0 * z - 1.0, 1.0).log_prob(X_OBS)
    return lp - dist.Bernoulli(p).log_prob(z)


def exact_iwae(p, k):
    """E over all 2^k draws of log mean_k w_k, by enumeration."""
    total = 0.0
    for zs in itertools.product([0.0, 1.0], repeat=k):
        zs = jnp.array(zs)
        prob = jnp.prod(jnp.where(zs == 1.0, p, 1 - p))
        total = total + prob * jax.scipy.special.logsumexp(log_w(zs, p)) - prob * jnp.log(k)
    return total


def estimates(objective, model, guide, params, estimators, n=N, **kw):
    keys = jax.random.split(jax.random.PRNGKey(11), n)
    f = jax.jit(jax.vmap(lambda k: vx.estimate(objective, model, guide, params, key=k,
                                               estimators=estimators, **kw)))
    return f(keys)


def assert_unbiased(samples, exact, n_se=4.0):
    samples = np.asarray(samples)
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(samples.mean() - float(exact)) <= n_se * se + 1e-6, (
        samples.mean(), float(exact), se)
    return se


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("baseline", [None, "loo"])
def test_discrete_iwae_gradient_unbiased(k, baseline):
    if baseline == "loo" and k == 1:
        pytest.skip("leave-one-out needs K >= 2")
    p = 0.6
    params = {"p": jnp.array(p)}
    objective = vx.objectives.iwae(k) if k > 1 else vx.objectives.elbo()
    values, grads = estimates(objective, bern_model, bern_guide, params,
                              {"z": vx.estimators.reinforce(baseline)}, x=X_OBS)
    assert_unbiased(values, exact_iwae(p, k))
    assert_unbiased(grads["p"], jax.grad(exact_iwae)(p, k))


def test_loo_baseline_reduces_variance():
    params = {"p": jnp.array(0.6)}
    obj = vx.objectives.iwae(4)
    _, plain = estimates(obj, bern_model, bern_guide, params,
                         {"z": vx.estimators.reinforce()}, n=2000, x=X_OBS)
    _, loo = estimates(obj, bern_model, bern_guide, params,
                       {"z": vx.estimators.reinforce("loo")}, n=2000, x=X_OBS)
    assert np.var(loo["p"]) < 0.5 * np.var(plain["p"])


def test_reinforce_on_continuous_site_with_learned_baseline():
    """Score-function gradients of the Gaussian ELBO, against the closed form."""
    m, s, x = 0.3, 0.8, 1.3

    def exact_elbo(m, s):
        return (-jnp.log(2 * jnp.pi) - 0.5 * ((m**2 + s**2) + ((x - m) ** 2 + s**2))
                + 0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2))

    base = vx.estimators.reinforce(lambda: numpyro.param("b", 0.0))
    params = {"m": jnp.array(m), "s": jnp.array(s), "b": jnp.array(-2.5)}
    values, grads = estimates(vx.objectives.elbo(), gaussian_model, gaussian_guide, params,
                              {"z": base}, x=x)
    gm, gs = jax.grad(exact_elbo, argnums=(0, 1))(m, s)
    assert_unbiased(grads["m"], gm)
    assert_unbiased(grads["s"], gs)
    # the baseline is fitted by regression towards E[F]: its gradient is E[F] - b
    assert_unbiased(grads["b"], exact_elbo(m, s) - (-2.5))
    _, plain = estimates(vx.objectives.elbo(), gaussian_model, gaussian_guide,
                         {"m": jnp.array(m), "s": jnp.array(s)},
                         {"z": vx.estimators.reinforce()}, x=x)
    assert np.var(grads["m"]) < np.var(plain["m"])


def test_fit_with_reinforce_on_a_discrete_site():
    import optax

    baseline = vx.estimators.reinforce(lambda: numpyro.param("b", 0.0))
    res = vx.fit(bern_model, x=X_OBS, guide=bern_guide, num_steps=2000, progress=False,
                 objective=vx.objectives.elbo(4),
                 optimizer=optax.adam(optax.cosine_decay_schedule(0.05, 2000, alpha=0.02)),
                 estimators={"z": baseline})
    # exact posterior P(z=1 | x) by Bayes' rule
    l1 = np.log(PRIOR) + dist.Normal(1.0, 1.0).log_prob(X_OBS)
    l0 = np.log(1 - PRIOR) + dist.Normal(-1.0, 1.0).log_prob(X_OBS)
    post = float(1 / (1 + np.exp(l0 - l1)))
    # the ELBO's optimum over Bernoulli guides is the exact posterior
    assert abs(float(res.params["p"]) - post) < 0.05
    assert "b" in res.params


def test_loo_without_logmeanexp_is_a_clear_error():
    with pytest.raises(vx.SiteError, match="site 'z'.*logmeanexp"):
        vx.estimate(vx.objectives.elbo(), bern_model, bern_guide, {"p": jnp.array(0.6)},
                    x=X_OBS, estimators={"z": vx.estimators.reinforce("loo")})


def test_bad_baseline():
    with pytest.raises(ValueError, match="baseline.*None, 'average', 'loo' or a call"):
        vx.estimators.reinforce("average!")
    with pytest.raises(ValueError, match="decay.*in \\[0, 1\\)"):
        vx.estimators.reinforce("average", decay=1.0)


def test_average_baseline_unbiased_and_lower_variance_from_a_warm_state():
    """With a state holding a good running average, REINFORCE stays unbiased, varies less."""
    from vi_ext.program.transform import surrogate_fn

    p = 0.6
    params = {"p": jnp.array(p)}
    strat = vx.estimators.reinforce("average", decay=0.5)
    sur = surrogate_fn(vx.objectives.elbo(), bern_model, bern_guide, (), {"x": X_OBS},
                       {"z": strat})
    # a state after many steps: mean m with count c gives baseline m / (1 - 0.5^c) = m
    target = float(exact_iwae(p, 1))
    state = {"reinforce/s0/z": (jnp.array(target), jnp.array(60.0))}

    def one(k):
        (_, aux), g = jax.value_and_grad(sur, has_aux=True)(params, k, state)
        return g["p"], aux.state["reinforce/s0/z"]

    keys = jax.random.split(jax.random.PRNGKey(3), N)
    grads, (means, counts) = jax.jit(jax.vmap(one))(keys)
    assert_unbiased(grads, jax.grad(exact_iwae)(p, 1))
    # the state update is the decaying average of the new value
    assert np.all(np.asarray(counts) == 61.0)
    _, plain = estimates(vx.objectives.elbo(), bern_model, bern_guide, params,
                         {"z": vx.estimators.reinforce()}, x=X_OBS)
    assert np.var(grads) < 0.5 * np.var(plain["p"])


def test_average_baseline_is_carried_through_fit():
    res = vx.fit(bern_model, x=X_OBS, guide=bern_guide, num_steps=300, progress=False,
                 stopping=None, estimators={"z": vx.estimators.reinforce("average")})
    mean, count = res.state.strategy_state["reinforce/s0/z"]
    assert float(count) == 300.0
    # the bias-corrected running average tracks the recent losses (loss = -objective)
    b = float(mean) / (1 - 0.9 ** float(count))
    recent = -res.losses[-30:]
    assert abs(b - recent.mean()) < 4 * recent.std() / np.sqrt(10)  # ~10 effective terms
