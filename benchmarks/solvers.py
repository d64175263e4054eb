"""vi_ext's Sinkhorn against OTT-JAX: time, iterations, agreement; gradients implicit vs unrolled.

Setup (the issue's): two point clouds of n = 1000 points in 2-D, x ~ N(0, I), y ~ N(1, I)
(squared Euclidean cost, uniform weights), epsilon in {0.1, 0.01, 0.001}, threshold 1e-6 on
the L1 marginal error, float64, both solvers in the log domain with the same
``max_iterations`` (20000: at these scales epsilon = 0.01 and 0.001 do not converge within it
for either solver, and both then run the same number of iterations). For each epsilon:

- ``seconds`` (median over ``--repeats`` runs of the compiled solver, the solvers taking
  turns so that the machine's slow spells hit all alike) and ``iterations``
  (OTT-JAX checks convergence every 10 iterations, vi_ext every iteration);
- ``reg_ot_cost`` of both and their relative difference;
- at epsilon = 0.1, the gradient of ``reg_ot_cost + <P, W>`` (a plan-dependent loss, so the
  envelope theorem does not make it trivial) in x: time (median) and peak memory (XLA's
  compiled memory analysis: arguments + outputs + temporaries) with ``diff="implicit"``
  against ``diff="unroll"`` with as many iterations as the forward solve needed. On
  n = 300 points: unrolled at n = 1000 it needs (memory analysis) more than this machine
  has, which is reported too.

The Sparse-Newton option (``newton=True``, default :class:`SparseNewton` options) runs on
the same problems with the same threshold; its ``iterations`` count Sinkhorn updates and
Newton steps, ``newton_steps`` the latter. Cost agreement with OTT-JAX is checked where
OTT-JAX converged.

**Targets: plain Sinkhorn no slower than OTT-JAX; the Sparse-Newton option at least 10x
faster than OTT-JAX at epsilon = 0.01; relative cost agreement within 1e-6.**

Run from the repository root: ``python benchmarks/solvers.py [--quick]`` (OTT-JAX comes with
the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import ott  # noqa: E402
from ott.geometry import pointcloud  # noqa: E402
from ott.problems.linear import linear_problem  # noqa: E402
from ott.solvers.linear import sinkhorn as ott_sinkhorn  # noqa: E402

from benchmarks._report import environment, write  # noqa: E402
from vi_ext.solvers import sinkhorn  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "solvers.json")


def timed(fn, *args, repeats):
    out = jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return out, float(np.median(times)), times


def interleaved(fns, *args, repeats):
    """Compile each, then time them in turn, ``repeats`` rounds (A B C A B C ...), so that
    a slow spell of this shared machine hits all of them alike; medians per function."""
    outs = [jax.block_until_ready(fn(*args)) for fn in fns]
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            outs[i] = jax.block_until_ready(fn(*args))
            times[i].append(time.perf_counter() - t)
    return [(out, float(np.median(ts)), ts) for out, ts in zip(outs, times, strict=True)]


def peak_bytes(fn, *args) -> int:
    m = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def unroll_memory(x, y, eps, max_iterations):
    """(forward iterations, peak bytes) of the unrolled gradient of the same plan-dependent
    loss at the full n: XLA's memory analysis only (it would not fit in memory)."""
    n = x.shape[0]
    W = jnp.asarray(np.random.default_rng(1).normal(size=(n, y.shape[0]))) / n
    iters = int(sinkhorn(x, y, epsilon=eps, threshold=1e-6,
                         max_iterations=max_iterations).iterations)

    def loss(x):
        o = sinkhorn(x, y, epsilon=eps, threshold=1e-6, max_iterations=iters, diff="unroll")
        return o.reg_ot_cost + jnp.sum(o.plan() * W)

    return iters, peak_bytes(jax.grad(loss), x)


