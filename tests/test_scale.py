"""Scale: minibatches streamed from memory and from memory-mapped .npy files, subsampling
plates, and fits sharded over (simulated) devices."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import vi_ext as vx
from models import logistic_regression as lr
from vi_ext.data import Prefetcher, as_dataset, open_npy, permute, round_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def small():
    X, y = lr.data()["X"][:200, :5], lr.data()["y"][:200]
    return np.ascontiguousarray(X), y


def _stream(X, y, **kw):
    kw = {"num_steps": 60, "batch_size": 32, "progress": False, "key": 3, "num_data": 200,
          **kw}
    return vx.fit(lr.model, data={"X": X, "y": y}, **kw)


@pytest.fixture(scope="module")
def streamed(small):
    return _stream(*small)


def _same(a, b):
    for k in a.params:
        np.testing.assert_array_equal(np.asarray(a.params[k]), np.asarray(b.params[k]))


# ------------------------------------------------------------------ the batches


def test_every_row_once_per_epoch_and_the_order_is_reproducible(small):
    ds = as_dataset({"X": small[0]}, 32, True, jax.random.PRNGKey(1))
    assert ds.steps_per_epoch == 6  # 200 // 32: the last 8 rows of each order wait
    epoch0 = np.concatenate([ds.rows(t) for t in range(6)])
    assert len(np.unique(epoch0)) == 192
    assert not np.array_equal(epoch0, np.concatenate([ds.rows(t) for t in range(6, 12)]))
    again = as_dataset({"X": small[0]}, 32, True, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(ds.chunk_rows(5, 4, 6), again.chunk_rows(5, 4, 6))
    in_order = as_dataset({"X": small[0]}, 32, False, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(in_order.rows(7), np.arange(32, 64))


def test_the_prefetcher_hands_over_the_batches_asked_for():
    ds = as_dataset({"a": np.arange(40.0)}, 4, True, jax.random.PRNGKey(0))
    calls = []

    def put(rows):
        calls.append(rows)
        return {"a": ds.arrays["a"][rows]}

    p = Prefetcher(ds, 3, put)
    first = p.get(0, 3)
    p.prepare(3, 2)                          # gathered now, handed over by the next get
    second = p.get(3, 2)
    assert len(calls) == 2
    np.testing.assert_array_equal(first["a"][2], ds.batch(2)["a"])
    np.testing.assert_array_equal(second["a"][:2], np.stack([ds.batch(3)["a"],
                                                             ds.batch(4)["a"]]))
    np.testing.assert_array_equal(second["a"][2], second["a"][1])   # padding
    p.prepare(5, 3)
    np.testing.assert_array_equal(p.get(4, 3)["a"][0], ds.batch(4)["a"])   # not the prepared
    assert len(calls) == 4


def test_stored_and_computed_orders_visit_every_row_once(monkeypatch):
    from vi_ext import data

    for limit in (10**6, 100):               # stored up to the limit, computed beyond
        monkeypatch.setattr(data, "STORED_ORDER_MAX_ROWS", limit)
        ds = as_dataset({"X": np.zeros(1000)}, 100, True, jax.random.PRNGKey(4))
        epoch = np.concatenate([ds.rows(t) for t in range(10)])
        np.testing.assert_array_equal(np.sort(epoch), np.arange(1000))
        np.testing.assert_array_equal(ds.chunk_rows(3, 9, 9)[0], ds.rows(3))


@pytest.mark.parametrize("n", [1, 2, 7, 200, 4097])
def test_the_computed_epoch_order_is_a_permutation(n):
    keys = round_keys((1, 2), 0)
    order = permute(np.arange(n), n, keys)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    if n >= 200:
        assert not np.array_equal(order, np.arange(n))
        assert not np.array_equal(order, permute(np.arange(n), n, round_keys((1, 2), 1)))
        # a batch's rows, computed alone, are those of the whole order
        np.testing.assert_array_equal(permute(np.arange(50, 90), n, keys), order[50:90])


def test_a_fortran_ordered_or_non_array_file_is_refused(tmp_path):
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((10, 3))))
    with pytest.raises(vx.ArgumentError, match="Fortran"):
        open_npy(tmp_path / "f.npy")
    np.savez(tmp_path / "z.npz", a=np.zeros(3))
    with pytest.raises(vx.ArgumentError, match="not a .npy"):
        open_npy(tmp_path / "z.npz")


# ------------------------------------------------------------------ streamed fits


def test_a_memory_mapped_file_streams_the_same_fit_as_the_array(small, streamed, tmp_path):
    np.save(tmp_path / "X.npy", small[0])
    np.save(tmp_path / "y.npy", small[1])
    from_files = _stream(str(tmp_path / "X.npy"), tmp_path / "y.npy")
    _same(streamed, from_files)
    assert np.all(np.isfinite(streamed.losses))


def test_a_streamed_fit_resumes_bit_for_bit(small, streamed, tmp_path):
    ck = tmp_path / "ck.npz"

    def interrupt(step, state, loss):
        if step >= 20:
            raise KeyboardInterrupt  # like Ctrl-C, not caught by fit

    with pytest.raises(KeyboardInterrupt):
        _stream(*small, checkpoint=str(ck), checkpoint_every=10, callbacks=[interrupt],
                chunk_size=10)
    assert vx.checkpoint.read(str(ck))[0]["num_losses"] == 20
    resumed = _stream(*small, resume=str(ck), chunk_size=10)
    _same(streamed, resumed)
    np.testing.assert_array_equal(streamed.losses, resumed.losses)


def test_an_epoch_of_minibatch_gradients_averages_to_the_full_data_gradient(small):
    """With the same guide draw, the N / B-scaled minibatch loss and gradient, averaged over
    the B-row batches of one epoch (B divides N), equal the full-data ones."""
    from vi_ext.fit import build

    X, y = small
    streamed = build(lr.model, data={"X": X, "y": y}, batch_size=40, num_data=200, key=2)
    full = build(lr.model, X, y, key=2)
    u, k = streamed.init_state.params, jax.random.PRNGKey(7)
    ds = streamed.dataset
    per_batch = [streamed.loss_and_grad(u, k, {}, {n: jnp.asarray(v) for n, v in
                                                    ds.batch(t).items()}) for t in range(5)]
    loss, grads, _ = full.loss_and_grad(u, k, {})
    np.testing.assert_allclose(np.mean([p[0] for p in per_batch]), loss, rtol=1e-5)
    for name in grads:
        mean = np.mean([np.asarray(p[1][name]) for p in per_batch], axis=0)
        np.testing.assert_allclose(mean, grads[name], rtol=1e-4, atol=1e-4)


def test_bad_data_arguments_are_named(small, tmp_path):
    X, y = small
    with pytest.raises(vx.ArgumentError, match="'data'.*N / B = 200/32"):
        vx.fit(lr.model, data={"X": X, "y": y}, batch_size=32, num_steps=2, progress=False)
    with pytest.raises(vx.ArgumentError, match="'data'.*same number of rows"):
        _stream(X, y[:-1])
    with pytest.raises(vx.ArgumentError, match="'batch_size'.*\\[1, 200\\]"):
        _stream(X, y, batch_size=500)
    with pytest.raises(vx.ArgumentError, match="'batch_size'.*data="):
        vx.fit(lr.model, X, y, batch_size=10, num_steps=2, progress=False)
    with pytest.raises(vx.ArgumentError, match="'data'.*no file"):
        _stream(str(tmp_path / "missing.npy"), y)
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(vx.ArgumentError, match="not a .npy file"):
        _stream(str(tmp_path / "junk.npy"), y)
    with pytest.raises(vx.ArgumentError, match="'data'.*both"):
        vx.fit(lr.model, data={"X": X, "y": y}, batch_size=8, num_data=200, y=y, progress=False)
    with pytest.raises(vx.ArgumentError, match="'shuffle'"):
        _stream(X, y, shuffle="yes")
    with pytest.raises(vx.ArgumentError, match="'devices'.*asked for 64"):
        _stream(X, y, devices=64)


def test_bad_device_arguments_are_named(small):
    from jax.sharding import Mesh

    X, y = small
    one = jax.devices()[:1]
    with pytest.raises(vx.ArgumentError, match="'mesh'.*jax.sharding.Mesh"):
        _stream(X, y, mesh="four")
    with pytest.raises(vx.ArgumentError, match="'mesh'.*'data'.*'particles'"):
        _stream(X, y, mesh=Mesh(np.array(one), ("x",)))
    with pytest.raises(vx.ArgumentError, match="'devices'.*not both"):
        _stream(X, y, devices=1, mesh=Mesh(np.array(one), ("data",)))
    with pytest.raises(vx.ArgumentError, match="'devices'.*list of jax.Device"):
        _stream(X, y, devices=["cpu"])


# ------------------------------------------------------------------ subsampling plates


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


# ------------------------------------------------------------------ devices

_SHARDED = textwrap.dedent("""
    import re
    import numpy as np, jax, jax.numpy as jnp
    import vi_ext as vx
    from vi_ext.fit import build
    from vi_ext.sharding import put_batches
    from models import logistic_regression as lr, eight_schools as es
    assert len(jax.devices()) == 4
    d = lr.data()
    kw = dict(data={"X": d["X"][:256], "y": d["y"][:256]}, batch_size=64, num_data=256,
              num_steps=40, progress=False)
    one, four = vx.fit(lr.model, **kw), vx.fit(lr.model, devices=4, **kw)
    for k in one.params:
        np.testing.assert_allclose(one.params[k], four.params[k], rtol=1e-5, atol=1e-5)
    f = build(lr.model, data=kw["data"], batch_size=64, num_data=256, devices=4)
    b = put_batches(f.dataset.arrays, f.dataset.chunk_rows(0, 5, 5), f.mesh)
    assert b["X"].addressable_shards[0].data.shape == (5, 16, 30)
    hlo = f.run_chunk.lower(f.init_state, jnp.ones(5, bool), b).compile().as_text()
    assert "num_partitions=4" in hlo and "all-reduce" in hlo
    kw = dict(objective=vx.objectives.iwae(8), num_steps=30, progress=False, **es.data())
    one, four = vx.fit(es.model, **kw), vx.fit(es.model, devices=4, **kw)
    for k in one.params:
        np.testing.assert_allclose(one.params[k], four.params[k], rtol=1e-5, atol=1e-5)
    stream = dict(data={"X": d["X"][:256], "y": d["y"][:256]}, num_data=256,
                  progress=False)
    mesh = jax.make_mesh((2, 2), ("data", "particles"))
    two = vx.fit(lr.model, mesh=mesh, batch_size=64, num_steps=20,
                 objective=vx.objectives.iwae(4), **stream)
    assert all(np.all(np.isfinite(v)) for v in two.params.values())
    try:
        vx.fit(lr.model, devices=4, batch_size=30, num_steps=2, **stream)
    except vx.ArgumentError as e:
        assert "'batch_size'" in str(e) and "multiple of 4" in str(e), e
    else:
        raise AssertionError("no error for a batch that does not split over 4 devices")
    print("OK")
