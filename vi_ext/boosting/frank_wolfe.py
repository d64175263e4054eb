"""Boosting VI: a mixture guide grown by Frank-Wolfe on KL(q || p); the loop.

With f(q) = KL(q || p) = E_q[log q - log p] + log Z, iteration t adds one component s_t:

1. **The linear minimization oracle** (:mod:`vi_ext.boosting.oracle`) fits s_t, a member of
   the component family, to the residual ELBO
   E_s[log p(x, z) - log q_t(z)] - lambda_t E_s[log s(z)], lambda_t = 1 / sqrt(t + 1) by
   default (:class:`~vi_ext.boosting.settings.Settings`), with fit's guarded step.
2. **The direction** (:mod:`vi_ext.boosting.moves`) is d = s_t - q_t with Frank-Wolfe gap
   g_t = E_{q_t}[log q_t - log p] - E_{s_t}[log q_t - log p], or, by ``variant``, an away or
   pairwise direction that moves weight off the worst component.
3. **The step** q_{t+1} = q_t + gamma d, with gamma from a step-size rule
   (:mod:`vi_ext.boosting.steps`: fixed 2 / (t + 2), line search, one global curvature, or
   the local-curvature approximate backtracking of Dresdner et al., the default), all on
   estimates of f with common random numbers. The fully corrective variant then
   re-optimizes every weight.

Components live on the model's flat unconstrained latent space (:mod:`vi_ext.flat`), where
mixture densities are exact (logsumexp). The result is a :class:`~vi_ext.result.FitResult`
whose guide is the mixture (:class:`~vi_ext.boosting.guide.AutoMixture`), with one history
record per component.

References: Locatello et al., "Boosting Variational Inference: an Optimization Perspective",
AISTATS 2018; Dresdner, Shekhar, Pedregosa, Locatello & Rätsch, "Boosting Variational
Inference With Locally Adaptive Step-Sizes", IJCAI 2021; Pedregosa, Negiar, Askari & Jaggi,
"Linearly Convergent Frank-Wolfe with Backtracking Line-Search", AISTATS 2020.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from tqdm.auto import tqdm

from vi_ext.boosting import away
from vi_ext.boosting import mixture as mx
from vi_ext.boosting.guide import AutoMixture
from vi_ext.boosting.moves import (
    away_move,
    frank_wolfe_line,
    frank_wolfe_move,
    pairwise_move,
)
from vi_ext.boosting.oracle import fit_component, initial_component
from vi_ext.boosting.settings import Settings, check_settings, entropy_weight
from vi_ext.boosting.steps import StepRule, rule_for
from vi_ext.errors import ArgumentError
from vi_ext.fit.config import FitConfig, check_num_steps
from vi_ext.flat import DensityModel, FlatModel, from_function, from_model
from vi_ext.keys import as_key
from vi_ext.program.objective import Objective
from vi_ext.result import FitResult

VARIANTS = ("fw", "away", "pairwise", "corrective")


class BoostedMixture(NamedTuple):
    """Ask :func:`vi_ext.fit` for a boosted mixture: ``vx.fit(model, guide=BoostedMixture())``.

    fit then runs :func:`boost`, with its ``num_steps`` as the first component's ELBO fit and
    its ``key`` and ``progress``; the objective must be the ELBO, and fit's other options
    (optimizer, data, devices, checkpoints, ...) are refused by name: tune boosting through
    ``settings``. One implementation serves both entry points.

    Attributes:
        num_components: components to add.
        step_size: the step-size rule (see :func:`boost`).
        variant: ``"fw"``, ``"away"``, ``"pairwise"`` or ``"corrective"`` (see :func:`boost`).
        family: the components' family (see :func:`boost`).
        settings: :class:`~vi_ext.boosting.settings.Settings`; ``first_steps`` is taken from
            fit's ``num_steps``.
    """

    num_components: int = 10
    step_size: str | StepRule = "adaptive"
    variant: str = "fw"
    family: str | mx.Family = "diag_normal"
    settings: Settings | None = None

    #: the options of fit this guide honours (see vi_ext.fit.config.FitsItself)
    fit_options = frozenset({"num_steps", "key", "progress", "objective"})

    def fit_model(self, model: Callable, model_args: tuple, model_kwargs: dict,
                  config: FitConfig) -> FitResult:
        """fit(model, guide=self, ...): boost, with fit's options that apply."""
        if config.resolved_objective().name != "elbo":
            raise ArgumentError("objective", "boosting minimizes KL(q || p): use the ELBO.")
        settings = self.settings or Settings()
        if "num_steps" in config.set_options():  # fit's default cap is not a first fit's size
            check_num_steps(config.num_steps)
            settings = settings._replace(first_steps=int(config.num_steps))
        return boost(model, *model_args, num_components=self.num_components,
                     step_size=self.step_size, variant=self.variant, family=self.family,
                     key=config.key, progress=config.progress, settings=settings,
                     **model_kwargs)


