"""A robust start for the default guide: candidate starting points scored by a cheap ELBO.

Where a fit starts decides where it ends more often than the optimizer does: a start in the
wrong funnel mouth, or in a mode that calls the data noise, is not left in any reasonable
number of steps. :func:`choose_start` builds a few candidate mean-field Gaussians on the
unconstrained space (the family of ``AutoNormal``) and keeps the one with the highest ELBO
estimate:

    ELBO(m, s) ~= (1/K) sum_k log p(x, T(m + s * eps_k)) + log|J_T(m + s * eps_k)|
                  + sum_i log s_i + (D / 2) log(2 pi e),        eps_k ~ N(0, I_D),

with the same K draws eps_k for every candidate (common random numbers: the comparison is far
less noisy than either estimate). Where some draws have a non-finite log density (outside
the region where the model is defined, such as an AR(1) coefficient beyond 1), the average
runs over the finite draws and log(fraction finite) is added: the ELBO of the candidate
restricted to that region, which is what a fit's guarded steps see. The candidates:

- ``"median"``: locations at the prior medians (``init_to_median``), scales ``init_scale``;
- ``"uniform"``: NumPyro's default, uniform in (-2, 2) on the unconstrained space, scales
  ``init_scale``;
- ``"saa_median"``, ``"saa_uniform"``: from each of those two, ``saa_steps`` Adam steps on a
  sample-average approximation of the ELBO, the same ``saa_draws`` draws at every step (a
  deterministic objective: the approach of DADVI, Giordano et al. 2024, with a first-order
  optimizer); its locations and scales. Both runs are one vectorized program. They are
  scored on the shared draws, which they never saw, so a candidate that overfits its own
  draws is not preferred for it;
- ``"pathfinder"`` (opt-in: its L-BFGS compiles slowly): a Pathfinder run (BlackJAX, Zhang
  et al. 2022) from the better of median and uniform: along an L-BFGS path towards the mode
  of the log joint, the normal approximation with the best ELBO; its mean and the diagonal of
  its covariance (L-BFGS inverse Hessian);
- ``"mode"`` (opt-in): the last point of that L-BFGS path (the mode of the unconstrained log
  joint, or as near as ``maxiter`` iterations get), with the Pathfinder scales there.

The chosen start, every candidate's score and its standard error, and the gradient
evaluations spent are returned in a :class:`Start`, whose :meth:`Start.autonormal_params`
gives ``init_params`` for a fit with ``AutoNormal``.

References:
    Zhang, Carpenter, Gelman, Vehtari. Pathfinder: Parallel quasi-Newton variational
    inference. JMLR 2022.
    Giordano, Ingram, Broderick. Black box variational inference with a deterministic
    objective: faster, more accurate, and even more accurate posterior covariances. JMLR
    2024 (DADVI).
    Phan, Pradhan, Jankowiak. Composable effects for flexible and accelerated probabilistic
    programming in NumPyro. 2019 (``init_to_uniform``, ``init_to_median``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.initialization import init_to_median, init_to_value
from numpyro.infer.util import potential_energy

from vi_ext.errors import ArgumentError
from vi_ext.keys import as_key
from vi_ext.program.sites import sample_sites

CANDIDATES = ("median", "uniform", "saa_median", "saa_uniform", "pathfinder", "mode")
DEFAULT_CANDIDATES = ("median", "uniform", "saa_median", "saa_uniform")
DEFAULT_INIT_SCALE = 0.1
# scales from the L-BFGS inverse Hessian are clipped to this range (unconstrained units)
MIN_SCALE, MAX_SCALE = 1e-3, 10.0


class Start(NamedTuple):
    """The chosen start and why.

    Attributes:
        name: the chosen candidate (one of :data:`CANDIDATES`).
        locs: site name -> location on the unconstrained space (``AutoNormal``'s layout).
        scales: site name -> scale on the unconstrained space.
        scores: candidate name -> ELBO estimate (nats; -inf: a non-finite draw).
        standard_errors: candidate name -> standard error of that estimate.
        gradient_evaluations: log-density gradients spent (SAA steps x draws, L-BFGS).
        density_evaluations: log-density evaluations spent (scores and Pathfinder's ELBOs).
        seconds: wall time of the choice, compilation included.
        reason: one sentence for a report.
        values: site name -> the chosen location on the constrained space (the value the
            site takes there), for any autoguide's ``init_loc_fn`` (:meth:`init_loc_fn`).
        noncentered: the sites the default fit put in non-centered form (``reparam="auto"``:
            that form won the race of :mod:`vi_ext.fit.forms`); empty: as written.
        runner_up: the candidate with the next highest finite score, as a :class:`Start` of
            its own (whose ``runner_up`` is None), or None; the default fit races it
            against the chosen one (:mod:`vi_ext.fit.forms`).
    """

    name: str
    locs: dict
    scales: dict
    scores: dict
    standard_errors: dict
    gradient_evaluations: int
    density_evaluations: int
    seconds: float
    reason: str
    values: dict | None = None
    noncentered: tuple = ()
    runner_up: Any = None

    def init_loc_fn(self) -> Callable:
        """``init_to_value`` at the chosen locations: the start of any NumPyro autoguide
        (``AutoMultivariateNormal(model, init_loc_fn=start.init_loc_fn())``), scales
        excepted."""
        return init_to_value(values=self.values)

    def autonormal_params(self, prefix: str = "auto") -> dict:
        """``init_params`` for a fit with ``AutoNormal(model, prefix=prefix)``:
        ``{f"{site}_{prefix}_loc": loc, f"{site}_{prefix}_scale": scale}``."""
        out = {}
        for site, loc in self.locs.items():
            out[f"{site}_{prefix}_loc"] = loc
            out[f"{site}_{prefix}_scale"] = self.scales[site]
        return out


class Problem(NamedTuple):
    """A model's log joint on the unconstrained space, flattened."""

    logdensity: Callable[[jax.Array], jax.Array]
    unravel: Callable[[jax.Array], dict]
    starts: Callable[[jax.Array], dict]  # key -> {"median", "uniform": flat position}
    constrain: Callable[[jax.Array], dict]  # flat u -> site name -> value on its support


def unconstrained_problem(model: Callable, args: tuple, kwargs: dict, key: jax.Array
                          ) -> Problem:
    """The log joint log p(x, T(u)) + log|J_T(u)| of ``model`` as a function of the flat
    unconstrained vector u, and a traceable function of ``key`` giving the prior-median and
    uniform starting points.

    The prior median is NumPyro's ``init_to_median(num_samples=15)``: per latent site, in
    the model's order, the median of 15 draws from the site's distribution given the
    medians of the sites before it, mapped to the unconstrained space by the inverse of the
    bijection onto its support. The draws are traced, not run: running the model eagerly,
    op by op, compiled each op on its own (about 90 small programs, 4 s of the choice on
    eight schools). Only the layout of the latents is worked out here (by abstract
    evaluation, nothing compiled); ``key`` fixes nothing yet.
    """
    supports: dict = {}

    def median_start(k):
        # site by site, as init_to_median does inside NumPyro: each site's 15 draws given
        # the medians of the sites before it (independent joint draws would carry a
        # parameter out of range into every later site: an AR(1)'s |phi| > 1 made its
        # path's medians NaN)
        at_medians = handlers.substitute(handlers.seed(model, k),
                                         substitute_fn=init_to_median(num_samples=15))
        with numpyro.validation_enabled(False):
            tr = handlers.trace(at_medians).get_trace(*args, **kwargs)
        latent = list(sample_sites(tr, observed=False))
        supports.update({s["name"]: s["fn"].support for s in latent})
        return {s["name"]: biject_to(s["fn"].support).inv(s["value"]) for s in latent}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shapes = jax.eval_shape(median_start, key)
    _, unravel = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))

    def starts(k):
        k1, k2 = jax.random.split(k)
        flat = ravel_pytree(median_start(k1))[0]
        # NumPyro's init_to_uniform(radius=2): uniform in (-2, 2) on the unconstrained space
        # (a non-finite draw is not retried here: it scores -inf)
        return {"median": flat,
                "uniform": jax.random.uniform(k2, flat.shape, flat.dtype, -2.0, 2.0)}

    def logdensity(u):
        with numpyro.validation_enabled(False):
            return -potential_energy(model, args, kwargs, unravel(u))

    def constrain(u):
        return {n: biject_to(supports[n])(v) for n, v in unravel(u).items()}

    return Problem(logdensity, unravel, starts, constrain)


