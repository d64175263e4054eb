"""fit's default optimizer: Adam with the step held, then annealed (vi_ext.optim)."""

import numpy as np
import optax
import pytest
from conftest import gaussian_guide, gaussian_model

import vi_ext as vx


def test_schedule_holds_then_anneals_to_the_final_fraction():
    s = vx.optim.annealed_schedule(100, 0.02, 0.1)
    lrs = np.array([float(s(t)) for t in range(0, 121)])
    np.testing.assert_allclose(lrs[:51], 0.02, rtol=1e-6)  # held for the first half
    assert np.all(np.diff(lrs) <= 1e-9)  # then never increases
    assert 0.002 < lrs[75] < 0.02
    np.testing.assert_allclose(lrs[100:], 0.002, rtol=1e-5)  # a tenth at num_steps, held


def test_one_step_schedule_is_the_initial_rate():
    assert float(vx.optim.annealed_schedule(1)(0)) == pytest.approx(1e-2)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=2.5), "num_steps"),
        (dict(num_steps=10, learning_rate=0.0), "learning_rate"),
        (dict(num_steps=10, final_fraction=0.0), "final_fraction"),
        (dict(num_steps=10, final_fraction=1.5), "final_fraction"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(vx.ArgumentError) as e:
        vx.optim.default_optimizer(**kwargs)
    assert e.value.argument == argument


def test_fit_without_an_optimizer_uses_plateau_adam():
    kw = dict(x=1.3, guide=gaussian_guide, num_steps=40, stopping=None, progress=False, key=3)
    default = vx.fit(gaussian_model, **kw)
    explicit = vx.fit(gaussian_model, optimizer=vx.optim.plateau_adam(), **kw)
    constant = vx.fit(gaussian_model, optimizer=optax.adam(1e-2), **kw)
    for n in ("m", "s"):
        assert float(default.params[n]) == float(explicit.params[n])
    np.testing.assert_array_equal(default.losses, explicit.losses)
    # before its first stationarity event, and with no gradient spike to clip, it is
    # Adam(1e-2), step for step (to rounding: its spike test changes how XLA fuses the
    # step), and its params are the last iterate (not yet an average)
    np.testing.assert_allclose(default.losses, constant.losses, rtol=1e-5)
    np.testing.assert_allclose(float(default.params["m"]), float(constant.params["m"]),
                               rtol=1e-5)