def _check(step_size, variant, num_components, settings) -> StepRule:
    check_settings(settings)
    rule = rule_for(step_size, settings)
    if variant not in VARIANTS:
        raise ArgumentError("variant", f"expected one of {VARIANTS}, got {variant!r}.")
    if variant in ("away", "pairwise") and not rule.measures:
        raise ArgumentError("variant", f"{variant} steps need a step-size rule that can "
                            "measure them: step_size='adaptive', 'line_search' or 'global'.")
    if isinstance(num_components, bool) or not isinstance(num_components, int) \
            or num_components < 1:
        raise ArgumentError("num_components", f"expected an int >= 1, got {num_components!r}.")
    return rule


def boost(
    model: Callable | None,
    *model_args: Any,
    num_components: int = 10,
    step_size: str | StepRule = "adaptive",
    variant: str = "fw",
    family: str | mx.Family = "diag_normal",
    key: Any = 0,
    progress: bool = True,
    settings: Settings | None = None,
    log_density: Callable[[jax.Array], jax.Array] | None = None,
    dim: int | None = None,
    **model_kwargs: Any,
) -> FitResult:
    """Grow a mixture by Frank-Wolfe on KL(q || p).

    Args:
        model: a NumPyro model with continuous latents (the mixture lives on its
            unconstrained latent space); or None with ``log_density`` and ``dim``.
        *model_args: the model's positional arguments.
        num_components: components to add (the first is a plain ELBO fit).
        step_size: ``"adaptive"`` (AdaFW backtracking, default), ``"fixed"`` (2/(t+2)),
            ``"line_search"``, ``"global"`` (one curvature constant), or a rule object of
            :mod:`vi_ext.boosting.steps` (e.g. ``steps.Adaptive(anchor=0.0)``).
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
        settings: :class:`~vi_ext.boosting.settings.Settings` (RELBO steps, samples,
            backtracking constants).
        log_density: instead of a model, an unnormalized log density on R^dim (it becomes
            a NumPyro model with one latent site ``"z"``, :class:`~vi_ext.flat.DensityModel`).
        dim: its dimension.
        **model_kwargs: the model's keyword arguments (observations included).

    Returns:
        a :class:`~vi_ext.result.FitResult` whose guide is the mixture
        (:class:`~vi_ext.boosting.guide.AutoMixture`, with ``res.guide.mixture`` and
        ``res.guide.weights``), whose ``losses`` are the negated ELBO estimates after each
        component, and whose ``history`` holds one record per component (``component``,
        ``gap``, ``gamma``, ``log_L``, ``tries``, ``fallback``, ``step`` the move's kind,
        ``elbo``, ``f_before``, ``f_after`` and ``bound`` the sufficient-decrease check,
        ``relbo``, ``entropy_weight``, ``weights``, ``seconds``).

    Example:
        >>> res = vx.boosting.boost(model, num_components=5, **data)
        >>> last = res.history[-1]
        >>> res.guide.weights, last["elbo"], res.sample(1000)
    """
    settings = settings or Settings()
    rule = _check(step_size, variant, num_components, settings)
    key = as_key(key)
    if model is not None:
        flat = from_model(model, model_args, model_kwargs, key)
    else:
        if log_density is None or not isinstance(dim, int) or dim < 1:
            raise ArgumentError("log_density", "with model=None pass log_density=f and dim=D.")
        flat = from_function(log_density, dim)
        model, model_args, model_kwargs = DensityModel(log_density, dim), (), {}
    family = mx.get_family(family, flat.dim)
    mix, history = _grow(flat, family, rule, variant, num_components, key, progress, settings)
    return _result(model, model_args, model_kwargs, flat, mix, history)