""")


def test_sharded_fits_agree_with_one_device_and_compile_to_one_program():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", _SHARDED], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


_PROCESS = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2,
                               process_id=int(sys.argv[1]))
    import numpy as np
    import vi_ext as vx
    from models import logistic_regression as lr
    assert jax.process_count() == 2 and jax.device_count() == 4
    d = lr.data()
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    res = vx.fit(lr.model, data={"X": d["X"][:256], "y": d["y"][:256]}, batch_size=64,
                 num_data=256, num_steps=40, progress=False, mesh=mesh)
    print(json.dumps({k: np.asarray(v).tolist() for k, v in res.params.items()}))
""")


def test_two_processes_fit_as_one_host_does():
    """jax.distributed across 2 processes (2 CPU devices each, gloo collectives): each
    reads its devices' rows, and both end with the one-device fit's parameters."""
    import json
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    procs = [subprocess.Popen([sys.executable, "-c", _PROCESS, str(i), port], env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    params = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    d = lr.data()
    one = vx.fit(lr.model, data={"X": d["X"][:256], "y": d["y"][:256]}, batch_size=64,
                 num_data=256, num_steps=40, progress=False)
    for k, v in one.params.items():
        for p in params:
            np.testing.assert_allclose(np.asarray(p[k]), np.asarray(v), rtol=1e-5, atol=1e-5)
