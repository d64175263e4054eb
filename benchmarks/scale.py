"""Scale: minibatch throughput and peak memory against the dataset size, and simulated devices.

Bayesian logistic regression (models/logistic_regression.py: alpha ~ N(0, 5), beta ~ N(0, I))
on generated data of N rows x 100 features (float32, memory-mapped .npy files written by
``logistic_regression.generate``), N = 1e5, 1e6, 1e7 (the largest file is 4 GB). Every
method fits AutoNormal with Adam(1e-2), one particle, batches of B = 1024 rows, and runs in
its own process (so that its peak memory is its own):

- ``vi_ext``: ``vx.fit(model, data={"X": path, "y": path}, batch_size=B, num_data=N,
  guide=AutoNormal(model), objective=elbo(), stopping=None)`` (the peers' work): rows
  gathered from the memory-mapped files while the previous chunk computes, into two reused
  host buffers per array, 25 steps per compiled chunk;
- ``numpyro_scan`` (the headline peer): the best NumPyro loop we could write by hand, the
  same design as vi_ext's: host minibatches (rows from a stored ``rng.permutation(N)`` per
  epoch, gathered from the memory-mapped files by ``np.take``, twice as fast as ``X[rows]``),
  25 of them stacked and run in one
  jit-compiled ``lax.scan`` of ``svi.update``, the next chunk gathered while the device
  computes the current one;
- ``numpyro_loop``: the usual hand-written NumPyro loop over host minibatches: a jitted
  ``svi.update(state, X[rows], y[rows], N)`` per step, rows as above;
- ``numpyro_plate``: NumPyro's SVI with the data in memory (``np.load`` of the files) and
  ``plate("data", N, subsample_size=B)`` drawing the rows inside the compiled step, steps run
  in a jit-compiled ``lax.scan`` of 25 (as ``SVI.run`` does), data passed as arguments.

The last two are the weaker baselines, kept as rows below the headline (against
``numpyro_plate`` vi_ext is 8-12x: NumPyro draws the rows by an O(N) scan per step).

Measures, per run: throughput in examples per second (B x steps / seconds) over the steady
state (compilation and the first chunk excluded; chunks run until ``--seconds`` have
passed); the process's peak resident memory (``VmHWM``, which also counts the file-backed
pages a process maps: the kernel's page cache, dropped under memory pressure), the same
figure just before the data are first touched (the baseline: Python, JAX, NumPyro), and
the peak of the memory the process owns (``RssAnon``, sampled every 20 ms: arrays, the
compiled programs, minus the mapped file pages the kernel can drop at will).

Devices: vi_ext at N = 1e6 with ``devices=1, 2, 4`` simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``). The simulated devices share this
machine's 2 cores, so they show that the sharded program runs and what it costs, not a
speed-up.

Medians over ``--repeats`` runs; the headline ratio is the median over repeats of the
paired ratio vi_ext / peer (each repeat runs every method once, back to back), which a
drift of the machine's speed across repeats does not bias. **Targets: throughput at least
the best NumPyro loop's (``numpyro_scan``); memory flat in N; a sharded step that compiles
to one program, with no host round trip per device.**

Run from the repository root: ``python benchmarks/scale.py [--quick]``. The data go to
``--data-dir`` (default /tmp/vi_ext_scale; 4.4 GB at full size).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BATCH = 1024
CHUNK = 25


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM; getrusage's ru_maxrss would also count
    the parent's resident set at fork, which survives exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def _numpyro_model(N, B):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model(X, y):
        d = X.shape[1]
        alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
        beta = numpyro.sample("beta", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
        with numpyro.plate("data", N, subsample_size=B) as ind:
            numpyro.sample("y", dist.Bernoulli(logits=alpha + X[ind] @ beta), obs=y[ind])

    return model


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class AnonPeak:
    """The peak of RssAnon (memory the process owns, not file pages it maps), sampled every
    20 ms on a thread (the kernel keeps no high-water mark for it)."""

    def __init__(self):
        import threading

        self.peak = _status("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _status("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _status("RssAnon"))


def _numpyro_hand_loop(paths: dict, seed: int, N: int):
    """What both hand-written NumPyro loops share: the memory-mapped data, NumPyro's SVI
    (AutoNormal, Adam 1e-2, Trace_ELBO) initialized on the first rows, and ``next_rows()``,
    the sorted rows of the next step (a fresh ``rng.permutation(N)`` per epoch)."""
    import jax
    import numpy as np
    import optax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from models import logistic_regression as lr

    # np.asarray: the memory maps as plain arrays (np.take of a np.memmap returns its subclass)
    Xm = np.asarray(np.load(paths["X"], mmap_mode="r"))
    ym = np.asarray(np.load(paths["y"], mmap_mode="r"))
    rng = np.random.default_rng(seed)
    per_epoch = N // BATCH
    svi = SVI(lr.model, AutoNormal(lr.model), optax.adam(1e-2), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(seed), Xm[:BATCH], ym[:BATCH], N)
    t, perm = 0, None

    def next_rows():
        nonlocal t, perm
        if t % per_epoch == 0:
            perm = rng.permutation(N)
        i = t % per_epoch
        t += 1
        return np.sort(perm[i * BATCH:(i + 1) * BATCH])

    return Xm, ym, svi, state, next_rows


def worker(cfg: dict) -> dict:
    """One run in this process: ``cfg`` has method, paths, N, seconds, devices, seed."""
    anon = AnonPeak()
    import jax
    import numpy as np
    import optax

    import vi_ext as vx
    from models import logistic_regression as lr

    paths, N, seconds, seed = cfg["paths"], cfg["N"], cfg["seconds"], cfg["seed"]
    times: list[float] = []
    out: dict = {}
    if cfg["method"] == "vi_ext":
        def cb(step, state, loss):
            times.append(time.perf_counter())
            return times[-1] - times[1] > seconds if len(times) > 1 else False

        baseline = _peak_mib()
        from numpyro.infer.autoguide import AutoNormal

        # the same work as the peers: AutoNormal, one particle, Adam 1e-2, no stopping rule
        # (fit's defaults are a full-rank guide, 4 particles and a stationarity test)
        kw = dict(data=paths, batch_size=BATCH, num_data=N, progress=False, key=seed,
                  guide=AutoNormal(lr.model), objective=vx.objectives.elbo(),
                  optimizer=optax.adam(1e-2), stopping=None, chunk_size=CHUNK,
                  callbacks=[cb], callback_every=CHUNK, devices=cfg.get("devices"))
        res = vx.fit(lr.model, num_steps=200_000, **kw)
        steps = CHUNK * (len(times) - 2)
        out["throughput"] = BATCH * steps / (times[-1] - times[1])
        out["final_loss"] = float(np.nanmean(res.losses[-CHUNK:]))
        if cfg.get("devices"):
            from vi_ext.fit import build
            from vi_ext.sharding import put_batches

            f = build(lr.model, data=paths, batch_size=BATCH, num_data=N,
                      guide=AutoNormal(lr.model), objective=vx.objectives.elbo(),
                      stopping=None, devices=cfg["devices"])
            b = put_batches(f.dataset.arrays, f.dataset.chunk_rows(0, CHUNK, CHUNK), f.mesh)
            hlo = f.run_chunk.lower(f.init_state, jax.numpy.ones(CHUNK, bool),
                                    b).compile().as_text()
            out["compiled"] = {
                "num_partitions": int((re.findall(r"num_partitions=(\d+)", hlo) or [1])[0]),
                "collectives": sorted(set(re.findall(
                    r"(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)",
                    hlo))),
                "programs": 1,
            }
    else:
        from numpyro.infer import SVI, Trace_ELBO
        from numpyro.infer.autoguide import AutoNormal

        if cfg["method"] == "numpyro_plate":
            baseline = _peak_mib()
            X = jax.numpy.asarray(np.load(paths["X"]))
            y = jax.numpy.asarray(np.load(paths["y"]))
            model = _numpyro_model(N, BATCH)
            svi = SVI(model, AutoNormal(model), optax.adam(1e-2), Trace_ELBO())
            state = svi.init(jax.random.PRNGKey(seed), X, y)

            @jax.jit
            def run(state, X, y):
                return jax.lax.scan(lambda s, _: svi.update(s, X, y), state, None,
                                    length=CHUNK)

            while len(times) < 2 or times[-1] - times[1] <= seconds:
                state, losses = run(state, X, y)
                losses.block_until_ready()
                times.append(time.perf_counter())
            out["final_loss"] = float(np.mean(np.asarray(losses)))
        elif cfg["method"] == "numpyro_scan":
            baseline = _peak_mib()
            Xm, ym, svi, state, next_rows = _numpyro_hand_loop(paths, seed, N)

            @jax.jit
            def run(state, Xs, ys):
                return jax.lax.scan(lambda s, b: svi.update(s, b[0], b[1], N), state,
                                    (Xs, ys))

            def gather():
                rows = np.concatenate([next_rows() for _ in range(CHUNK)])
                return (jax.device_put(np.take(Xm, rows, axis=0).reshape(CHUNK, BATCH, -1)),
                        jax.device_put(np.take(ym, rows, axis=0).reshape(CHUNK, BATCH)))

            batch = gather()
            while len(times) < 2 or times[-1] - times[1] <= seconds:
                state, losses = run(state, *batch)
                batch = gather()  # the host gathers the next chunk while the device computes
                losses.block_until_ready()
                times.append(time.perf_counter())
            out["final_loss"] = float(np.mean(np.asarray(losses)))
        else:
            baseline = _peak_mib()
            Xm, ym, svi, state, next_rows = _numpyro_hand_loop(paths, seed, N)
            update = jax.jit(svi.update, static_argnums=3)
            while len(times) < 2 or times[-1] - times[1] <= seconds:
                for _ in range(CHUNK):
                    rows = next_rows()
                    state, loss = update(state, np.take(Xm, rows, axis=0),
                                         np.take(ym, rows, axis=0), N)
                loss.block_until_ready()
                times.append(time.perf_counter())
            out["final_loss"] = float(loss)
        steps = CHUNK * (len(times) - 2)
        out["throughput"] = BATCH * steps / (times[-1] - times[1])
    out.update(peak_mib=_peak_mib(), baseline_mib=baseline, anon_peak_mib=anon.stop(),
               steps_timed=steps)
    return out


def run_worker(cfg: dict, devices: int = 1) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {cfg} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--data-dir", default="/tmp/vi_ext_scale")
    p.add_argument("--worker", default=None)
    p.add_argument("--only", default=None,
                   help="re-run one method on every size and merge it into the results")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import numpy as np

    from benchmarks._report import environment, write
    from models import logistic_regression as lr

    sizes = [10**4, 10**5] if args.quick else [10**5, 10**6, 10**7]
    repeats = 1 if args.quick else args.repeats
    seconds = 1.0 if args.quick else args.seconds
    methods = ["vi_ext", "numpyro_scan", "numpyro_loop", "numpyro_plate"]
    results: dict = {"sizes": {}, "devices": {}}
    out_path = os.path.join(ROOT, "benchmarks", "results", "scale.json")
    if args.only:
        with open(out_path) as f:
            results = json.load(f)
    run_methods = [args.only] if args.only else methods
    for N in sizes:
        t = time.perf_counter()
        paths = lr.generate(os.path.join(args.data_dir, str(N)), N)
        print(f"N={N}: data ready in {time.perf_counter() - t:.1f} s", flush=True)
        runs: dict = {m: [] for m in run_methods}
        for r in range(repeats):  # interleaved: each repeat runs every method once
            for m in run_methods:
                cfg = {"method": m, "paths": paths, "N": N, "seconds": seconds, "seed": r}
                runs[m].append(run_worker(cfg))
                print(N, m, runs[m][-1], flush=True)
        row = results["sizes"].get(str(N), {})
        for m in run_methods:
            row[m] = {k: float(np.median([x[k] for x in runs[m]]))
                      for k in ("throughput", "peak_mib", "baseline_mib", "anon_peak_mib")}
            row[m]["runs"] = runs[m]
        for m in methods[1:]:
            row[f"throughput_ratio_vs_{m}"] = row["vi_ext"]["throughput"] / row[m]["throughput"]
            # paired: each repeat runs vi_ext and m back to back, so a drift of the machine's
            # speed over the repeats (seen here: the same method 30% slower by the fifth)
            # hits both sides of a pair alike
            pairs = [a["throughput"] / b["throughput"]
                     for a, b in zip(row["vi_ext"]["runs"], row[m]["runs"], strict=False)]
            if pairs:
                row[f"throughput_ratio_paired_vs_{m}"] = float(np.median(pairs))
        results["sizes"][str(N)] = row
    N = sizes[1]
    paths = lr.generate(os.path.join(args.data_dir, str(N)), N)
    for d in () if args.only else (1, 2, 4):
        runs = []
        for r in range(repeats):
            cfg = {"method": "vi_ext", "paths": paths, "N": N, "seconds": seconds, "seed": r,
                   "devices": d}
            runs.append(run_worker(cfg, devices=d))
            print("devices", d, runs[-1], flush=True)
        results["devices"][str(d)] = {
            "throughput": float(np.median([x["throughput"] for x in runs])),
            "compiled": runs[-1].get("compiled"), "runs": runs}
    if args.only:
        results["environment"]["rerun"] = {"method": args.only, "repeats": repeats}
    else:
        results["environment"] = environment(quick=args.quick, batch_size=BATCH,
                                             chunk=CHUNK, repeats=repeats, seconds=seconds)
    write(out_path, results)
    print(f"{'N':>10s} {'vi_ext':>12s} " + " ".join(f"{m:>14s}" for m in methods[1:])
          + "   (examples/s; ratio vi_ext / peer below)")
    for N, v in results["sizes"].items():
        print(f"{N:>10s} {v['vi_ext']['throughput']:12.0f} "
              + " ".join(f"{v[m]['throughput']:14.0f}" for m in methods[1:] if m in v))
        print(f"{'':>10s} {'':>12s} "
              + " ".join(f"{v.get(f'throughput_ratio_vs_{m}', float('nan')):14.2f}"
                         for m in methods[1:]))


if __name__ == "__main__":
    main()
