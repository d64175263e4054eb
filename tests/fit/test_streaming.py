"""Streamed fits: minibatches from memory and memory-mapped files, exact resume, unbiased
minibatch gradients, subsampling plates, argument errors."""


import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import stream_fit

import vi_ext as vx
from models import logistic_regression as lr
from vi_ext import orders


@pytest.fixture(scope="module")
def streamed(small):
    return stream_fit(*small)


def _same(a, b):
    for k in a.params:
        np.testing.assert_array_equal(np.asarray(a.params[k]), np.asarray(b.params[k]))


def test_a_memory_mapped_file_streams_the_same_fit_as_the_array(small, streamed, tmp_path):
    np.save(tmp_path / "X.npy", small[0])
    np.save(tmp_path / "y.npy", small[1])
    from_files = stream_fit(str(tmp_path / "X.npy"), tmp_path / "y.npy")
    _same(streamed, from_files)
    assert np.all(np.isfinite(streamed.losses))


def test_a_streamed_fit_resumes_bit_for_bit(small, streamed, tmp_path):
    ck = tmp_path / "ck.npz"

    def interrupt(step, state, loss):
        if step >= 20:
            raise KeyboardInterrupt  # like Ctrl-C, not caught by fit

    with pytest.raises(KeyboardInterrupt):
        stream_fit(*small, checkpoint=str(ck), checkpoint_every=10, callbacks=[interrupt],
                chunk_size=10)
    assert vx.checkpoint.read(str(ck))[0]["num_losses"] == 20
    resumed = stream_fit(*small, resume=str(ck), chunk_size=10)
    _same(streamed, resumed)
    np.testing.assert_array_equal(streamed.losses, resumed.losses)


def test_a_checkpoint_of_other_batches_is_refused_by_what_differs(small, tmp_path):
    ck = str(tmp_path / "ck.npz")
    stream_fit(*small, num_steps=10, chunk_size=10, checkpoint=ck)
    assert vx.checkpoint.read(ck)[0]["info"]["data"]["num_rows"] == 200
    with pytest.raises(vx.CheckpointError, match="seed=.*the same key="):
        stream_fit(*small, num_steps=20, chunk_size=10, resume=ck, key=4)
    with pytest.raises(vx.ArgumentError, match="plate 'data' subsamples 32 of 200 rows.*"
                       "num_data=100"):
        stream_fit(small[0][:100], small[1][:100], num_steps=20, chunk_size=10, resume=ck)
    with pytest.raises(vx.CheckpointError, match="num_rows=200.*num_rows=100"):
        stream_fit(small[0][:100], small[1][:100], num_steps=20, chunk_size=10, resume=ck,
                   num_data=100)
    with pytest.raises(vx.CheckpointError, match="streamed fit .*same data= and batch_size="):
        vx.fit(lr.model, X=small[0][:32], y=small[1][:32], num_steps=20, key=3,
               progress=False, resume=ck)


def test_a_computed_order_checkpoint_that_records_no_order_is_refused(small, tmp_path):
    # written before checkpoints recorded their epoch order: over 2^20 rows the orders have
    # changed since, so resuming it would silently draw other batches
    n = orders.STORED_ORDER_MAX_ROWS + 8
    X, y = np.resize(small[0], (n, small[0].shape[1])), np.resize(small[1], n)
    ck = str(tmp_path / "ck.npz")
    res = stream_fit(X, y, num_steps=10, chunk_size=10, checkpoint=ck, num_data=n)
    meta, _, losses = vx.checkpoint.read(ck)
    assert meta["info"]["data"]["order"] == orders.COMPUTED_SCHEME
    vx.checkpoint.save(ck, res.state, losses, {k: v for k, v in meta["info"].items()
                                               if k != "data"})
    with pytest.raises(vx.CheckpointError, match="records no epoch order"):
        stream_fit(X, y, num_steps=20, chunk_size=10, resume=ck, num_data=n)


def test_host_buffers_reused_across_chunks_stream_the_same_fit(small, streamed, monkeypatch):
    # 6 chunks through two host buffers per array: the gather of chunk k+2 overwrites
    # chunk k's, and the device aliases them (CPU): the fit must not see it (chunks of 10,
    # the resume test's program)
    from vi_ext.data import BatchBuffers
    from vi_ext.fit import loop

    handed = []

    class Counted(BatchBuffers):
        def next(self):
            out = super().next()
            handed.append(out["X"].ctypes.data)
            return out

    monkeypatch.setattr(loop, "BatchBuffers", Counted)
    chunked = stream_fit(*small, chunk_size=10)
    assert len(handed) >= 6 and len(set(handed)) == 2
    _same(streamed, chunked)
    np.testing.assert_array_equal(streamed.losses, chunked.losses)


