"""The loop: stopping rules fired inside the compiled chunks, callbacks every k steps, and
their errors."""


import numpy as np
import pytest
from conftest import small_fit

import vi_ext as vx
from models import eight_schools


@pytest.mark.parametrize("rule", [vx.stopping.RelativeLossChange(window=100, rtol=1e-3),
                                  vx.stopping.GradientsUncorrelated()])
def test_fit_stops_when_a_rule_fires(rule):
    res = vx.fit(eight_schools.model, num_steps=6000, progress=False, stopping=rule,
                 **eight_schools.data())
    assert res.stop_reason.startswith(f"converged ({rule.name}) at step")
    n = int(res.state.step)
    assert 200 <= n < 6000 and len(res.losses) == n
    assert bool(res.state.converged)


def test_bad_stopping_and_callback_arguments():
    with pytest.raises(vx.ArgumentError, match="stopping"):
        small_fit(stopping=100)
    with pytest.raises(vx.ArgumentError, match="stopping"):
        small_fit(stopping=[object()])
    with pytest.raises(vx.ArgumentError, match="callbacks"):
        small_fit(callbacks=[3])
    with pytest.raises(vx.ArgumentError, match="callback_every"):
        small_fit(callbacks=[print], callback_every=0)
    with pytest.raises(vx.ArgumentError, match="checkpoint_every"):
        small_fit(checkpoint_every=10)


def test_callbacks_see_every_k_steps_and_can_stop(uninterrupted):
    seen = []

    def record(step, state, loss):
        seen.append((step, int(state.step), loss))

    def stop_at_120(step, state, loss):
        return step >= 120

    res = small_fit(callbacks=[record, stop_at_120], callback_every=40)
    assert [s for s, _, _ in seen] == [40, 80, 120]
    assert all(s == n for s, n, _ in seen)
    np.testing.assert_allclose(seen[0][2], np.mean(uninterrupted.losses[:40]), rtol=1e-6)
    assert res.stop_reason == "stopped by callback test_callbacks_see_every_k_steps_and_can_" \
                              "stop.<locals>.stop_at_120 at step 120"
    assert len(res.losses) == 120
    np.testing.assert_array_equal(res.losses, uninterrupted.losses[:120])


def test_callbacks_default_to_every_chunk():
    seen = []
    small_fit(callbacks=[lambda step, state, loss: seen.append(step)], chunk_size=75)
    assert seen == [75, 150, 225, 300]


def test_a_callback_that_raises(tmp_path):
    ck = tmp_path / "c.npz"

    def broken(step, state, loss):
        if step >= 100:
            raise ZeroDivisionError("oops")

    with pytest.raises(vx.CallbackError, match=r"callback .*broken raised ZeroDivisionError "
                       r"at step 100: oops") as e:
        small_fit(callbacks=[broken], callback_every=50, checkpoint=str(ck), checkpoint_every=50)
    err = e.value
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert err.step == 100 and len(err.result.losses) == 100
    assert all(np.isfinite(float(v)) for v in err.result.params.values())
    # the checkpoint is at that step: fix the callback and resume
    assert vx.checkpoint.read(str(ck))[0]["num_losses"] == 100
