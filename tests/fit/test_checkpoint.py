"""Checkpoints: exact resume (interrupted or killed), corrupted and incompatible files,
atomic writes."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from conftest import gaussian_guide, gaussian_model, small_fit

import vi_ext as vx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _same_params(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)




def test_resume_after_an_interruption_is_bit_for_bit(uninterrupted, tmp_path):
    ck = tmp_path / "fit.npz"

    def interrupt(step, state, loss):
        if step >= 150:
            raise KeyboardInterrupt  # like Ctrl-C, not caught by fit

    with pytest.raises(KeyboardInterrupt):
        small_fit(checkpoint=str(ck), checkpoint_every=50, callbacks=[interrupt], callback_every=50)
    saved = vx.checkpoint.read(str(ck))[0]
    assert saved["num_losses"] == 150
    resumed = small_fit(checkpoint=str(ck), resume=str(ck))
    _same_params(uninterrupted.params, resumed.params)
    np.testing.assert_array_equal(uninterrupted.losses, resumed.losses)
    assert int(resumed.state.step) == 300
    # resuming a finished fit returns it as it is
    again = small_fit(resume=str(ck))
    _same_params(uninterrupted.params, again.params)


def test_extending_a_finished_fit_continues_it_as_if_never_stopped(tmp_path):
    # the default optimizer's schedule does not depend on num_steps: a fit of 40 steps
    # extended to 60 is the fit of 60 steps (up to the rounding of other chunk programs)
    ck = tmp_path / "fit.npz"
    opts = dict(guide=gaussian_guide, key=7, progress=False, stopping=None, x=1.3)
    vx.fit(gaussian_model, num_steps=40, checkpoint=str(ck), **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        more = vx.fit(gaussian_model, num_steps=60, resume=str(ck), **opts)
    assert int(more.state.step) == 60
    whole = vx.fit(gaussian_model, num_steps=60, **opts)
    np.testing.assert_allclose(more.losses, whole.losses, rtol=1e-5)
    for k in whole.params:
        np.testing.assert_allclose(more.params[k], whole.params[k], rtol=1e-5, err_msg=k)


def test_a_killed_process_resumes_bit_for_bit(uninterrupted, tmp_path):
    ck = tmp_path / "killed.npz"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        import vi_ext as vx
        from conftest import gaussian_guide, gaussian_model, small_fit

        def slow(step, state, loss):
            if step >= 100:
                time.sleep(0.2)

        vx.fit(gaussian_model, guide=gaussian_guide, num_steps=300, key=7, progress=False,
               checkpoint={str(ck)!r}, checkpoint_every=10, callbacks=[slow],
               callback_every=10, x=1.3)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if ck.exists() and vx.checkpoint.read(str(ck))[0]["num_losses"] >= 120:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the fit finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    step = vx.checkpoint.read(str(ck))[0]["num_losses"]
    assert 120 <= step < 300
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    assert len(leftovers) <= 1  # a kill mid-write leaves at most the temporary file
    resumed = small_fit(resume=str(ck))
    _same_params(uninterrupted.params, resumed.params)
    np.testing.assert_array_equal(uninterrupted.losses, resumed.losses)


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_corrupted_checkpoint_is_refused_and_left_untouched(tmp_path, damage):
    ck = tmp_path / "c.npz"
    small_fit(checkpoint=str(ck))
    raw = ck.read_bytes()
    if damage == "truncate":
        ck.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        # flip bytes inside the first stored array, so that its CRC no longer matches
        i = raw.index(b"leaf_00000.npy") + 200
        ck.write_bytes(raw[:i] + bytes(b ^ 0xFF for b in raw[i : i + 8]) + raw[i + 8 :])
    else:
        ck.write_bytes(b"not a checkpoint at all")
    before = _digest(ck)
    with pytest.raises(vx.CheckpointError, match=r"corrupted or truncated|not a vi_ext"):
        small_fit(resume=str(ck))
    assert _digest(ck) == before


def test_an_incompatible_checkpoint_names_what_differs(tmp_path):
    ck = tmp_path / "c.npz"
    small_fit(checkpoint=str(ck))
    before = _digest(ck)

    def other_guide(x=None):
        m = numpyro.param("m", jnp.zeros(3))
        s = numpyro.param("s", 0.8, constraint=dist.constraints.positive)
        numpyro.sample("z", dist.Normal(m, s).to_event(1))

    def other_model(x=None):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        numpyro.sample("x", dist.Normal(z.sum(), 1.0), obs=x)

    with pytest.raises(vx.CheckpointError, match=r"leaf .*'m'.* float32\[\] in the "
                       r"checkpoint but float32\[3\] in this fit"):
        vx.fit(other_model, guide=other_guide, num_steps=300, progress=False,
               resume=str(ck), x=1.3)
    with pytest.raises(vx.CheckpointError, match="was written by a different fit"):
        small_fit(resume=str(ck), optimizer=optax.sgd(0.01))
    with pytest.raises(vx.CheckpointError, match="no such file"):
        small_fit(resume=str(tmp_path / "missing.npz"))
    with pytest.raises(vx.ArgumentError, match="num_steps"):
        vx.fit(gaussian_model, guide=gaussian_guide, num_steps=100, key=7, progress=False,
               resume=str(ck), x=1.3)
    assert _digest(ck) == before


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    ck = tmp_path / "c.npz"
    small_fit(checkpoint=str(ck))
    before = _digest(ck)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(vx.CheckpointError, match="could not be written: disk full"):
        small_fit(checkpoint=str(ck))
    assert _digest(ck) == before  # the old checkpoint survives a failed write
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