def _grow(flat: FlatModel, family: mx.Family, rule: StepRule, variant: str,
          num_components: int, key: jax.Array, progress: bool,
          settings: Settings) -> tuple[mx.Mixture, list[dict]]:
    """The Frank-Wolfe loop: (the mixture, one history record per component)."""
    density = flat.log_density
    first = functools.partial(fit_component, settings=settings, steps=settings.first_steps,
                              learning_rate=settings.first_learning_rate)
    later = functools.partial(fit_component, settings=settings, steps=settings.relbo_steps,
                              learning_rate=settings.relbo_learning_rate)
    mix = mx.empty(num_components, flat.dim, family)
    history: list[dict] = []
    log_L = None
    name = getattr(rule, "__name__", type(rule).__name__)
    bar = tqdm(total=num_components, disable=not progress, desc=f"boost ({name})")
    try:
        for t in range(num_components):
            t0 = time.perf_counter()
            key, k_init, k_fit, k_est, k_away = jax.random.split(key, 5)
            lam = entropy_weight(settings, t)
            if t == 0:
                init = family.init(flat.init, jnp.full(flat.dim, jnp.log(0.1),
                                                       dtype=flat.init.dtype))
                params, relbo = first(density, mix, False, lam, init, k_fit)
                mix = mx.add(mix, 0, params, jnp.array(1.0))
                line, _ = frank_wolfe_line(density, mix, params, k_est, settings)
                row = {"component": 1, "gap": float("nan"), "gamma": 1.0, "log_L": None,
                       "tries": 0, "fallback": False, "f_before": float("nan"),
                       "f_after": line.f0, "bound": float("nan")}
            else:
                init = initial_component(density, mix, k_init, settings=settings)
                params, relbo = later(density, mix, True, lam, init, k_fit)
                line, _ = frank_wolfe_line(density, mix, params, k_est, settings)
                move = None
                if variant == "pairwise":
                    move = pairwise_move(density, mix, t, params, rule, t, log_L, k_away,
                                         settings)
                elif variant == "away" and int(mix.num_active) >= 2:
                    move = away_move(density, mix, line.gap, rule, t, log_L, k_away, settings)
                if move is None:
                    move = frank_wolfe_move(mix, t, params, line, rule, t, log_L)
                mix, f_after = move.mixture, move.f_after
                row = {"component": t + 1, "gap": line.gap, "step": move.kind,
                       **move.step._asdict(), "f_before": move.f_before}
                if variant == "corrective" and int(mix.num_active) >= 2:
                    draws = away.component_draws(density, mix, k_away, n=settings.num_samples)
                    mix = mix.replace(log_weights=away.corrective_log_weights(
                        draws, mix.log_weights))
                    row.update(step="fully_corrective", f_after_step=f_after)
                    f_after = float(away.objective(draws, mix.log_weights))
                row.update(gamma=float(move.step.gamma), f_after=f_after)
                log_L = move.step.log_L
            row.update(elbo=-row["f_after"], relbo=float(relbo), entropy_weight=lam,
                       weights=np.asarray(mix.weights)[: t + 1].tolist(),
                       seconds=time.perf_counter() - t0)
            history.append(row)
            bar.set_postfix(elbo=f"{row['elbo']:.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return mix, history


def _result(model: Callable, model_args: tuple, model_kwargs: dict, flat: FlatModel,
            mix: mx.Mixture, history: list[dict]) -> FitResult:
    """The mixture as a FitResult: its guide is an AutoMixture over the model's flat
    unconstrained latent vector, so NumPyro's transforms, Predictive and every FitResult
    method apply."""
    guide = AutoMixture(model, mix, flat)
    # run the guide once to set it up, then read its params
    with numpyro.handlers.block():
        tr = numpyro.handlers.trace(numpyro.handlers.seed(guide, 0)).get_trace(
            *model_args, **model_kwargs)
    params = {n: s["value"] for n, s in tr.items() if s["type"] == "param"}
    return FitResult(model=model, guide=guide, params=params,
                     losses=np.array([-h["elbo"] for h in history]), state=None,
                     objective=Objective(program=None, name="boosting"),
                     model_args=tuple(model_args), model_kwargs=dict(model_kwargs),
                     seconds=float(sum(h["seconds"] for h in history)),
                     stop_reason="num_components", history=history)