def elbo_scores(logdensity: Callable, locs: jax.Array, scales: jax.Array, eps: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
    """ELBO estimates and their standard errors for C diagonal Gaussians at once.

    Args:
        logdensity: flat unconstrained log joint.
        locs, scales: [C, D].
        eps: [K, D] standard normal draws, shared by every candidate.

    Returns:
        (elbo [C], standard error [C]); over the finite draws plus log(fraction finite),
        -inf where no draw is finite.
    """
    d = locs.shape[-1]
    entropy = jnp.sum(jnp.log(scales), -1) + 0.5 * d * (1.0 + math.log(2 * math.pi))
    z = locs[:, None, :] + scales[:, None, :] * eps[None]
    lp = jax.vmap(jax.vmap(logdensity))(z)  # [C, K]
    ok = jnp.isfinite(lp)
    n = jnp.sum(ok, -1)
    safe = jnp.where(ok, lp, 0.0)
    mean = jnp.sum(safe, -1) / jnp.maximum(n, 1)
    var = jnp.sum(jnp.where(ok, (safe - mean[:, None]) ** 2, 0.0), -1) / jnp.maximum(n, 1)
    mean = jnp.where(n > 0, mean + jnp.log(n / eps.shape[0]), -jnp.inf)
    se = jnp.where(n > 0, jnp.sqrt(var / jnp.maximum(n, 1)), jnp.inf)
    return mean + entropy, se


def saa_candidate(logdensity: Callable, loc: jax.Array, scale: jax.Array, key: jax.Array,
                  steps: int, num_draws: int) -> tuple[jax.Array, jax.Array]:
    """Fit a diagonal Gaussian to a sample-average approximation of the ELBO,

        max_{m, log s} (1/K) sum_k log p(T(m + s eps_k)) + log|J| + sum log s,

    the same K draws eps_k at every step, by Adam (step 0.1, cosine-annealed to 0.01) from
    (``loc``, ``scale``); returns (m, s). Steps where the objective is not finite are
    skipped."""
    eps = jax.random.normal(key, (num_draws, loc.shape[0]))

    def negative(x):
        m, log_s = x
        lp = jax.vmap(logdensity)(m + jnp.exp(log_s) * eps)
        return -(jnp.mean(lp) + jnp.sum(log_s))

    opt = optax.adam(optax.cosine_decay_schedule(0.1, steps, alpha=0.1))
    x0 = (loc, jnp.log(scale))

    def step(carry, _):
        x, s = carry
        value, g = jax.value_and_grad(negative)(x)
        ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(g[0])) & jnp.all(jnp.isfinite(g[1]))
        u, s2 = opt.update(jax.tree.map(lambda v: jnp.where(ok, v, 0.0), g), s, x)
        x2 = optax.apply_updates(x, u)
        keep = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (x2, s2), (x, s))
        return keep, None

    (x, _), _ = jax.lax.scan(step, (x0, opt.init(x0)), None, length=steps)
    m, log_s = x
    return m, jnp.clip(jnp.exp(log_s), MIN_SCALE, MAX_SCALE)