def test_an_epoch_of_minibatch_gradients_averages_to_the_full_data_gradient(small):
    """With the same guide draw, the N / B-scaled minibatch loss and gradient, averaged over
    the B-row batches of one epoch (B divides N), equal the full-data ones."""
    from numpyro.infer.autoguide import AutoNormal

    from vi_ext.fit import build

    X, y = small
    # (a guide of one's own: the default guide's start is not what is tested here)
    streamed = build(lr.model, data={"X": X, "y": y}, batch_size=40, num_data=200, key=2,
                     guide=AutoNormal(lr.model))
    full = build(lr.model, X, y, key=2, guide=AutoNormal(lr.model))
    u, k = streamed.init_state.params, jax.random.PRNGKey(7)
    ds = streamed.dataset
    batch_loss_and_grad = jax.jit(streamed.loss_and_grad)  # one program for the 5 batches
    per_batch = [batch_loss_and_grad(u, k, {}, {n: jnp.asarray(v) for n, v in
                                                ds.batch(t).items()}) for t in range(5)]
    loss, grads, _ = jax.jit(full.loss_and_grad)(u, k, {})
    np.testing.assert_allclose(np.mean([p[0] for p in per_batch]), loss, rtol=1e-5)
    for name in grads:
        mean = np.mean([np.asarray(p[1][name]) for p in per_batch], axis=0)
        np.testing.assert_allclose(mean, grads[name], rtol=1e-4, atol=1e-4)


def test_bad_data_arguments_are_named(small, tmp_path):
    X, y = small
    with pytest.raises(vx.ArgumentError, match="'data'.*N / B = 200/32"):
        vx.fit(lr.model, data={"X": X, "y": y}, batch_size=32, num_steps=2, progress=False)
    with pytest.raises(vx.ArgumentError, match="'data'.*same number of rows"):
        stream_fit(X, y[:-1])
    with pytest.raises(vx.ArgumentError, match="'batch_size'.*\\[1, 200\\]"):
        stream_fit(X, y, batch_size=500)
    with pytest.raises(vx.ArgumentError, match="'batch_size'.*data="):
        vx.fit(lr.model, X, y, batch_size=10, num_steps=2, progress=False)
    with pytest.raises(vx.ArgumentError, match="'data'.*no file"):
        stream_fit(str(tmp_path / "missing.npy"), y)
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(vx.ArgumentError, match="not a .npy file"):
        stream_fit(str(tmp_path / "junk.npy"), y)
    with pytest.raises(vx.ArgumentError, match="'data'.*both"):
        vx.fit(lr.model, data={"X": X, "y": y}, batch_size=8, num_data=200, y=y, progress=False)
    with pytest.raises(vx.ArgumentError, match="'shuffle'"):
        stream_fit(X, y, shuffle="yes")
    with pytest.raises(vx.ArgumentError, match="'devices'.*asked for 64"):
        stream_fit(X, y, devices=64)


def test_subsampled_local_latents_share_the_guides_indices():
    """z_i ~ N(0, 1), x_i ~ N(z_i, 1), i = 1..20, with plate(20, subsample_size=5) in model
    and guide: the ELBO estimate is unbiased for the full-data ELBO (closed form) only if the
    model scores the rows the guide drew."""
    n, b = 20, 5
    x = jnp.linspace(-2.0, 2.0, n)

    def model(x):
        with numpyro.plate("data", n, subsample_size=b) as ind:
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            numpyro.sample("x", dist.Normal(z, 1.0), obs=x[ind])

    def guide(x):
        m = numpyro.param("m", jnp.zeros(n))
        s = numpyro.param("s", jnp.ones(n), constraint=dist.constraints.positive)
        with numpyro.plate("data", n, subsample_size=b) as ind:
            numpyro.sample("z", dist.Normal(m[ind], s[ind]))

    m, s = 0.3 * x, jnp.full(n, 0.7)
    exact = jnp.sum(-jnp.log(2 * jnp.pi) - 0.5 * (m**2 + s**2) - 0.5 * ((x - m) ** 2 + s**2)
                    + 0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2))
    est = jax.jit(jax.vmap(lambda k: vx.estimate(vx.objectives.elbo(), model, guide,
                                                  {"m": m, "s": s}, x, key=k)[0]))
    v = np.asarray(est(jax.random.split(jax.random.PRNGKey(0), 4000)))
    se = v.std() / np.sqrt(len(v))
    assert abs(v.mean() - float(exact)) < 4 * se, (v.mean(), float(exact), se)
