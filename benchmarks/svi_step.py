"""Per-step time of vi_ext.fit's update against NumPyro's SVI.update.

Same model, same guide family (a fresh AutoNormal on each side), one particle, the same
optimizer (optax.adam(1e-2)), both jit-compiled with the model's arguments closed over.

Peers:
- ``numpyro_scan`` (the headline, like for like): NumPyro's ``svi.update`` inside a jitted
  ``lax.scan``, NumPyro's own compiled loop (as ``SVI.run`` runs its steps), so that both
  sides are one compiled program per chunk of steps;
- ``numpyro_python_loop`` (a weaker baseline, kept as a second row): ``jax.jit(svi.update)``
  called once per step from Python, which pays a dispatch per step.

vi_ext is timed through ``vi_ext.fit.build(...).run_chunk`` (the compiled chunk that
``fit`` calls) on chunks of CHUNK steps, and end to end through ``vi_ext.fit``. Repeats are
interleaved so that machine noise hits all sides; medians are reported, and the headline
ratio is the median of the per-repeat ratios vi_ext / numpyro_scan (paired: each repeat
times both back to back). Target: <= 1.0 against ``numpyro_scan`` on every model. Compile
time = first call - steady call.

Run from the repository root: ``python benchmarks/svi_step.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoNormal  # noqa: E402

import vi_ext as vx  # noqa: E402
from benchmarks._report import environment, write  # noqa: E402
from models import eight_schools, logistic_regression  # noqa: E402
from vi_ext.fit import build  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "svi_step.json")
LR = 1e-2


def bench_numpyro(model, kwargs, steps):
    svi = SVI(model, AutoNormal(model), optax.adam(LR), Trace_ELBO())
    state0 = svi.init(jax.random.PRNGKey(0), **kwargs)
    update = jax.jit(lambda st: svi.update(st, **kwargs))

    def run_loop(st):
        losses = []
        for _ in range(steps):
            st, loss = update(st)
            losses.append(loss)
        jax.block_until_ready(st)
        return st, jnp.stack(losses)

    @jax.jit
    def run_scan(st):
        return jax.lax.scan(lambda s, _: svi.update(s, **kwargs), st, None, length=steps)

    return state0, run_loop, run_scan, update


def bench_vi_ext(model, kwargs, steps):
    # the same work as NumPyro's side: AutoNormal, one particle, no stopping rule (fit's
    # defaults are a full-rank guide, 4 particles and a stationarity test)
    fitter = build(model, guide=AutoNormal(model), objective=vx.objectives.elbo(),
                   optimizer=optax.adam(LR), stopping=None, key=0, **kwargs)
    active = jnp.ones(steps, bool)

    def run(st):
        st, losses = fitter.run_chunk(st, active)
        jax.block_until_ready(st)
        return st, losses

    return fitter.init_state, run


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    return time.perf_counter() - t, out


def run_model(name, model, kwargs, steps, repeats):
    np_state, np_loop, np_scan, np_update = bench_numpyro(model, kwargs, steps)
    vx_state, vx_run = bench_vi_ext(model, kwargs, steps)

    # compile: first calls
    t_np_first, _ = timed(np_update, np_state)
    t_np_steady, _ = timed(np_update, np_state)
    t_scan_first, _ = timed(np_scan, np_state)
    t_vx_first, _ = timed(vx_run, vx_state)

    times = {"numpyro_python_loop": [], "numpyro_scan": [], "vi_ext": []}
    finals = {}
    paired = []
    for r in range(repeats):
        t, (_, losses) = timed(np_loop, np_state)
        times["numpyro_python_loop"].append(t / steps)
        finals["numpyro_python_loop"] = float(np.mean(np.asarray(losses)[-100:]))
        # the headline pair, in alternating order
        pair = {}
        for side in (("numpyro_scan", "vi_ext") if r % 2 == 0 else ("vi_ext", "numpyro_scan")):
            fn, st = (np_scan, np_state) if side == "numpyro_scan" else (vx_run, vx_state)
            t, (_, losses) = timed(fn, st)
            times[side].append(t / steps)
            pair[side] = t
            finals[side] = float(np.mean(np.asarray(losses)[-100:]))
        paired.append(pair["vi_ext"] / pair["numpyro_scan"])

    # end to end through vx.fit (compile included, and separately the loop time)
    t_fit, res = timed(lambda: vx.fit(model, guide=AutoNormal(model),
                                      objective=vx.objectives.elbo(), stopping=None,
                                      optimizer=optax.adam(LR), num_steps=steps,
                                      progress=False, chunk_size=min(steps, 1000), **kwargs))
    med = {k: float(np.median(v)) for k, v in times.items()}
    t_vx_steady = med["vi_ext"] * steps
    t_scan_steady = med["numpyro_scan"] * steps
    return {
        "steps_per_repeat": steps,
        "repeats": repeats,
        "per_step_us_median": {k: v * 1e6 for k, v in med.items()},
        "per_step_us_all": {k: [x * 1e6 for x in v] for k, v in times.items()},
        "ratio_vi_ext_over_numpyro_scan": float(np.median(paired)),
        "ratio_vi_ext_over_numpyro_scan_per_repeat": paired,
        "ratio_vi_ext_over_numpyro_python_loop": med["vi_ext"] / med["numpyro_python_loop"],
        "compile_s": {
            "numpyro_update": t_np_first - t_np_steady,
            "numpyro_scan": t_scan_first - t_scan_steady,
            "vi_ext_chunk": t_vx_first - t_vx_steady,
        },
        "vi_ext_fit_end_to_end_s": t_fit,
        "mean_loss_last_100": finals,
        "name": name,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = ap.parse_args()
    steps, repeats = (300, 3) if args.quick else (1000, 21)
    problems = {
        "eight_schools_noncentered": (eight_schools.model, eight_schools.data()),
        "logistic_regression": (logistic_regression.model, logistic_regression.data()),
    }
    results = {}
    for name, (model, kwargs) in problems.items():
        results[name] = run_model(name, model, kwargs, steps, repeats)

    print(f"{'model':28s} {'vi_ext':>10s} {'np_scan':>10s} {'ratio':>7s}   "
          f"{'np_loop':>10s} {'ratio':>7s}   (us/step, medians of {repeats})")
    for name, r in results.items():
        m = r["per_step_us_median"]
        print(f"{name:28s} {m['vi_ext']:10.2f} {m['numpyro_scan']:10.2f} "
              f"{r['ratio_vi_ext_over_numpyro_scan']:7.3f}   "
              f"{m['numpyro_python_loop']:10.1f} {r['ratio_vi_ext_over_numpyro_python_loop']:7.3f}")
        c = r["compile_s"]
        print(f"{'':28s} compile s: numpyro {c['numpyro_update']:.2f}, numpyro_scan "
              f"{c['numpyro_scan']:.2f}, vi_ext {c['vi_ext_chunk']:.2f}; final losses "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["mean_loss_last_100"].items()))
    out = {
        "benchmark": "svi_step",
        "target": "ratio_vi_ext_over_numpyro_scan <= 1.0 on every model",
        "meta": environment(quick=args.quick),
        "results": results,
    }
    write(RESULTS, out)


if __name__ == "__main__":
    main()
