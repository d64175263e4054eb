"""Sharded fits over (simulated) devices and processes (vi_ext.sharding)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import stream_fit
from numpyro.infer.autoguide import AutoNormal

import vi_ext as vx
from models import logistic_regression as lr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def test_bad_device_arguments_are_named(small):
    from jax.sharding import Mesh

    X, y = small
    one = jax.devices()[:1]
    with pytest.raises(vx.ArgumentError, match="'mesh'.*jax.sharding.Mesh"):
        stream_fit(X, y, mesh="four")
    with pytest.raises(vx.ArgumentError, match="'mesh'.*'data'.*'particles'"):
        stream_fit(X, y, mesh=Mesh(np.array(one), ("x",)))
    with pytest.raises(vx.ArgumentError, match="'devices'.*not both"):
        stream_fit(X, y, devices=1, mesh=Mesh(np.array(one), ("data",)))
    with pytest.raises(vx.ArgumentError, match="'devices'.*list of jax.Device"):
        stream_fit(X, y, devices=["cpu"])


_SHARDED = textwrap.dedent("""
    import re
    import numpy as np, jax, jax.numpy as jnp
    import vi_ext as vx
    from vi_ext.fit import build
    from vi_ext.sharding import put_batches
    from numpyro.infer.autoguide import AutoNormal
    from models import logistic_regression as lr, eight_schools as es
    assert len(jax.devices()) == 4
    d = lr.data()
    # a mean-field guide of its own: what is tested is the sharding, not the default guide
    # (whose start and 4-particle full-rank step doubled this test's time)
    g = AutoNormal(lr.model)
    kw = dict(data={"X": d["X"][:256], "y": d["y"][:256]}, batch_size=64, num_data=256,
              num_steps=40, progress=False, guide=g)
    one, four = vx.fit(lr.model, **kw), vx.fit(lr.model, devices=4, **kw)
    for k in one.params:
        np.testing.assert_allclose(one.params[k], four.params[k], rtol=1e-5, atol=1e-5)
    f = build(lr.model, data=kw["data"], batch_size=64, num_data=256, devices=4, guide=g)
    b = put_batches(f.dataset.arrays, f.dataset.chunk_rows(0, 5, 5), f.mesh)
    assert b["X"].addressable_shards[0].data.shape == (5, 16, 30)
    hlo = f.run_chunk.lower(f.init_state, jnp.ones(5, bool), b).compile().as_text()
    assert "num_partitions=4" in hlo and "all-reduce" in hlo
    kw = dict(objective=vx.objectives.iwae(8), num_steps=30, progress=False,
              guide=AutoNormal(es.model), **es.data())
    one, four = vx.fit(es.model, **kw), vx.fit(es.model, devices=4, **kw)
    for k in one.params:
        np.testing.assert_allclose(one.params[k], four.params[k], rtol=1e-5, atol=1e-5)
    stream = dict(data={"X": d["X"][:256], "y": d["y"][:256]}, num_data=256,
                  progress=False)
    mesh = jax.make_mesh((2, 2), ("data", "particles"))
    two = vx.fit(lr.model, mesh=mesh, batch_size=64, num_steps=20, guide=g,
                 objective=vx.objectives.iwae(4), **stream)
    assert all(np.all(np.isfinite(v)) for v in two.params.values())
    try:
        vx.fit(lr.model, devices=4, batch_size=30, num_steps=2, guide=g, **stream)
    except vx.ArgumentError as e:
        assert "'batch_size'" in str(e) and "multiple of 4" in str(e), e
    else:
        raise AssertionError("no error for a batch that does not split over 4 devices")
    print("OK")
""")


def test_sharded_fits_agree_with_one_device_and_compile_to_one_program():
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
           + " --xla_force_host_platform_device_count=4",
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
    from numpyro.infer.autoguide import AutoNormal
    import vi_ext as vx
    from models import logistic_regression as lr
    assert jax.process_count() == 2 and jax.device_count() == 4
    d = lr.data()
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    res = vx.fit(lr.model, data={"X": d["X"][:256], "y": d["y"][:256]}, batch_size=64,
                 num_data=256, num_steps=40, progress=False, mesh=mesh,
                 guide=AutoNormal(lr.model))
    print(json.dumps({k: np.asarray(v).tolist() for k, v in res.params.items()}))
""")


def test_two_processes_fit_as_one_host_does():
    """jax.distributed across 2 processes (2 CPU devices each, gloo collectives): each
    reads its devices' rows, and both end with the one-device fit's parameters."""
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
           + " --xla_force_host_platform_device_count=2",
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
                 num_data=256, num_steps=40, progress=False, guide=AutoNormal(lr.model))
    for k, v in one.params.items():
        for p in params:
            np.testing.assert_allclose(np.asarray(p[k]), np.asarray(v), rtol=1e-5, atol=1e-5)
