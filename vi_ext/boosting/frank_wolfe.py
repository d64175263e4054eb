"""Boosting VI: a mixture guide grown by Frank-Wolfe on KL(q || p).

With f(q) = KL(q || p) = E_q[log q - log p] + log Z, iteration t adds one component s_t:

1. **The linear minimization oracle** fits s_t = N(m, diag(sigma^2)) to the residual ELBO

       RELBO(s) = E_s[log p(x, z) - log q_t(z)] - lambda_t E_s[log s(z)],
       lambda_t = 1 / sqrt(t + 1)  (by default; see ``Settings.entropy_weight``),

   by stochastic gradient ascent (reparameterized, Adam, in one compiled ``lax.scan``), with a
   defensive mixture in place of q_t inside the residual (see :class:`Settings`).
2. **The direction** is d = s_t - q_t and the Frank-Wolfe gap is
   g_t = <grad f(q_t), q_t - s_t> = E_{q_t}[log q_t - log p] - E_{s_t}[log q_t - log p].
3. **The step** q_{t+1} = (1 - gamma) q_t + gamma s_t, with gamma from one of

   - ``"fixed"``: gamma = 2 / (t + 2);
   - ``"line_search"``: gamma minimizing the Monte Carlo estimate of f(q_t + gamma d) on a
     grid of 201 values in [0, 1];
   - ``"global"``: gamma = min(g / (L ||d||^2), 1) with one constant L, found by the
     adaptive rule's backtracking at the first step and kept (the classical global-curvature
     rule, with L estimated rather than assumed);
   - ``"adaptive"`` (AdaFW, the local-curvature approximate backtracking of Dresdner et al.,
     2021, after Pedregosa et al., 2020): L <- eta L_prev; gamma = min(g / (L ||d||^2), 1);
     accept when
         f(q_t + gamma d) <= f(q_t) - gamma g + gamma^2 L ||d||^2 / 2,
     otherwise L <- tau L and retry, at most ``max_tries`` times; then the fallback takes the
     best of the tried steps and gamma = 0 by the same estimate (so the estimated KL never
     goes up), recorded as ``fallback``, and L returns to its value before the retries.

   f(q_t + gamma d) is estimated with common random numbers: one set of draws from q_t and
   one from s_t, reused for every gamma, through the stratified identity
   f(q_gamma) = (1 - gamma) E_{q_t}[h_gamma] + gamma E_{s_t}[h_gamma],
   h_gamma = log q_gamma - log p. ||d||^2 is the L2 norm in closed form (Gaussians).

References: Locatello et al., "Boosting Variational Inference: an Optimization Perspective",
AISTATS 2018; Dresdner, Shekhar, Pedregosa, Locatello & Rätsch, "Boosting Variational
Inference With Locally Adaptive Step-Sizes", IJCAI 2021; Pedregosa, Negiar, Askari & Jaggi,
"Linearly Convergent Frank-Wolfe with Backtracking Line-Search", AISTATS 2020.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from tqdm.auto import tqdm

from vi_ext.boosting import away
from vi_ext.boosting import mixture as mx
from vi_ext.boosting.target import from_function, from_model
from vi_ext.errors import ArgumentError
from vi_ext.fit import _all_finite as all_finite
from vi_ext.keys import as_key

STEP_SIZES = ("adaptive", "fixed", "line_search", "global")
VARIANTS = ("fw", "away", "pairwise", "corrective")


class Settings(NamedTuple):
    """Boosting's tuning constants.

    Attributes:
        entropy_weight: lambda_t, the RELBO's entropy weight at iteration t >= 1: None for
            1 / sqrt(t + 1) (Locatello et al., 2018), a number for a constant, or a function
            t -> lambda_t (for instance ``lambda t: 1 / (t + 1)``). Smaller weights favour
            narrower components.
        first_steps, first_learning_rate: the first component's ELBO fit (Adam).
        relbo_steps, relbo_learning_rate: each later component's RELBO fit.
        defensive_weight, defensive_width, defensive_df: in the oracle's residual
            log p - log q_t, q_t is replaced by (1 - rho) q_t + rho r with r independent
            Student-t coordinates (``defensive_df`` degrees of freedom; 1, Cauchy, by default)
            at q_t's mean and ``defensive_width`` times its standard deviations. Without it
            the RELBO's maximizer can sit far in the tails, where log p - log q_t grows
            without bound because q_t decays faster than p, and such a component does not
            decrease the KL (on a two-mode 1-D target the RELBO optimum moves from 3 sd
            beyond the missed mode to the mode itself). A Gaussian r is not enough where p's
            tails are curved or heavy (on the banana every new component went out along an
            arm, RELBO ~ 250, and none was taken); a Cauchy's log density decays only
            logarithmically, so the residual falls in every tail.
        relbo_samples: reparameterized draws per oracle step.
        num_samples: draws from q_t and from s_t for the gap and step-size estimates.
        eta, tau, max_tries: AdaFW's curvature decrease, increase and retry bound.
        anchor: delta > 0 (default 0.01) anchors the adaptive rule's quadratic model for
            the Frank-Wolfe step at gamma = delta, with the slope f'(delta) there (see
            :func:`_anchored_step`); 0 is the paper's AdaFW, anchored at gamma = 0 with
            slope -g. KL(q_gamma || p) has a gamma log gamma term where the new component
            covers mass q_t lacks, so its slope at 0 overstates every achievable decrease
            and the paper's rule accepts only tiny steps there (measured in
            benchmarks/boosting.py).
        lazy_steps: k >= 1 (default 10): the adaptive rule takes up to k steps toward the
            same new component (lazy Frank-Wolfe: the oracle's answer is reused while it
            still gives descent), each an AdaFW step from the current point with its own
            sufficient-decrease test; 1 is the paper's one step per oracle call (see
            :func:`_lazy_steps`).
        candidates, init_window: oracle starts: the best-residual draw among ``candidates``
            within ``init_window`` nats of the best target density.
    """

    entropy_weight: Callable[[int], float] | float | None = None
    first_steps: int = 1000
    first_learning_rate: float = 0.05
    relbo_steps: int = 500
    relbo_samples: int = 16
    relbo_learning_rate: float = 0.05
    defensive_weight: float = 0.01
    defensive_width: float = 3.0
    defensive_df: float = 1.0
    num_samples: int = 512
    eta: float = 0.9
    tau: float = 2.0
    max_tries: int = 20
    anchor: float = 0.01
    lazy_steps: int = 10
    candidates: int = 256
    init_window: float = 5.0


#: Settings fields -> (test, what is expected); checked before anything is compiled
_SETTINGS_RULES = {
    **{f: (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an int >= 1")
       for f in ("first_steps", "relbo_steps", "relbo_samples", "num_samples", "max_tries",
                 "candidates", "lazy_steps")},
    **{f: (lambda v: v > 0, "a number > 0")
       for f in ("first_learning_rate", "relbo_learning_rate", "defensive_width",
                 "defensive_df", "init_window")},
    "defensive_weight": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "eta": (lambda v: 0 < v <= 1, "a number in (0, 1] (the curvature's decrease)"),
    "tau": (lambda v: v > 1, "a number > 1 (the curvature's increase)"),
    "anchor": (lambda v: 0 <= v < 1, "a number in [0, 1) (0: the paper's AdaFW)"),
    "entropy_weight": (lambda v: v is None or callable(v) or v > 0,
                       "None (1 / sqrt(t + 1)), a number > 0 or a function t -> lambda_t"),
}


def _entropy_weight(settings: Settings, t: int) -> float:
    """lambda_t (the first component's fit, t = 0, is the plain ELBO: 1)."""
    rule = settings.entropy_weight
    if t == 0:
        return 1.0
    if rule is None:
        return 1.0 / math.sqrt(t + 1)
    value = float(rule(t)) if callable(rule) else float(rule)
    if not (value > 0) or not math.isfinite(value):
        raise ArgumentError("settings", f"settings.entropy_weight gave lambda_{t} = {value}; it "
                            "must be a finite number > 0.")
    return value


def _check_settings(settings: Settings) -> None:
    if not isinstance(settings, Settings):
        raise ArgumentError("settings", f"expected vx.boosting.Settings(...), got {settings!r}.")
    for name, (ok, expected) in _SETTINGS_RULES.items():
        value = getattr(settings, name)
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            raise ArgumentError("settings", f"settings.{name} must be {expected}, got {value!r}.")


class BoostedMixture(NamedTuple):
    """Ask :func:`vi_ext.fit` for a boosted mixture: ``vx.fit(model, guide=BoostedMixture())``.

    fit then runs :func:`boost` (its ``num_steps`` is the first component's ELBO fit) and
    returns ``BoostResult.as_fit_result()``: one implementation serves both entry points.

    Attributes:
        num_components: components to add.
        step_size: the step-size rule (see :func:`boost`).
        variant: ``"fw"``, ``"away"``, ``"pairwise"`` or ``"corrective"`` (see :func:`boost`).
        family: the components' family (see :func:`boost`).
        settings: :class:`Settings`; ``first_steps`` is taken from fit's ``num_steps``.
    """

    num_components: int = 10
    step_size: str = "adaptive"
    variant: str = "fw"
    family: str | mx.Family = "diag_normal"
    settings: Settings | None = None


@functools.partial(jax.jit, static_argnames=("settings", "steps", "learning_rate"))
def _oracle(density, mix, has_mix, lam, init, key, *, settings, steps, learning_rate):
    """The linear minimization oracle: the member s of ``mix.family`` maximizing the RELBO,
    by Adam from ``init`` in one lax.scan; returns (params, relbo). A step whose objective
    or gradient is non-finite is skipped (fit's guard). Compiled once per target, family
    and settings (``density`` is a pytree: a later call on the same model reuses it)."""
    opt = optax.adam(learning_rate)
    family = mix.family

    # (an empty mixture has only -inf weights: give the unused branch finite ones, or its NaN
    # gradient would leak through the where); the defensive proposal depends on q_t only,
    # so it is built once here, not at every step of the scan
    safe = mix.replace(log_weights=jnp.where(has_mix, mix.log_weights, 0.0))
    defensive = _defensive_proposal(safe, settings)

    def relbo(params, key):
        z = mx.member_sample(family, params, key, settings.relbo_samples)
        log_p = jax.vmap(density)(z)
        log_q = jnp.where(has_mix, _defensive_log_prob(safe, defensive, z, settings), 0.0)
        log_s = mx.member_log_prob(family, params, z)
        return jnp.mean(log_p - log_q - lam * log_s)

    grad = jax.value_and_grad(relbo)

    def step(carry, k):
        params, state = carry
        value, g = grad(params, k)
        g = jax.tree_util.tree_map(lambda x: -x, g)
        ok = jnp.isfinite(value) & all_finite(g)
        updates, new_state = opt.update(g, state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        return (jax.tree_util.tree_map(keep, new_params, params),
                jax.tree_util.tree_map(keep, new_state, state)), value

    keys = jax.random.split(key, steps)
    (params, _), values = jax.lax.scan(step, (init, opt.init(init)), keys)
    tail = values[-max(1, steps // 10):]
    return params, jnp.nanmean(tail)


def _defensive_proposal(mix: mx.Mixture, settings: Settings) -> dist.Distribution:
    """r: independent Student-t coordinates (``defensive_df``, Cauchy by default) at q_t's
    mean, ``defensive_width`` times q_t's standard deviations (moment-matched)."""
    w = mix.weights / jnp.sum(mix.weights)
    means, variances = mx.moments(mix)
    mean = jnp.sum(w[:, None] * means, axis=0)
    var = jnp.sum(w[:, None] * (variances + (means - mean) ** 2), axis=0)
    return dist.StudentT(settings.defensive_df, mean, settings.defensive_width * jnp.sqrt(var))


def _defensive_log_prob(mix: mx.Mixture, r: dist.Distribution, z: jax.Array,
                        settings: Settings) -> jax.Array:
    """log((1 - rho) q_t(z) + rho r(z)) with r from :func:`_defensive_proposal`: the
    oracle's residual log p - log q_t then stays bounded in the tails, since log r decays
    only logarithmically (defensive importance sampling, Hesterberg, 1995)."""
    log_r = jnp.sum(r.log_prob(z), axis=-1)
    rho = settings.defensive_weight
    return jnp.logaddexp(jnp.log1p(-rho) + mx.log_prob(mix, z), jnp.log(rho) + log_r)


@functools.partial(jax.jit, static_argnames=("settings",))
def _step_estimates(density, mix, params, key, *, settings):
    """Draws from q_t and from s (``params``), what f(q_t + gamma d) needs at each, and
    log ||s - q_t||^2 (closed form for Gaussian families, else Monte Carlo from the same
    draws)."""
    kq, ks = jax.random.split(key)
    n = settings.num_samples
    family = mix.family
    zq = mx.sample(mix, kq, n)
    zs = mx.member_sample(family, params, ks, n)
    out = {}
    for name, z in (("q", zq), ("s", zs)):
        out[name] = (jax.vmap(density)(z), mx.log_prob(mix, z),
                     mx.member_log_prob(family, params, z))
    if mx.has_closed_form(family):
        log_d2 = mx.log_sq_distance(mx.single(params, family), mix)
    else:
        (_, lq_q, ls_q), (_, lq_s, ls_s) = out["q"], out["s"]
        log_d2 = mx.log_sq_distance_mc(ls_s, lq_s, ls_q, lq_q)
    return out, log_d2


@jax.jit
def _objective(est, gamma):
    """Monte Carlo f(q_gamma) - log Z = E_{q_gamma}[log q_gamma - log p] (common random
    numbers: the same draws for every gamma), stratified over the two mixture parts."""
    gamma = jnp.asarray(gamma)

    def h(part):
        log_p, log_q, log_s = est[part]
        lq = jnp.logaddexp(jnp.log1p(-gamma) + log_q, jnp.log(gamma) + log_s)
        lq = jnp.where(gamma == 0, log_q, jnp.where(gamma == 1, log_s, lq))
        return jnp.mean(lq - log_p)

    hq, hs = h("q"), h("s")
    return jnp.where(gamma == 0, hq, jnp.where(gamma == 1, hs, (1 - gamma) * hq + gamma * hs))


def _gap(est):
    """g = E_q[log q - log p] - E_s[log q - log p]: the Frank-Wolfe gap estimate."""
    lp_q, lq_q, _ = est["q"]
    lp_s, lq_s, _ = est["s"]
    return jnp.mean(lq_q - lp_q) - jnp.mean(lq_s - lp_s)


class BoostResult:
    """What :func:`boost` returns: the mixture guide, its history, and FitResult-like use.

    Attributes:
        mixture: the fitted :class:`~vi_ext.boosting.mixture.Mixture` (unconstrained space).
        target: the model's flat unconstrained log density (:class:`Target`).
        history: one dict per iteration: ``component``, ``gap``, ``gamma``, ``log_L``,
            ``tries``, ``fallback``, ``elbo`` (Monte Carlo, of the mixture after the step),
            ``f_before``/``f_after``/``bound`` (the sufficient-decrease check), ``relbo``,
            ``entropy_weight`` (lambda_t),
            ``weights``, ``seconds``.
    """

    def __init__(self, mixture, target, history, model, model_args, model_kwargs):
        self.mixture = mixture
        self.target = target
        self.history = history
        self.model = model
        self.model_args = model_args
        self.model_kwargs = model_kwargs

    @property
    def weights(self) -> np.ndarray:
        """The weights of the components in use (a skipped step leaves its slot empty)."""
        w = np.asarray(self.mixture.weights)
        return w[w > 0]

    def log_density(self, z: jax.Array) -> jax.Array:
        """log q(z) of the mixture at unconstrained points z [..., D]."""
        return mx.log_prob(self.mixture, z)

    def sample(self, num_samples: int = 1000, key: Any = 0, correct: str | None = None,
               num_proposals: int | None = None) -> dict[str, np.ndarray]:
        """Draws from the mixture, mapped to every latent and deterministic site;
        ``correct="psis"`` resamples them with Pareto-smoothed importance weights (see
        :meth:`vi_ext.result.FitResult.sample`; needs a NumPyro model)."""
        if correct is not None:
            return self.as_fit_result().sample(num_samples, key, correct=correct,
                                               num_proposals=num_proposals)
        z = mx.sample(self.mixture, as_key(key), num_samples)
        sites = jax.vmap(self.target.constrain)(z)
        return {k: np.asarray(v) for k, v in sites.items()}

    def log_weights(self, num_samples: int = 1000, key: Any = 0) -> np.ndarray:
        """log p(x, z) - log q(z) for draws z ~ q (unconstrained space, Jacobian included)."""
        z = mx.sample(self.mixture, as_key(key), num_samples)
        return np.asarray(jax.vmap(self.target.log_density)(z) - mx.log_prob(self.mixture, z),
                          dtype=np.float64)

    def elbo(self, num_samples: int = 1000, key: Any = 0):
        """The mixture's ELBO with its standard error, ``Estimate(value, se)``."""
        from vi_ext.diagnostics import Estimate

        lw = self.log_weights(num_samples, key)
        return Estimate(float(np.mean(lw)), float(np.std(lw, ddof=1) / np.sqrt(len(lw))))

    def psis_khat(self, num_samples: int = 1000, seeds=(0, 1, 2, 3, 4)):
        """Pareto k-hat of the weights p/q over several seeds (ArviZ's ``psislw``)."""
        import arviz as az

        from vi_ext.diagnostics import khat_summary

        return khat_summary(float(az.psislw(self.log_weights(num_samples, s))[1])
                            for s in seeds)

    def to_arviz(self, num_samples: int = 1000, key: Any = 0):
        """Mixture draws as ArviZ data (one chain)."""
        from vi_ext.result import draws_to_arviz

        return draws_to_arviz(self.sample(num_samples, key))

    def plot(self, path: str | None = None) -> str | None:
        """ELBO and step size per component; saved to ``path`` as PNG when given."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        t = [h["component"] for h in self.history]
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
        a.plot(t, [h["elbo"] for h in self.history], "o-")
        a.set_xlabel("components")
        a.set_ylabel("ELBO")
        b.plot(t[1:], [h["gamma"] for h in self.history[1:]], "o-")
        b.set_xlabel("components")
        b.set_ylabel("step size gamma")
        fig.tight_layout()
        if path is None:
            return None
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def to_blackjax(self, num_chains: int = 4, key: Any = 0, dense: bool | None = None,
                    num_draws: int = 1000):
        """The model for BlackJAX, warmed by the mixture (see
        :meth:`vi_ext.result.FitResult.to_blackjax`; the mass matrix is the mixture's full
        covariance)."""
        return self.as_fit_result().to_blackjax(num_chains, key, dense, num_draws)

    def refine(self, method: str = "nuts", num_samples: int = 1000, num_chains: int = 4,
               key: Any = 0, **kwargs: Any):
        """BlackJAX NUTS started from the mixture (see :func:`vi_ext.mcmc.refine`)."""
        return self.as_fit_result().refine(method, num_samples, num_chains, key, **kwargs)

    def as_fit_result(self):
        """The mixture as a :class:`~vi_ext.result.FitResult` (model must be a NumPyro
        model): ``summary``, ``to_arviz``, ``predictive``, ``log_predictive``, ``psis_khat``
        and the rest work on it, through the :class:`~vi_ext.boosting.guide.AutoMixture`
        guide. ``losses`` are the negated ELBO estimates per component."""
        from vi_ext.boosting.guide import AutoMixture
        from vi_ext.program.objective import Objective
        from vi_ext.result import FitResult

        if self.model is None:
            raise ValueError("as_fit_result(): this result was boosted from a log density, "
                             "not a NumPyro model.")
        guide = AutoMixture(self.model, self.mixture, self.target.unravel)
        # run the guide once to set it up, then read its params
        with numpyro.handlers.block():
            tr = numpyro.handlers.trace(numpyro.handlers.seed(guide, 0)).get_trace(
                *self.model_args, **self.model_kwargs)
        params = {n: s["value"] for n, s in tr.items() if s["type"] == "param"}
        return FitResult(model=self.model, guide=guide, params=params,
                         losses=np.array([-h["elbo"] for h in self.history]), state=None,
                         objective=Objective(program=None, name="boosting"),
                         model_args=self.model_args, model_kwargs=self.model_kwargs,
                         seconds=float(sum(h["seconds"] for h in self.history)))

    def __repr__(self) -> str:
        last = self.history[-1] if self.history else {}
        return (f"BoostResult(components={int(self.mixture.num_active)}, "
                f"elbo={last.get('elbo', float('nan')):.4g}, weights={np.round(self.weights, 3)})")


def boost(
    model: Callable | None,
    *model_args: Any,
    num_components: int = 10,
    step_size: str = "adaptive",
    variant: str = "fw",
    family: str | mx.Family = "diag_normal",
    key: Any = 0,
    progress: bool = True,
    settings: Settings | None = None,
    log_density: Callable[[jax.Array], jax.Array] | None = None,
    dim: int | None = None,
    **model_kwargs: Any,
) -> BoostResult:
    """Grow a mixture by Frank-Wolfe on KL(q || p).

    Args:
        model: a NumPyro model with continuous latents (the mixture lives on its
            unconstrained latent space); or None with ``log_density`` and ``dim``.
        *model_args: the model's positional arguments.
        num_components: components to add (the first is a plain ELBO fit).
        step_size: ``"adaptive"`` (AdaFW backtracking, default), ``"fixed"`` (2/(t+2)),
            ``"line_search"`` or ``"global"`` (one curvature constant).
        variant: ``"fw"`` (plain Frank-Wolfe); ``"away"`` (AdaAFW: at each iteration,
            the away step from the worst component is taken instead when its gap is larger;
            a full away step drops that component); ``"pairwise"`` (AdaPFW: weight moves
            from the worst component straight to the new one, at most all of it, which
            drops the worst); ``"corrective"`` (after each Frank-Wolfe step, all weights
            re-optimized on the simplex). Away and pairwise steps need ``step_size`` other
            than ``"fixed"``.
        family: the components' family: ``"diag_normal"`` (default), ``"full_normal"``
            (full-rank Gaussians), ``"laplace"``, or any reparameterizable
            :class:`~vi_ext.boosting.mixture.Family`. L2 distances are closed form for the
            Gaussian families and Monte Carlo estimates (in log space) otherwise.
        key: an int seed or a JAX key.
        progress: a progress bar over components.
        settings: :class:`Settings` (RELBO steps, samples, backtracking constants).
        log_density: instead of a model, an unnormalized log density on R^dim.
        dim: its dimension.
        **model_kwargs: the model's keyword arguments (observations included).

    Returns:
        a :class:`BoostResult`.
    """
    settings = settings or Settings()
    _check_settings(settings)
    if step_size not in STEP_SIZES:
        raise ArgumentError("step_size", f"expected one of {STEP_SIZES}, got {step_size!r}.")
    if variant not in VARIANTS:
        raise ArgumentError("variant", f"expected one of {VARIANTS}, got {variant!r}.")
    if variant in ("away", "pairwise") and step_size == "fixed":
        raise ArgumentError("variant", f"{variant} steps need a step-size rule that can "
                            "measure them: step_size='adaptive', 'line_search' or 'global'.")
    if isinstance(num_components, bool) or not isinstance(num_components, int) \
            or num_components < 1:
        raise ArgumentError("num_components", f"expected an int >= 1, got {num_components!r}.")
    key = as_key(key)
    if model is not None:
        target = from_model(model, model_args, model_kwargs, key)
    else:
        if log_density is None or not isinstance(dim, int) or dim < 1:
            raise ArgumentError("log_density", "with model=None pass log_density=f and dim=D.")
        target = from_function(log_density, dim)
    family = mx.get_family(family, target.dim)
    density = target.log_density
    first = functools.partial(_oracle, settings=settings, steps=settings.first_steps,
                              learning_rate=settings.first_learning_rate)
    later = functools.partial(_oracle, settings=settings, steps=settings.relbo_steps,
                              learning_rate=settings.relbo_learning_rate)
    mix = mx.empty(num_components, target.dim, family)
    history: list[dict] = []
    log_L = None
    bar = tqdm(total=num_components, disable=not progress, desc=f"boost ({step_size})")
    try:
        for t in range(num_components):
            t0 = time.perf_counter()
            key, k_init, k_fit, k_est, k_away = jax.random.split(key, 5)
            lam = _entropy_weight(settings, t)
            if t == 0:
                init = family.init(target.init, jnp.full(target.dim, jnp.log(0.1)))
            else:
                init = _initial_component(density, mix, k_init, settings=settings)
            oracle = first if t == 0 else later
            params, relbo = oracle(density, mix, t > 0, lam, init, k_fit)
            if t == 0:
                mix = mx.add(mix, 0, params, jnp.array(1.0))
                est, _ = _step_estimates(density, mix, params, k_est, settings=settings)
                f_after = float(_objective(est, 0.0))
                row = {"component": 1, "gap": float("nan"), "gamma": 1.0, "log_L": None,
                       "tries": 0, "fallback": False, "f_before": float("nan"),
                       "f_after": f_after, "bound": float("nan")}
            else:
                est, log_d2 = _step_estimates(density, mix, params, k_est, settings=settings)
                g = float(_gap(est))
                f0 = float(_objective(est, 0.0))
                row = {"component": t + 1, "gap": g, "f_before": f0}
                away_step = None
                if variant == "pairwise":
                    away_step = _pairwise(density, mix, t, params, step_size, log_L,
                                          settings, k_away)
                elif variant == "away" and int(mix.num_active) >= 2:
                    away_step = _try_away(density, mix, g, step_size, log_L, t, settings,
                                          k_away)
                if away_step is not None:
                    mix, gamma, tries, fallback, log_L, bound, f0, f_after, kind = away_step
                    row.update(f_before=f0, step=kind)
                else:
                    gamma, tries, fallback, log_L, bound = _adding_step(
                        step_size, lambda gm, e=est: _objective(e, gm), g, f0,
                        float(log_d2), log_L, t, settings)
                    f_after = float(_objective(est, gamma))
                    row.update(step="frank_wolfe")
                    if gamma > 0:
                        mix = mx.add(mix, t, params, jnp.asarray(gamma))
                    if variant == "corrective" and int(mix.num_active) >= 2:
                        draws = away.component_draws(density, mix, k_away,
                                                     n=settings.num_samples)
                        lw = away.corrective_log_weights(draws, mix.log_weights)
                        mix = mix.replace(log_weights=lw)
                        row.update(step="fully_corrective",
                                   f_after_step=f_after)
                        f_after = float(away.objective(draws, lw))
                row.update(gamma=float(gamma), log_L=log_L, tries=tries, fallback=fallback,
                           f_after=f_after, bound=bound)
            row.update(elbo=-f_after, relbo=float(relbo), entropy_weight=lam,
                       weights=np.asarray(mix.weights)[: t + 1].tolist(),
                       seconds=time.perf_counter() - t0)
            history.append(row)
            bar.set_postfix(elbo=f"{-f_after:.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return BoostResult(mix, target, history, model, model_args, model_kwargs)


def _try_away(log_target, mix, g_fw, rule, log_L, t, settings, key):
    """The away step, if its gap beats the Frank-Wolfe gap: (mixture, gamma, tries,
    fallback, log_L, bound, f_before, f_after, kind) or None."""
    draws = away.component_draws(log_target, mix, key, n=settings.num_samples)
    v, g_a = away.away_vertex(draws, mix.log_weights)
    g_a = float(g_a)
    if not (g_a > g_fw) or not math.isfinite(g_a):
        return None
    lw = mix.log_weights
    cap = float(away.gamma_max(lw, v))

    def F(gm):
        return away.objective(draws, away.away_log_weights(lw, v, gm))

    f0 = float(F(0.0))
    if mx.has_closed_form(mix.family):
        log_d2 = float(mx.log_sq_distance(mix, mx.single(mix.component(v), mix.family)))
    else:
        log_d2 = float(away.log_sq_distance_away(draws, lw, v))
    gamma, tries, fallback, log_L, bound = _choose_step(rule, F, g_a, f0, log_d2, log_L, t,
                                                        settings, cap=cap)
    f_after = float(F(gamma))
    kind = "drop" if gamma >= cap * (1 - 1e-6) else "away"
    if gamma > 0:
        mix = mix.replace(log_weights=away.away_log_weights(lw, v, jnp.asarray(gamma)))
    return mix, gamma, tries, fallback, log_L, bound, f0, f_after, kind


def _pairwise(log_target, mix, t, params, rule, log_L, settings, key):
    """The pairwise step from the away vertex to the new component s (params, slot t):
    (mixture, gamma, tries, fallback, log_L, bound, f_before, f_after, kind). With one
    active component it is the Frank-Wolfe step."""
    base = mx.add(mix, t, params, jnp.asarray(0.0))  # s written in, weight 0
    draws = away.component_draws(log_target, base, key, n=settings.num_samples)
    s = jnp.asarray(t)
    v, g_p = away.pairwise_vertex(draws, base.log_weights, s)
    lw = base.log_weights
    cap = float(jnp.exp(lw[v]))

    def F(gm):
        return away.objective(draws, away.pairwise_log_weights(lw, s, v, gm))

    f0 = float(F(0.0))
    if mx.has_closed_form(base.family):
        log_d2 = float(mx.log_sq_distance(mx.single(params, base.family),
                                          mx.single(base.component(v), base.family)))
    else:
        log_d2 = float(away.log_sq_distance_pair(draws, s, v))
    # like the Frank-Wolfe step, this one adds mass where q may have none
    gamma, tries, fallback, log_L, bound = _adding_step(rule, F, float(g_p), f0, log_d2,
                                                        log_L, t, settings, cap=cap)
    f_after = float(F(gamma))
    kind = "pairwise_drop" if gamma >= cap * (1 - 1e-6) else "pairwise"
    if gamma > 0:
        mix = base.replace(log_weights=away.pairwise_log_weights(lw, s, v,
                                                                  jnp.asarray(gamma)))
    return mix, gamma, tries, fallback, log_L, bound, f0, f_after, kind


@functools.partial(jax.jit, static_argnames=("settings",))
def _initial_component(density, mix, key, *, settings):
    """Where the oracle starts for a later component: the draw, among ``candidates`` from
    q_t's components widened threefold about their means, with the largest residual
    log p - log q_t, with q_t's typical per-coordinate scale."""
    k1, k2 = jax.random.split(key)
    c = jax.random.categorical(k1, mix.log_weights, shape=(settings.candidates,))
    means, variances = mx.moments(mix)
    x = mix.family.distribution(mix.component(c)).sample(k2)
    z = means[c] + 3.0 * (x - means[c])
    log_p = jax.vmap(density)(z)
    resid = log_p - mx.log_prob(mix, z)
    # only where the target has mass: within init_window nats of the best candidate's log p
    # (far in the tails log p - log q_t grows without bound where q_t decays faster than p)
    near = log_p >= jnp.max(jnp.where(jnp.isfinite(log_p), log_p, -jnp.inf)) - settings.init_window
    resid = jnp.where(jnp.isfinite(resid) & near, resid, -jnp.inf)
    best = z[jnp.argmax(resid)]
    w = mix.weights
    log_scale = jnp.sum(w[:, None] * 0.5 * jnp.log(variances), axis=0) / jnp.sum(w)
    return mix.family.init(best, log_scale)


def _slope(F, at: float, h: float) -> float:
    """F'(at) by a central difference of the same common-random-number estimate (smooth away
    from gamma = 0; autodiff would meet log 0 at empty mixture slots)."""
    return (float(F(at + h)) - float(F(at - h))) / (2.0 * h)


def _adding_step(rule, F, g, f0, log_d2, log_L, t, settings, cap=1.0):
    """The step along a direction that adds mass where q_t may have none (Frank-Wolfe,
    pairwise): the adaptive rule anchored at ``settings.anchor`` when it is positive, then
    up to ``settings.lazy_steps - 1`` further steps along the same direction
    (:func:`_lazy_steps`); other rules: :func:`_choose_step`."""
    if rule != "adaptive":
        return _choose_step(rule, F, g, f0, log_d2, log_L, t, settings, cap=cap)
    if settings.anchor > 0:
        step = _anchored_step(F, f0, log_d2, log_L, t, settings, cap=cap)
    else:
        step = _choose_step(rule, F, g, f0, log_d2, log_L, t, settings, cap=cap)
    return _lazy_steps(F, step, log_d2, t, settings, cap)


def _lazy_steps(F, step, log_d2, t, settings, cap):
    """Further AdaFW steps along the direction of an accepted one (lazy Frank-Wolfe).

    After the step to gamma, the oracle would be asked again at q_gamma; the new component
    s is still a vertex with descent while F'(gamma) < 0, and since q_gamma + u d stays on
    the same line, the next step is AdaFW on u -> F(gamma + u), 0 <= u <= cap - gamma, with
    gap -F'(gamma) (a central difference of the same common-random-number estimate) and the
    same ||d||^2; L carries over (L <- eta L, backtracking by tau). It stops at the first
    step that is not accepted (the fallback's step is not taken), at no descent, or after
    ``settings.lazy_steps`` steps in all. Reusing the oracle's answer while it still gives
    descent is lazy Frank-Wolfe (Braun, Pokutta & Zink, "Lazifying Conditional Gradient
    Algorithms", ICML 2017); each step costs only evaluations of the estimate on fixed
    draws. Returns what :func:`_choose_step` returns for the whole move, with the tries
    summed and the bound of the last step (so f_after <= bound still holds)."""
    gamma, tries, fallback, log_L, bound = step
    for _ in range(settings.lazy_steps - 1):
        room = cap - gamma
        if fallback or not (gamma > 0) or not (room > 1e-6):
            break
        g_k = -_slope(F, gamma, 0.25 * min(gamma, room, float(settings.anchor) or 0.01))
        if not (g_k > 0) or not math.isfinite(g_k):
            break
        at = gamma
        u, tries_k, fallback_k, log_L_k, bound_k = _choose_step(
            "adaptive", lambda u, a=at: F(a + u), g_k, float(F(at)), log_d2, log_L, t,
            settings, cap=room)
        tries += tries_k
        if fallback_k or not (u > 0):
            break
        gamma, log_L, bound = at + u, log_L_k, bound_k
    return gamma, tries, fallback, log_L, bound


def _anchored_step(F, f0, log_d2, log_L, t, settings, cap=1.0):
    """AdaFW with its quadratic model anchored at gamma = delta (``settings.anchor``):
    accept gamma = delta + u when

        F(delta + u) <= F(delta) - u g_delta + u^2 L ||d||^2 / 2,   g_delta = -F'(delta),

    F'(delta) by a central difference (step delta / 4) of the same common-random-number
    estimate (for the Frank-Wolfe step, it approximates E_s[h_delta] - E_q[h_delta]). f is
    convex in gamma, so F(delta) < F(0) whenever g_delta > 0; if not, no step. Returns what
    :func:`_choose_step` returns, gamma measured from 0."""
    delta = min(float(settings.anchor), 0.5 * cap)
    f_d = float(F(delta))
    g_d = -_slope(F, delta, 0.25 * delta)
    if not (f_d < f0) or not (g_d > 0) or not math.isfinite(g_d):
        return 0.0, 0, False, log_L, float("nan")
    u, tries, fallback, log_L, bound = _choose_step("adaptive", lambda u: F(delta + u), g_d,
                                                    f_d, log_d2, log_L, t, settings,
                                                    cap=cap - delta)
    return delta + u, tries, fallback, log_L, bound


def _choose_step(rule, F, g, f0, log_d2, log_L, t, settings, cap=1.0):
    """(gamma, tries, fallback, log_L, bound) for one step along a direction with gap g,
    where F(gamma) estimates f at step gamma (common random numbers) and gamma <= cap."""
    if rule == "fixed":
        return min(2.0 / (t + 2.0), cap), 0, False, log_L, float("nan")
    if rule == "line_search":
        grid = jnp.linspace(0.0, cap, 201)
        values = jax.vmap(F)(grid)
        values = jnp.where(jnp.isfinite(values), values, jnp.inf)
        return float(grid[jnp.argmin(values)]), 0, False, log_L, float("nan")
    if rule == "global" and log_L is not None:
        if not (g > 0) or not math.isfinite(g):
            return 0.0, 0, False, log_L, float("nan")
        gamma = min(math.exp(math.log(g) - log_L - log_d2), cap)
        return gamma, 0, False, log_L, float("nan")
    # adaptive: AdaFW (and the first step of "global", which fixes L)
    if not (g > 0) or not math.isfinite(g):
        # the direction is not a descent direction by this estimate: no step
        return 0.0, 0, False, log_L, float("nan")
    if log_L is None:
        log_L = math.log(g) - log_d2  # optimistic start: the first trial step is gamma = 1
    elif rule == "adaptive":
        log_L = log_L + math.log(settings.eta)
    tried = {0.0: f0}
    start_log_L = log_L
    for tries in range(1, settings.max_tries + 1):
        gamma = min(math.exp(math.log(g) - log_L - log_d2), cap)
        bound = f0 - gamma * g + 0.5 * gamma**2 * math.exp(log_L + log_d2)
        value = float(F(gamma))
        if value <= bound:
            return gamma, tries, False, log_L, bound
        tried[gamma] = value if math.isfinite(value) else math.inf
        log_L = log_L + math.log(settings.tau)
    # fallback: the best step tried by the same estimate, or none (f never goes up);
    # and the curvature estimate goes back to where this step started: one bad direction
    # must not freeze the steps of the next ones
    best = min(tried, key=tried.get)
    return best, settings.max_tries, True, start_log_L, float("nan")
