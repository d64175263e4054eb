"""The step-size rules of vi_ext.optim compared for fit's default: iterate averaging,
plateau (stationarity-triggered cuts), cyclical Adam, SPS with slack, INNAprop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vi_ext as vx
from vi_ext.optim import (
    StationarityTest,
    averaged,
    averaged_params,
    cyclical_adam,
    innaprop,
    plateau,
    plateau_adam,
    sps_slack,
)


def run(opt, grad_fn, x0, steps, key=0, value_fn=None):
    """steps of opt on grad_fn(x, key) from x0; the iterates and the final state."""

    def step(carry, k):
        x, s = carry
        g = grad_fn(x, k)
        extra = {} if value_fn is None else {"value": value_fn(x)}
        u, s = opt.update(g, s, x, **extra)
        x = optax.apply_updates(x, u)
        return (x, s), x

    (x, s), xs = jax.lax.scan(step, (x0, opt.init(x0)),
                              jax.random.split(jax.random.PRNGKey(key), steps))
    return xs, s


def test_averaged_keeps_the_mean_of_the_iterates():
    xs, s = run(averaged(optax.sgd(0.1)), lambda x, k: x - 3.0, jnp.zeros(2), 50)
    np.testing.assert_allclose(averaged_params(s), xs.mean(0), rtol=1e-5)


def test_stationarity_test_fires_on_noise_and_never_on_a_drift():
    test = StationarityTest(block=50, threshold=2.0, min_phase=100)
    noise = jax.random.normal(jax.random.PRNGKey(0), (2000, 10))

    def count(gs):
        def step(s, g):
            s, e = test.update(s, g)
            return s, e

        _, events = jax.lax.scan(step, test.init(jnp.zeros(10)), gs)
        return np.asarray(events)

    # pure noise: every block passes once the phase is min_phase old, and each event
    # doubles the next block: 50 (held to 100 by min_phase), 100, 200, 400, 800 ...
    events = count(noise)
    assert 4 <= events.sum() <= 6
    # a mean of 0.3 sd per coordinate: S ~ 1 + 0.09 n, above 2 from n = 50 on
    assert count(noise + 0.3).sum() == 0


def test_stationarity_test_doubles_the_block_after_a_failed_test_and_after_an_event():
    test = StationarityTest(block=10, threshold=2.0, min_phase=1)
    s = test.init(jnp.zeros(3))
    for _ in range(10):
        s, e = test.update(s, jnp.ones(3))  # a pure drift: S = n
    assert not bool(e) and int(s.block_length) == 20
    signs = jnp.array([1.0, -1.0] * 10)  # no drift: S = 0 over the block
    for i in range(20):
        s, e = test.update(s, signs[i] * jnp.ones(3))
    assert bool(e) and int(s.block_length) == 40


def test_plateau_cuts_the_step_at_stationarity_and_averages_the_phase():
    # gradients of a quadratic with noise: SGD at 0.1 settles, then the cuts come
    def grad(x, k):
        return x - 1.0 + jax.random.normal(k, x.shape)

    opt = plateau(optax.sgd(0.1), block=50, min_phase=100)
    xs, s = run(opt, grad, jnp.zeros(5), 2950)  # not at a block's end
    assert int(s.num_decays) >= 3
    assert float(s.scale) == pytest.approx(0.5 ** int(s.num_decays))
    # the phase average is closer to the optimum than the last iterate, on average
    avg = np.asarray(averaged_params(s))
    assert np.abs(avg - 1.0).mean() < np.abs(np.asarray(xs[-1]) - 1.0).mean()
    assert np.abs(avg - 1.0).max() < 0.2


def test_plateau_adam_and_the_stopping_rule_count_the_same_events():
    def grad(x, k):
        return x - 1.0 + jax.random.normal(k, x.shape)

    opt = plateau_adam(0.05, block=50, min_phase=100, max_decays=1000)
    rule = vx.stopping.Stationary(events=100, block=50, min_phase=100)

    def step(carry, k):
        x, s, r = carry
        g = grad(x, k)
        u, s = opt.update(g, s, x)
        r = rule.update(r, jnp.zeros(()), g)
        return (optax.apply_updates(x, u), s, r), None

    x0 = jnp.zeros(4)
    (x, s, r), _ = jax.lax.scan(step, (x0, opt.init(x0), rule.init(x0)),
                                jax.random.split(jax.random.PRNGKey(1), 2000))
    assert int(s.num_decays) == int(r[1]) > 0


def test_cyclical_adam_restarts_its_step():
    opt = cyclical_adam(100, learning_rate=0.1, num_cycles=4, final_fraction=0.1)
    xs, _ = run(opt, lambda x, k: jnp.ones(1), jnp.zeros(1), 100)
    steps = -np.diff(np.concatenate([[0.0], np.asarray(xs)[:, 0]]))  # Adam: |step| ~ lr
    assert steps[24] < 0.02 and steps[25] > 0.09  # the end of a cycle, then the restart
    with pytest.raises(vx.ArgumentError):
        cyclical_adam(0)


def test_sps_slack_needs_the_loss_and_minimizes_a_quadratic():
    opt = sps_slack(max_learning_rate=1.0, preconditioner="none")

    def f(x):
        return 0.5 * jnp.sum(x**2) + 2.0  # minimum 2, unknown to the rule

    xs, s = run(opt, lambda x, k: x, jnp.full(3, 4.0), 300, value_fn=f)
    assert float(jnp.max(jnp.abs(xs[-1]))) < 1e-2
    with pytest.raises(TypeError):
        opt.update(jnp.ones(3), opt.init(jnp.ones(3)), jnp.ones(3))  # no value=


def test_innaprop_minimizes_an_ill_conditioned_quadratic():
    scales = jnp.array([1.0, 100.0])
    xs, _ = run(innaprop(0.05), lambda x, k: scales * (x - 2.0), jnp.zeros(2), 2000)
    np.testing.assert_allclose(xs[-1], 2.0, atol=0.05)
    with pytest.raises(vx.ArgumentError):
        innaprop(0.0)


def test_rules_run_inside_fit():
    from conftest import gaussian_guide, gaussian_model

    for opt in (plateau_adam(), innaprop(), cyclical_adam(200), averaged(optax.adam(1e-2))):
        res = vx.fit(gaussian_model, x=1.3, guide=gaussian_guide, optimizer=opt,
                     num_steps=200, progress=False, key=0)
        assert np.all(np.isfinite(res.losses))


def test_clip_spikes_clips_a_spike_and_nothing_else():
    # gradients of norm ~1 (log norm sd 0.1), one of norm 1e6 at step 300: that one alone is
    # cut down to the running bar, exp(m + max(4 sd, log 100)) ~ 100 times their geometric
    # mean, and the others pass unchanged
    rng = np.random.default_rng(0)
    norms = np.exp(rng.normal(0.0, 0.1, 400))
    norms[300] = 1e6
    grads = jnp.asarray(norms[:, None] * np.array([0.6, 0.8]), jnp.float32)
    opt = vx.optim.clip_spikes()

    def step(state, g):
        out, state = opt.update({"g": g}, state)
        return state, jnp.linalg.norm(out["g"])

    state, out = jax.lax.scan(step, opt.init({"g": grads[0]}), grads)
    out = np.asarray(out)
    assert int(state.num_clipped) == 1
    assert 80.0 < out[300] < 130.0
    keep = np.arange(400) != 300
    np.testing.assert_allclose(out[keep], norms[keep], rtol=1e-5)
    # the spike did not raise the bar much: its log norm entered the moments at the bar
    assert float(state.mean) < 0.05 and float(jnp.sqrt(state.var)) < 0.5


def test_clip_spikes_passes_everything_during_warmup_and_follows_a_steady_growth():
    opt = vx.optim.clip_spikes(warmup=10)
    grads = jnp.asarray(np.exp(np.r_[np.zeros(5), 20.0, 0.02 * np.arange(300)]), jnp.float32)

    def step(state, g):
        out, state = opt.update(g, state)
        return state, out

    state, out = jax.lax.scan(step, opt.init(grads[0]), grads)
    assert float(out[5]) == pytest.approx(float(np.exp(20.0)))  # step 5 < warmup
    # a norm growing by 2% a step keeps pace with the running bar: clipped rarely, if ever,
    # once the moments have forgotten the warm-up's spike
    assert int(state.num_clipped) < 30


@pytest.mark.parametrize("kwargs, argument", [({"num_sd": 0.0}, "num_sd"),
                                              ({"decay": 1.0}, "decay"),
                                              ({"min_ratio": 0.5}, "min_ratio"),
                                              ({"warmup": -1}, "warmup")])
def test_clip_spikes_names_a_bad_argument(kwargs, argument):
    with pytest.raises(vx.ArgumentError) as e:
        vx.optim.clip_spikes(**kwargs)
    assert e.value.argument == argument


def test_the_default_optimizer_clips_spikes_unless_told_not_to():
    assert isinstance(plateau_adam().init({"x": jnp.zeros(2)}).inner[0], vx.optim.SpikeState)
    assert not isinstance(plateau_adam(spike_sd=None).init({"x": jnp.zeros(2)}).inner[0],
                          vx.optim.SpikeState)


def test_the_default_optimizer_names_its_own_bad_spike_sd():
    with pytest.raises(vx.ArgumentError) as e:
        plateau_adam(spike_sd=0.0)
    assert e.value.argument == "spike_sd"
