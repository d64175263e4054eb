"""The statistical stopping rules: NoImprovement (trend test), Stationary, AllOf."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import gaussian_guide, gaussian_model

import vi_ext as vx
from vi_ext.stopping import AllOf, NoImprovement, Stationary


def first_stop(rule, losses, grads=None):
    """The number of updates after which ``rule`` first says converged (None: never)."""
    grads = jnp.zeros((len(losses), 2)) if grads is None else grads

    def step(s, lg):
        s = rule.update(s, lg[0], lg[1])
        return s, rule.converged(s)

    _, done = jax.lax.scan(step, rule.init(jnp.zeros(2)), (jnp.asarray(losses), grads))
    done = np.asarray(done)
    return int(np.argmax(done)) + 1 if done.any() else None


def test_no_improvement_fires_on_a_flat_noisy_loss_after_its_window():
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (3000,))) * 5.0
    rule = NoImprovement(batch=50, num_batches=20, min_steps=0)
    assert first_stop(rule, 100.0 + noise) == 1000  # the first full window


def test_no_improvement_waits_while_the_loss_falls():
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3000,))) * 5.0
    # a fall of 5 nats per 1000 steps: the slope's t statistic over a window is ~ -9
    falling = 100.0 - 0.005 * np.arange(3000) + noise
    assert first_stop(NoImprovement(batch=50, num_batches=20, min_steps=0), falling) is None
    # once the fall stops, the rule fires within about a window
    bent = np.where(np.arange(3000) < 1500, falling, falling[1499] + noise)
    stop = first_stop(NoImprovement(batch=50, num_batches=20, min_steps=0), bent)
    assert stop is not None and 1500 < stop <= 2700


def test_no_improvement_false_alarms_on_a_slow_fall_are_rare():
    # a fall of 2 nats per window with noise 5: the improvement bound (atol 0.5) is not met
    stops = 0
    for seed in range(20):
        noise = np.asarray(jax.random.normal(jax.random.PRNGKey(10 + seed), (1000,))) * 5.0
        loss = 100.0 - 0.002 * np.arange(1000) + noise
        stops += first_stop(NoImprovement(batch=50, num_batches=20, min_steps=0), loss) is not None
    assert stops <= 6  # the level-5% test misses a 2-nat fall over 1000 steps at most this often


def test_bad_arguments_name_the_argument():
    with pytest.raises(vx.ArgumentError) as e:
        NoImprovement(num_batches=2).init(jnp.zeros(1))
    assert e.value.argument == "num_batches"


def test_all_of_needs_every_rule():
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (3000,))) * 5.0
    flat = NoImprovement(batch=50, num_batches=20, min_steps=0)
    never = Stationary(events=10**6)
    assert first_stop(AllOf((flat, never)), 100.0 + noise) is None
    assert first_stop(AllOf((flat,)), 100.0 + noise) == 1000


def test_fit_stops_on_a_statistical_rule_and_says_so():
    res = vx.fit(gaussian_model, x=1.3, guide=gaussian_guide, num_steps=20000,
                 optimizer=vx.optim.plateau_adam(0.05), stopping=Stationary(events=3),
                 progress=False, key=0)
    assert len(res.losses) < 20000 and res.converged
    assert res.stop_reason.startswith("converged (stationary)")
    assert float(res.params["m"]) == pytest.approx(0.65, abs=0.1)


def test_fit_warns_when_the_cap_comes_before_its_rule():
    with pytest.warns(RuntimeWarning, match="before its stopping rule"):
        res = vx.fit(gaussian_model, x=1.3, guide=gaussian_guide, num_steps=50,
                     stopping=Stationary(events=100), progress=False, key=0)
    assert not res.converged and res.stop_reason == "num_steps"


def test_an_averaging_optimizer_gives_the_average_as_the_fits_params():
    res = vx.fit(gaussian_model, x=1.3, guide=gaussian_guide, num_steps=300,
                 optimizer=vx.optim.averaged(optax.adam(0.05)), progress=False,
                 key=0)
    average = vx.optim.averaged_params(res.state.opt_state)
    assert float(res.params["m"]) == pytest.approx(float(average["m"]))
    assert float(res.params["m"]) != float(res.state.params["m"])  # the last iterate