def pathfinder_candidates(logdensity: Callable, start: jax.Array, key: jax.Array,
                          maxiter: int, num_samples: int) -> tuple[dict, int, int]:
    """Run BlackJAX's Pathfinder from ``start``; return ``{"pathfinder": (loc, scale),
    "mode": (loc, scale)}`` (flat), the gradient and density evaluations spent."""
    from blackjax.vi.pathfinder import approximate

    state, info = jax.jit(lambda k, x: approximate(k, logdensity, x, num_samples=num_samples,
                                                   maxiter=maxiter))(key, start)
    path = info.path
    finite = jnp.isfinite(path.elbo)
    iters = int(jnp.sum(finite))
    last = int(jnp.max(jnp.where(finite, jnp.arange(len(path.elbo)), 0)))

    def gaussian(st):
        # Sigma = diag(alpha) + beta gamma beta^T; mean = x + Sigma grad log p(x), a
        # quasi-Newton step (Zhang et al., alg. 4); the path's gradients are those of the
        # minimized objective, -log p
        var = st.alpha + jnp.einsum("ij,jk,ik->i", st.beta, st.gamma, st.beta)
        mean = st.position - st.alpha * st.grad_position - st.beta @ (
            st.gamma @ (st.beta.T @ st.grad_position))
        scale = jnp.clip(jnp.sqrt(jnp.where(var > 0, var, MIN_SCALE**2)), MIN_SCALE, MAX_SCALE)
        return mean, scale

    out = {"pathfinder": gaussian(state)}
    mode_state = jax.tree.map(lambda x: x[last], path)
    out["mode"] = (mode_state.position, gaussian(mode_state)[1])
    return out, iters, iters * num_samples


