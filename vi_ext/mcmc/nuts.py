"""refine: BlackJAX NUTS on the fitted model, warmed by the fit.

A cold-started NUTS run spends its warmup finding the typical set, the scale of each
direction (the mass matrix) and a step size; Stan's default spends 1000 iterations on it. A
fitted guide already knows where the typical set is and roughly its scales (see
:mod:`vi_ext.mcmc.bridge`), so refine starts every chain at a guide draw with the guide's
covariance as inverse mass matrix and warms up briefly:

- ``adapt="window"`` (default): a short window adaptation started at the guide: dual
  averaging of the step size (Hoffman & Gelman 2014, sec. 3.2.1; BlackJAX's
  ``dual_averaging_adaptation``) with the guide's mass matrix for the first 15% of the
  warmup, then one slow window (60%) whose draws, pooled over chains, give the mass matrix,
  shrunk towards the guide's as if the guide were ``prior_draws`` draws:

      M^{-1} = (n Cov_window + n0 Cov_q) / (n + n0),

  then dual averaging again with the new matrix (25%).
- ``adapt="step_size"``: the guide's covariance is kept as the mass matrix and only the step
  size is tuned. Cheaper per warmup iteration, but a mean-field guide fitted by KL(q || p)
  under-estimates posterior variances, and such a mass matrix costs effective samples: on
  the benchmarks (benchmarks/results/refine.json) it gave fewer effective samples per second
  than the window on both models, which is why the window is the default.

Every chain has its own step size. The kernel is BlackJAX's multinomial NUTS
(``blackjax.nuts.build_kernel``). All chains advance together inside one compiled
``lax.scan`` over a chunk of iterations; the host only wakes between chunks to move the
progress bar, and warmup and sampling share the one compiled program.

Reference: Hoffman & Gelman, "The No-U-Turn Sampler", JMLR 2014; Betancourt, "A Conceptual
Introduction to Hamiltonian Monte Carlo", 2017; Stan Reference Manual, "HMC algorithm
parameters" (the adaptation windows).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from tqdm.auto import tqdm

from vi_ext.arviz_data import draws_to_arviz
from vi_ext.errors import ArgumentError
from vi_ext.keys import as_key
from vi_ext.mcmc.bridge import SamplingProblem, to_blackjax
from vi_ext.traces import Fitted

ADAPT = ("step_size", "window")


class RefineInfo(NamedTuple):
    """How the run went.

    Attributes:
        step_size: [num_chains] the tuned step sizes.
        acceptance_rate: mean acceptance probability over the sampling iterations.
        num_divergent: divergent transitions while sampling (any > 0 deserves a look).
        mean_tree_size: mean number of leapfrog steps per sampling iteration.
        gradient_evals: {"warmup": n, "sampling": n}, leapfrog steps summed over chains.
        seconds: {"setup": s, "compile": s, "warmup": s, "sampling": s}.
        adapt: the adaptation that was used.
        restarted_chains: chains found stranded after a warmup phase and restarted at
            another chain's state (see :func:`_strays`).
    """

    step_size: np.ndarray
    acceptance_rate: float
    num_divergent: int
    mean_tree_size: float
    gradient_evals: dict
    seconds: dict
    adapt: str
    restarted_chains: int = 0


@dataclass
class RefineResult:
    """Draws of a NUTS run warmed by a fit.

    Attributes:
        samples: {site: [num_chains * num_samples, ...]}, every latent and deterministic
            site in the constrained space: the shapes of ``FitResult.sample``.
        by_chain: the same draws as {site: [num_chains, num_samples, ...]}.
        rhat: {site: split R-hat per element} (Gelman et al. 2013).
        ess: {site: effective sample size per element}.
        positions: [num_chains, num_samples, D] draws on the unconstrained space.
        sample_stats: {"diverging", "acceptance_rate", "n_steps", "tree_depth"}, each
            [num_chains, num_samples].
        inverse_mass_matrix: the matrix used while sampling.
        info: a :class:`RefineInfo`.
    """

    samples: dict
    by_chain: dict
    rhat: dict
    ess: dict
    positions: np.ndarray
    sample_stats: dict
    inverse_mass_matrix: np.ndarray
    info: RefineInfo
    problem: SamplingProblem = field(repr=False)

    def get_samples(self, group_by_chain: bool = False) -> dict:
        """The draws, flat (``[chains * samples, ...]``) or by chain."""
        return self.by_chain if group_by_chain else self.samples

    def to_arviz(self):
        """The draws as ArviZ data with their chains, and the sampler's statistics."""
        return draws_to_arviz(self.by_chain, group_by_chain=True, sample_stats=self.sample_stats)

    def summary(self, **kwargs: Any):
        """ArviZ's summary (mean, sd, HDI, ESS, R-hat) as a DataFrame."""
        import arviz as az

        return az.summary(self.to_arviz(), **kwargs)

    @property
    def max_rhat(self) -> float:
        return float(max(np.nanmax(v) for v in self.rhat.values()))

    @property
    def min_ess(self) -> float:
        return float(min(np.nanmin(v) for v in self.ess.values()))

    def __repr__(self) -> str:
        chains, draws = self.positions.shape[:2]
        i = self.info
        return (f"RefineResult(chains={chains}, samples={draws}, max_rhat={self.max_rhat:.3f}, "
                f"min_ess={self.min_ess:.0f}, divergent={i.num_divergent}, "
                f"step_size={np.round(i.step_size, 3)}, seconds={sum(i.seconds.values()):.2f})")