def memory_only(x, y, max_iterations):
    """Recompute the full-n unrolled-gradient memory in an existing results file."""
    import json

    with open(RESULTS) as fh:
        report = json.load(fh)
    n = x.shape[0]
    iters, nbytes = unroll_memory(x, y, 0.1, max_iterations)
    row = report["results"]["gradients_epsilon=0.1"]
    row[f"unroll_peak_bytes_at_n={n}"] = nbytes
    row[f"forward_iterations_at_n={n}"] = iters
    write(RESULTS, report)
    print(f"unrolled gradient at n={n}: {iters} iterations, peak {nbytes / 2**20:.0f} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 300, fewer repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--memory-only", action="store_true",
                    help="recompute only the full-n unrolled-gradient memory analysis")
    args = ap.parse_args()
    n = 300 if args.quick else 1000
    repeats = args.repeats or (2 if args.quick else 3)
    max_iterations = 20000
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, 2)))
    y = jnp.asarray(rng.normal(size=(n, 2)) + 1.0)
    if args.memory_only:
        return memory_only(x, y, max_iterations)
    out = {}
    for eps in (0.1, 0.01, 0.001):
        solver = ott_sinkhorn.Sinkhorn(threshold=1e-6, max_iterations=max_iterations)

        def run_ott(x, y, eps=eps, solver=solver):
            geom = pointcloud.PointCloud(x, y, epsilon=eps)
            return solver(linear_problem.LinearProblem(geom))

        def run_vx(x, y, eps=eps):
            return sinkhorn(x, y, epsilon=eps, threshold=1e-6, max_iterations=max_iterations)

        def run_newton(x, y, eps=eps):
            return sinkhorn(x, y, epsilon=eps, threshold=1e-6, max_iterations=max_iterations,
                            newton=True)

        (o, t_ott, times_ott), (v, t_vx, times_vx), (s, t_sn, times_sn) = interleaved(
            [jax.jit(run_ott), jax.jit(run_vx), jax.jit(run_newton)], x, y, repeats=repeats)
        row = {
            "ott": {"seconds": t_ott, "runs": times_ott, "iterations": int(o.n_iters),
                    "converged": bool(o.converged), "reg_ot_cost": float(o.reg_ot_cost)},
            "vi_ext": {"seconds": t_vx, "runs": times_vx, "iterations": int(v.iterations),
                       "converged": bool(v.converged), "reg_ot_cost": float(v.reg_ot_cost)},
        }
        row["time_ratio_vi_ext_over_ott"] = t_vx / t_ott
        row["relative_cost_difference"] = abs(float(v.reg_ot_cost) - float(o.reg_ot_cost)) / abs(
            float(o.reg_ot_cost))
        row["vi_ext_sparse_newton"] = {
            "seconds": t_sn, "runs": times_sn, "iterations": int(s.iterations),
            "newton_steps": int(s.newton_steps), "converged": bool(s.converged),
            "reg_ot_cost": float(s.reg_ot_cost),
            "relative_cost_difference_vs_ott": abs(float(s.reg_ot_cost) - float(o.reg_ot_cost))
            / abs(float(o.reg_ot_cost))}
        row["speedup_sparse_newton_over_ott"] = t_ott / t_sn
        out[f"epsilon={eps}"] = row
        print(f"eps {eps}: ott {t_ott:.3f} s / {int(o.n_iters)} it, vi_ext {t_vx:.3f} s / "
              f"{int(v.iterations)} it, ratio {t_vx / t_ott:.3f}, rel. cost diff "
              f"{row['relative_cost_difference']:.2e}; sparse newton {t_sn:.3f} s / "
              f"{int(s.iterations)} it ({int(s.newton_steps)} Newton), converged "
              f"{bool(s.converged)}, speedup over OTT {t_ott / t_sn:.1f}x", flush=True)

    # gradients at eps = 0.1: implicit vs unrolled, on n_grad points
    eps, n_grad = 0.1, 300
    xg, yg = x[:n_grad], y[:n_grad]
    iters = int(sinkhorn(xg, yg, epsilon=eps, threshold=1e-6, max_iterations=max_iterations)
                .iterations)
    W = jnp.asarray(rng.normal(size=(n_grad, n_grad))) / n_grad

    def loss(x, diff, iterations, y=yg, W=W):
        o = sinkhorn(x, y, epsilon=eps, threshold=1e-6, max_iterations=iterations, diff=diff)
        return o.reg_ot_cost + jnp.sum(o.plan() * W)

    grads = {}
    for diff in ("implicit", "unroll"):
        its = max_iterations if diff == "implicit" else iters
        fn = jax.jit(jax.grad(lambda x, d=diff, k=its: loss(x, d, k)))
        g, t, times = timed(fn, xg, repeats=repeats)
        grads[diff] = {"seconds": t, "runs": times, "peak_bytes": peak_bytes(fn, xg),
                       "max_iterations": its}
        grads[diff]["_g"] = g
        print(f"grad {diff}: {t:.3f} s, peak {grads[diff]['peak_bytes'] / 2**20:.1f} MiB",
              flush=True)
    diff_g = float(jnp.max(jnp.abs(grads["implicit"].pop("_g") - grads["unroll"].pop("_g"))))
    full_iters, big_bytes = unroll_memory(x, y, eps, max_iterations)
    out["gradients_epsilon=0.1"] = {
        "n": n_grad, **grads, "forward_iterations": iters,
        "max_abs_difference_implicit_vs_unroll": diff_g,
        "memory_ratio_unroll_over_implicit":
            grads["unroll"]["peak_bytes"] / grads["implicit"]["peak_bytes"],
        "time_ratio_unroll_over_implicit":
            grads["unroll"]["seconds"] / grads["implicit"]["seconds"],
        f"unroll_peak_bytes_at_n={n}": big_bytes,
        f"forward_iterations_at_n={n}": full_iters,
    }
    targets = {
        "plain_no_slower_than_ott": all(r["time_ratio_vi_ext_over_ott"] <= 1.0
                                        for k, r in out.items() if k.startswith("epsilon=")),
        "cost_agreement_1e-6": all(r["relative_cost_difference"] <= 1e-6
                                   for k, r in out.items() if k.startswith("epsilon=")),
        "sparse_newton_10x_at_0.01": out["epsilon=0.01"]["speedup_sparse_newton_over_ott"] >= 10,
        "sparse_newton_cost_agreement_1e-6": all(
            r["vi_ext_sparse_newton"]["relative_cost_difference_vs_ott"] <= 1e-6
            for k, r in out.items() if k.startswith("epsilon=")
            and r["ott"]["converged"]),
    }
    write(RESULTS, {"benchmark": "solvers",
                    "protocol": {"n": n, "dim": 2, "threshold": 1e-6, "dtype": "float64",
                                 "max_iterations": max_iterations, "repeats": repeats},
                    "meta": environment(quick=args.quick, ott_jax=ott.__version__),
                    "results": out, "targets": targets})


if __name__ == "__main__":
    main()