#: XLA options for the start's program: it runs a few thousand small steps once, so most
#: of its cost is compilation; XLA's backend optimizations halve that (3.2 -> 1.2 s on eight
#: schools) and leave the results unchanged (the same scores to the printed digit)
QUICK_COMPILE = {"xla_backend_optimization_level": 0}


def compile_quickly(fn: Callable, *args: Any) -> Any:
    """``jax.jit(fn)(*args)``, compiled with :data:`QUICK_COMPILE` (a program run once)."""
    return jax.jit(fn).lower(*args).compile(QUICK_COMPILE)(*args)


def choose_start(model: Callable, *model_args: Any,
                 candidates: Sequence[str] = DEFAULT_CANDIDATES, num_draws: int = 64,
                 init_scale: float = DEFAULT_INIT_SCALE, saa_steps: int = 300,
                 saa_draws: int = 8, maxiter: int = 50, pathfinder_draws: int = 50,
                 key: Any = 0, **model_kwargs: Any) -> Start:
    """Choose the starting mean-field Gaussian of a fit among ``candidates`` by their ELBO.

    Args:
        model: a NumPyro model with continuous latents.
        *model_args, **model_kwargs: its arguments, observations included.
        candidates: a subset of :data:`CANDIDATES` (default: all but ``"pathfinder"`` and
            ``"mode"``).
        num_draws: K, draws per ELBO estimate (shared by all candidates).
        init_scale: the scale of the ``"median"`` and ``"uniform"`` candidates.
        saa_steps: Adam steps of the ``"saa"`` candidate.
        saa_draws: the fixed draws of its sample-average ELBO.
        maxiter: L-BFGS iterations of the Pathfinder run.
        pathfinder_draws: draws per ELBO estimate along Pathfinder's path.
        key: an int seed or a JAX key.

    Returns:
        a :class:`Start`: the chosen candidate, its locations and scales, and every score.

    Example:
        >>> start = vx.start.choose_start(model, **data)
        >>> res = vx.fit(model, init_params=start.autonormal_params(), **data)
    """
    return choose_start_for(model, model_args, model_kwargs, candidates=candidates,
                            num_draws=num_draws, init_scale=init_scale, saa_steps=saa_steps,
                            saa_draws=saa_draws, maxiter=maxiter,
                            pathfinder_draws=pathfinder_draws, key=key)