def _check_int(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ArgumentError(name, f"expected an int >= {least}, got {value!r}.")
    return int(value)


def _validate(method, num_samples, num_chains, num_warmup, adapt, target_accept):
    if method != "nuts":
        raise ArgumentError("method", f"only 'nuts' is available, got {method!r}.")
    _check_int("num_samples", num_samples, 4)
    _check_int("num_chains", num_chains, 1)
    _check_int("num_warmup", num_warmup, 10)
    if adapt not in ADAPT:
        raise ArgumentError("adapt", f"expected one of {ADAPT}, got {adapt!r}.")
    if not (isinstance(target_accept, (int, float)) and 0.0 < target_accept < 1.0):
        raise ArgumentError("target_accept", f"expected a number in (0, 1), got "
                                             f"{target_accept!r}.")


def _phases(num_warmup: int, adapt: str) -> list[tuple[str, int]]:
    if adapt == "step_size":
        return [("tune", num_warmup)]
    first = max(1, int(0.15 * num_warmup))
    last = max(1, int(0.25 * num_warmup))
    return [("tune", first), ("window", num_warmup - first - last), ("tune", last)]


def _make_advance(logdensity_fn, target_accept: float, max_num_doublings: int):
    """One compiled program for every phase: ``chunk`` NUTS iterations of all chains, with
    dual averaging of each chain's step size when ``adapt`` is true, and iterations past
    ``active`` skipped (so every chunk has the same length and compiles once)."""
    kernel = blackjax.nuts.build_kernel()
    _, da_update, _ = dual_averaging_adaptation(target_accept)

    def one_chain(state, da, key, imm, adapt):
        eps = jnp.where(adapt, jnp.exp(da.log_step_size), jnp.exp(da.log_step_size_avg))
        new, info = kernel(key, state, logdensity_fn, eps, imm, max_num_doublings)
        da_new = da_update(da, info.acceptance_rate)
        da = jax.tree.map(lambda a, b: jnp.where(adapt, a, b), da_new, da)
        stats = (new.position, info.acceptance_rate, info.is_divergent,
                 info.num_integration_steps, info.num_trajectory_expansions, new.logdensity)
        return new, da, stats

    def advance(carry, keys, active, adapt):
        states, das, imm = carry

        def body(c, inp):
            keys_t, act = inp

            def run(c):
                s, d = c
                s, d, stats = jax.vmap(one_chain, in_axes=(0, 0, 0, None, None))(
                    s, d, keys_t, imm, adapt)
                return (s, d), stats

            def skip(c):
                s, _ = c
                n = s.position.shape[0]
                zeros = (s.position, jnp.zeros(n), jnp.zeros(n, bool),
                         jnp.zeros(n, jnp.int32), jnp.zeros(n, jnp.int32), s.logdensity)
                return c, zeros

            return jax.lax.cond(act, run, skip, c)

        (states, das), stats = jax.lax.scan(body, (states, das), (keys, active))
        return (states, das, imm), stats

    return jax.jit(advance)


def refine(result: Fitted, method: str = "nuts", num_samples: int = 1000, num_chains: int = 4,
           num_warmup: int = 200, adapt: str = "window", key: Any = 0,
           target_accept: float = 0.8, dense: bool | None = None, prior_draws: int = 50,
           max_num_doublings: int = 10, progress: bool = True) -> RefineResult:
    """Exact draws from the fitted model by BlackJAX NUTS, started from the fit.

    Args:
        result: a fitted guide (a :class:`~vi_ext.result.FitResult`).
        method: ``"nuts"``.
        num_samples: draws kept per chain.
        num_chains: chains, each started at its own guide draw.
        num_warmup: tuning iterations per chain (not kept).
        adapt: ``"window"`` (a short window adaptation of the mass matrix, started at and
            shrunk towards the guide's covariance) or ``"step_size"`` (the guide's
            covariance kept as mass matrix, only the step size tuned).
        key: a seed or key.
        target_accept: the acceptance probability dual averaging aims at.
        dense: dense or diagonal mass matrix; by default it matches the guide.
        prior_draws: with ``adapt="window"``, the weight of the guide's covariance in the
            new mass matrix, in draws.
        max_num_doublings: NUTS's maximum tree depth.
        progress: show a progress bar over iterations.

    Returns:
        a :class:`RefineResult`: draws shaped like ``FitResult.sample``'s, by chain, R-hat,
        ESS and the sampler's statistics.
    """
    _validate(method, num_samples, num_chains, num_warmup, adapt, target_accept)
    _check_int("prior_draws", prior_draws, 0)
    _check_int("max_num_doublings", max_num_doublings, 1)
    t0 = time.perf_counter()
    k_problem, k_run = jax.random.split(as_key(key))
    problem = to_blackjax(result, num_chains=num_chains, key=k_problem, dense=dense)
    da_init, _, _ = dual_averaging_adaptation(target_accept)
    guide_imm = problem.inverse_mass_matrix
    states = jax.vmap(lambda x: blackjax.nuts.init(x, problem.logdensity_fn))(
        problem.initial_positions)
    das = jax.vmap(da_init)(jnp.ones(num_chains))
    carry = (states, das, guide_imm)
    advance = _make_advance(problem.logdensity_fn, float(target_accept), int(max_num_doublings))

    total = num_warmup + num_samples
    chunk = int(min(100, max(10, math.ceil(total / 20))))
    keys = jax.random.split(k_run, total).reshape(total, 1, -1)
    keys = jax.vmap(lambda k: jax.random.split(k[0], num_chains))(keys)
    t_setup = time.perf_counter()
    example = (keys[:chunk], jnp.ones(chunk, bool), jnp.asarray(True))
    compiled = advance.lower(carry, *example).compile()
    t_compile = time.perf_counter()

    bar = tqdm(total=total, disable=not progress, desc="refine", leave=False)
    cursor = 0

    def run(carry, n, adapt_flag):
        nonlocal cursor
        outs = []
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            k = keys[cursor:cursor + m]
            if m < chunk:
                k = jnp.concatenate([k, jnp.broadcast_to(k[-1:], (chunk - m,) + k.shape[1:])])
            active = jnp.arange(chunk) < m
            carry, stats = compiled(carry, k, active, jnp.asarray(adapt_flag))
            outs.append(jax.tree.map(lambda a, m=m: np.asarray(a[:m]), stats))
            cursor += m
            bar.update(m)
        stats = jax.tree.map(lambda *a: np.concatenate(a), *outs) if outs else None
        return carry, stats

    warm_evals = 0
    restarted = 0
    for phase, n in _phases(num_warmup, adapt):
        if n <= 0:
            continue
        carry, stats = run(carry, n, True)
        warm_evals += int(stats[3].sum())
        stray = _strays(stats[5])
        if stray.any() and not stray.all():
            carry = _restart(carry, stray)
            restarted += int(stray.sum())
        if phase == "window":
            x = stats[0][:, ~stray].reshape(-1, problem.dim)  # pooled over the good chains
            carry = _new_metric(carry, x, guide_imm, prior_draws, da_init)
    jax.block_until_ready(carry)
    t_warm = time.perf_counter()
    bar.set_description("refine (sampling)")
    carry, stats = run(carry, num_samples, False)
    jax.block_until_ready(carry)
    t_sample = time.perf_counter()
    bar.close()

    positions = np.swapaxes(stats[0], 0, 1)  # [chains, draws, D]
    by_chain = {n: np.asarray(v) for n, v in problem.constrain(positions).items()}
    samples = {n: v.reshape((-1,) + v.shape[2:]) for n, v in by_chain.items()}
    rhat = {n: np.asarray(split_gelman_rubin(v)) for n, v in by_chain.items()}
    ess = {n: np.asarray(effective_sample_size(v)) for n, v in by_chain.items()}
    sample_stats = {"acceptance_rate": np.swapaxes(stats[1], 0, 1),
                    "diverging": np.swapaxes(stats[2], 0, 1),
                    "n_steps": np.swapaxes(stats[3], 0, 1),
                    "tree_depth": np.swapaxes(stats[4], 0, 1)}
    das = carry[1]
    info = RefineInfo(
        step_size=np.asarray(jnp.exp(das.log_step_size_avg)),
        acceptance_rate=float(np.mean(stats[1])),
        num_divergent=int(np.sum(stats[2])),
        mean_tree_size=float(np.mean(stats[3])),
        gradient_evals={"warmup": warm_evals, "sampling": int(np.sum(stats[3]))},
        seconds={"setup": t_setup - t0, "compile": t_compile - t_setup,
                 "warmup": t_warm - t_compile, "sampling": t_sample - t_warm},
        adapt=adapt,
        restarted_chains=restarted,
    )
    out = RefineResult(samples, by_chain, rhat, ess, positions, sample_stats,
                       np.asarray(carry[2]), info, problem)
    _warn_if_unreliable(info.num_divergent, num_samples * num_chains, out.max_rhat)
    return out


def _warn_if_unreliable(num_divergent: int, num_draws: int, max_rhat: float) -> None:
    """Warn, as Stan does, when divergent transitions or a large split R-hat say the draws
    may be biased or the chains have not mixed."""
    problems = []
    if num_divergent > 0:
        problems.append(f"{num_divergent} of {num_draws} transitions diverged (NUTS could not "
                        "follow the posterior's curvature there, and the draws may be biased)")
    if not max_rhat < 1.01:
        problems.append(f"the largest split R-hat is {max_rhat:.3f} (>= 1.01: the chains "
                        "have not mixed; draw more samples)")
    if problems:
        warnings.warn(
            "refine: " + "; ".join(problems) + ". For a hierarchical model, fitting "
            "vx.reparam.learned_centering(model) first often removes both; a larger "
            "target_accept helps with a few divergences.",
            RuntimeWarning,
            stacklevel=3,
        )


def _strays(logdensities, width: float = 6.0) -> np.ndarray:
    """Chains stranded away from the others: bool [chains] from the log densities [n,
    chains] of a warmup phase's draws (recorded by the compiled sampler).

    Over the second half of the phase, chain c is stranded when its median log density is
    more than ``width`` typical within-chain standard deviations of the log density below
    the median over chains. Chains in the same typical set differ in that median by about
    sd / sqrt(ESS), far below the bound; a chain that a wild early trajectory left in a
    low-density region where its step size then collapsed sits hundreds of nats below
    (seen on eight schools under learned centering). A non-finite log density counts as
    -inf. Only a minority of chains can be told apart this way.
    """
    lp = np.asarray(logdensities[len(logdensities) // 2:], dtype=np.float64)
    lp = np.where(np.isfinite(lp), lp, -np.inf)
    med = np.median(lp, axis=0)
    with np.errstate(invalid="ignore"):
        spread = np.median(np.nan_to_num(np.std(lp, axis=0), nan=0.0, posinf=0.0))
    return med < np.median(med) - width * spread


def _restart(carry, stray):
    """Each stranded chain takes the state and step size of a good chain (in turn)."""
    states, das, imm = carry
    good = np.flatnonzero(~stray)
    src = np.arange(len(stray))
    src[stray] = good[np.arange(int(stray.sum())) % len(good)]
    take = lambda a: a[jnp.asarray(src)]  # noqa: E731
    return jax.tree.map(take, states), jax.tree.map(take, das), imm


def _new_metric(carry, x, guide_imm, prior_draws, da_init):
    """The window's covariance, shrunk towards the guide's; dual averaging restarts at each
    chain's current step size."""
    states, das, _ = carry
    n = x.shape[0]
    x = jnp.asarray(x)
    centered = x - x.mean(axis=0)
    if guide_imm.ndim == 1:
        est = jnp.sum(centered**2, axis=0) / max(n - 1, 1)
    else:
        est = centered.T @ centered / max(n - 1, 1)
    imm = (n * est + prior_draws * guide_imm) / (n + prior_draws)
    das = jax.vmap(da_init)(jnp.exp(das.log_step_size_avg))
    return states, das, imm.astype(guide_imm.dtype)