def choose_start_for(model: Callable, model_args: tuple, model_kwargs: dict, *,
                     candidates: Sequence[str] = DEFAULT_CANDIDATES, num_draws: int = 64,
                     init_scale: float = DEFAULT_INIT_SCALE, saa_steps: int = 300,
                     saa_draws: int = 8, maxiter: int = 50, pathfinder_draws: int = 50,
                     key: Any = 0) -> Start:
    """:func:`choose_start` with the model's arguments as a tuple and a dict (so that a
    model keyword named like an option, ``key`` say, cannot clash)."""
    unknown = set(candidates) - set(CANDIDATES)
    if unknown or not candidates:
        raise ArgumentError("candidates", f"expected a non-empty subset of {CANDIDATES}, "
                            f"got {tuple(candidates)!r}.")
    t0 = time.perf_counter()
    k_init, k_eps, k_path, k_saa = jax.random.split(as_key(key), 4)
    problem = unconstrained_problem(model, model_args, model_kwargs, k_init)
    simple = ("median", "uniform")
    origins = tuple(n for n in simple if f"saa_{n}" in candidates)
    rows = simple + tuple(f"saa_{n}" for n in origins)

    # the prior medians, the uniform start, the SAA fits from both (one vectorized run, the
    # same draws for each) and every score: one compiled program
    def simple_and_saa(k_init, k_eps, k_saa):
        starts = problem.starts(k_init)
        d = starts["median"].shape[0]
        eps = jax.random.normal(k_eps, (num_draws, d))
        scale0 = jnp.full(d, init_scale)
        locs = [starts[n] for n in simple]
        scales = [scale0 for _ in simple]
        if origins:
            ms, ss = jax.vmap(lambda m, s_: saa_candidate(
                problem.logdensity, m, s_, k_saa, saa_steps, saa_draws))(
                jnp.stack([starts[n] for n in origins]), jnp.stack([scale0] * len(origins)))
            locs += list(ms)
            scales += list(ss)
        locs, scales = jnp.stack(locs), jnp.stack(scales)
        return (locs, scales, *elbo_scores(problem.logdensity, locs, scales, eps), eps,
                jax.vmap(problem.constrain)(locs))

    locs, scales, s, se, eps, values = compile_quickly(simple_and_saa, k_init, k_eps, k_saa)
    grads = saa_steps * saa_draws * len(origins)
    dens = num_draws * len(rows)
    gaussians = {n: (locs[i], scales[i]) for i, n in enumerate(rows)}
    constrained = {n: jax.tree.map(lambda v, i=i: v[i], values) for i, n in enumerate(rows)}
    scored = {n: (s[i], se[i]) for i, n in enumerate(rows)}
    if {"pathfinder", "mode"} & set(candidates):
        origin = gaussians[simple[int(jnp.argmax(s[: len(simple)]))]]
        found, iters, pdens = pathfinder_candidates(problem.logdensity, origin[0], k_path,
                                                    maxiter, pathfinder_draws)
        found = {n: v for n, v in found.items() if n in candidates}
        ps, pse = jax.jit(elbo_scores, static_argnums=0)(
            problem.logdensity, jnp.stack([v[0] for v in found.values()]),
            jnp.stack([v[1] for v in found.values()]), eps)
        grads += iters
        dens += pdens + num_draws * len(found)
        gaussians.update(found)
        constrained.update({n: jax.jit(problem.constrain)(v[0]) for n, v in found.items()})
        scored.update({n: (ps[i], pse[i]) for i, n in enumerate(found)})
    names = [n for n in CANDIDATES if n in candidates]
    s = np.array([float(scored[n][0]) for n in names], np.float64)
    se = np.array([float(scored[n][1]) for n in names], np.float64)
    s = np.where(np.isfinite(s), s, -np.inf)
    best = int(np.argmax(s))
    name = names[best]
    order = sorted(range(len(names)), key=lambda i: -s[i])
    runner = order[1] if len(order) > 1 else None
    reason = f"{name} has the highest ELBO estimate, {s[best]:.4g} +- {se[best]:.2g} nats"
    if runner is not None:
        reason += (f"; next {names[runner]} at {s[runner]:.4g}" if np.isfinite(s[runner])
                   else f"; {names[runner]} had a non-finite draw")
    seconds = time.perf_counter() - t0

    def start(n: str, why: str, runner_up: Start | None = None) -> Start:
        loc, scale = gaussians[n]
        return Start(
            name=n,
            locs=problem.unravel(jnp.asarray(loc)),
            scales=problem.unravel(jnp.asarray(scale)),
            scores={c: float(v) for c, v in zip(names, s, strict=True)},
            standard_errors={c: float(v) for c, v in zip(names, se, strict=True)},
            gradient_evaluations=int(grads),
            density_evaluations=int(dens),
            seconds=seconds,
            reason=why,
            values=constrained[n],
            runner_up=runner_up,
        )

    second = None
    if runner is not None and np.isfinite(s[runner]):
        n2 = names[runner]
        second = start(n2, f"{n2} has the second highest ELBO estimate, {s[runner]:.4g} +- "
                       f"{se[runner]:.2g} nats; first {name} at {s[best]:.4g}")
    return start(name, reason, second)
