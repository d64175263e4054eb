"""FitResult: what a fit returns, and what users do with a fitted guide.

One result for every way of fitting: :func:`vi_ext.fit` returns it, and so does boosting
(:func:`vi_ext.boosting.boost`), whose mixture is a guide like any other
(:class:`~vi_ext.boosting.guide.AutoMixture`). Diagnostics (:mod:`vi_ext.diagnostics`) and
exact inference (:mod:`vi_ext.mcmc`) take any fitted guide; the methods here are their
front door.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from numpyro import handlers
from numpyro.infer import Predictive

from vi_ext import diagnostics
from vi_ext.arviz_data import draws_to_arviz
from vi_ext.keys import as_key
from vi_ext.mcmc.bridge import to_blackjax
from vi_ext.mcmc.nuts import refine
from vi_ext.mcmc.psis import psis_sample
from vi_ext.plots import plot_fit
from vi_ext.program.enumerate import posterior_draws
from vi_ext.traces import enumerated_sites, latent_values, replayed_traces, site_names


@dataclass
class FitResult:
    """The outcome of :func:`vi_ext.fit`.

    Attributes:
        params: fitted constrained parameters, keyed like NumPyro's param store.
        losses: numpy array of per-step losses (-objective estimates); NaN or inf marks a
            rejected step.
        guide: the fitted guide (use it with ``params``).
        state: the final :class:`~vi_ext.fit.FitState` (unconstrained params, optimizer state,
            key, step counters).
        objective: the objective that was maximized.
        model, model_args, model_kwargs: what was fitted.
        seconds: wall time of the optimization loop, compilation included.
        stop_reason: why the fit ended: ``"num_steps"``, a stopping rule that converged, or
            a callback that asked to stop.
        history: one record (a dict) per outer iteration of the method that made the fit:
            boosting's, one per component (gap, step size, curvature, ELBO, ...); empty for
            a plain fit, whose per-step record is ``losses``.
        start: where the default guide started and why (a :class:`vi_ext.start.Start`:
            the chosen candidate, every candidate's ELBO estimate, the time and gradients
            the choice cost); None for a guide of your own or ``start="median"``.
    """

    model: Callable
    guide: Callable
    params: dict
    losses: np.ndarray
    state: Any
    objective: Any
    model_args: tuple = ()
    model_kwargs: dict = field(default_factory=dict)
    estimators: Mapping[str, Any] = field(default_factory=dict)
    constraints: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = float("nan")
    stop_reason: str = "num_steps"
    history: list = field(default_factory=list)
    start: Any = None

    @property
    def converged(self) -> bool:
        """Whether a stopping rule said the fit converged before ``num_steps`` (then
        ``stop_reason`` says which rule, and at which step)."""
        return self.stop_reason.startswith("converged")

    @property
    def num_rejected(self) -> int:
        """Number of steps rejected for a non-finite loss or gradient."""
        return int(getattr(self.state, "num_rejected", 0))

    def _traces(self) -> tuple[dict, dict]:
        """(guide trace, model trace replayed on the guide's latents), one seeded run each."""
        return replayed_traces(self.model, self.guide, self.params, self.model_args,
                               self.model_kwargs, as_key(0))

    def site_names(self) -> list[str]:
        """Names of the model's latent and deterministic sites, in execution order."""
        return site_names(self._traces()[1])

    def sample(self, num_samples: int = 1000, key: Any = 0, correct: str | None = None,
               num_proposals: int | None = None) -> dict[str, np.ndarray]:
        """Draws from the fitted guide, pushed through the model.

        Args:
            num_samples: how many draws.
            key: a seed or key.
            correct: ``None`` for plain guide draws; ``"psis"`` for draws importance-resampled
                towards the posterior with Pareto-smoothed weights (a
                :class:`~vi_ext.mcmc.psis.Draws` dict whose ``khat`` and ``ess`` say how far
                to trust them; a warning is given when k-hat is too large).
            num_proposals: with ``correct="psis"``, guide draws to resample from (default
                ``max(4 * num_samples, 1000)``).

        Returns:
            dict: every latent and deterministic site of the model -> array
            ``[num_samples, ...]``.
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"sample(): num_samples must be an int >= 1, got {num_samples!r}")
        if correct not in (None, "psis"):
            raise ValueError(f"sample(): correct must be None or 'psis', got {correct!r}")
        if correct == "psis":
            return psis_sample(self, num_samples, key, num_proposals)
        gtr, mtr = self._traces()
        names = site_names(mtr)
        pred = Predictive(
            self.model,
            guide=self.guide,
            params=self.params,
            num_samples=num_samples,
            return_sites=names,
            parallel=True,
        )
        out = pred(as_key(key), *self.model_args, **self.model_kwargs)
        if enumerated_sites(gtr, mtr):
            out = self._with_enumerated(out, names, gtr, as_key(key))
        return {n: np.asarray(out[n]) for n in names if n in out}

    def enumerated_sites(self) -> list[str]:
        """Model sites summed out by enumeration (marked ``infer={"enumerate":
        "parallel"}`` and not sampled by the guide)."""
        return enumerated_sites(*self._traces())

    def _with_enumerated(self, out, names, gtr, key):
        """Replace the prior draws of summed-out sites by draws from their conditional
        posterior given each guide draw (``gtr``: a guide trace, for the latents' names),
        and recompute the deterministic sites."""
        model = handlers.substitute(self.model, data=self.params)
        latents = {n: out[n] for n in latent_values(gtr) if n in out}
        n = len(next(iter(out.values())))
        keys = jax.random.split(jax.random.fold_in(key, 1), n)
        draws = jax.vmap(lambda v, k: posterior_draws(model, v, k, *self.model_args,
                                                      **self.model_kwargs))(latents, keys)
        pred = Predictive(self.model, posterior_samples={**latents, **draws},
                          params=self.params, return_sites=names)
        return pred(jax.random.fold_in(key, 2), *self.model_args, **self.model_kwargs)

    def predictive(self, num_samples: int = 1000, **kwargs: Any) -> Predictive:
        """NumPyro's ``Predictive`` for the fitted guide and parameters.

        Call it with a key and the model's arguments; pass observations as ``None`` to get
        posterior-predictive draws::

            pred = res.predictive(num_samples=500)
            draws = pred(jax.random.key(1), X_new, y=None)
        """
        return Predictive(
            self.model, guide=self.guide, params=self.params, num_samples=num_samples, **kwargs
        )

    def to_arviz(self, num_samples: int = 1000, key: Any = 0):
        """Draws from the guide as ArviZ data (one chain).

        Returns an ``InferenceData`` on ArviZ 0.x and a ``DataTree`` on ArviZ 1.x.
        """
        return draws_to_arviz(self.sample(num_samples, key))

    def summary(self, num_samples: int = 1000, key: Any = 0, **kwargs: Any):
        """An ArviZ posterior summary (mean, sd, HDI) of guide draws, as a DataFrame."""
        import arviz as az

        kwargs.setdefault("kind", "stats")
        return az.summary(self.to_arviz(num_samples, key), **kwargs)

    def plot(self, path: str | None = None, smooth: int | None = None,
             marginals: bool = True, num_samples: int = 2000, max_panels: int = 12,
             key: Any = 0) -> str | None:
        """The loss curve (raw and a moving median) and, below it, the posterior marginals
        of the guide against the prior, one panel per scalar latent (the first
        ``max_panels``); saved to ``path`` as PNG when given.

        Returns the path written, or None. Needs matplotlib (the ``examples`` extra).
        """
        post = prior = None
        if marginals:
            post = self.sample(num_samples, key)
            prior = self.prior_sample(num_samples, key)
        return plot_fit(self.losses, post, prior, path=path, smooth=smooth,
                        title=self.objective.name, max_panels=max_panels)

    def prior_sample(self, num_samples: int = 1000, key: Any = 0) -> dict[str, np.ndarray]:
        """Draws of the model's latent sites from the prior, ``[num_samples, ...]`` each."""
        names = self.site_names()
        pred = Predictive(self.model, params=self.params, num_samples=num_samples,
                          return_sites=names, parallel=True)
        out = pred(as_key(key), *self.model_args, **self.model_kwargs)
        return {n: np.asarray(out[n]) for n in names if n in out}

    # --- exact inference (see vi_ext.mcmc)

    def to_blackjax(self, num_chains: int = 4, key: Any = 0, dense: bool | None = None,
                    num_draws: int = 1000):
        """What BlackJAX needs to sample this model, warmed by the guide: a
        :class:`~vi_ext.mcmc.bridge.SamplingProblem` (log density on the unconstrained space,
        initial positions from the guide, the guide's covariance as inverse mass matrix, and
        the map back to constrained sites)."""
        return to_blackjax(self, num_chains=num_chains, key=key, dense=dense,
                           num_draws=num_draws)

    def refine(self, method: str = "nuts", num_samples: int = 1000, num_chains: int = 4,
               key: Any = 0, **kwargs: Any):
        """Exact draws by BlackJAX NUTS started from the fit (see
        :func:`vi_ext.mcmc.refine`): a :class:`~vi_ext.mcmc.nuts.RefineResult` with
        ``samples`` shaped like :meth:`sample`'s, ``to_arviz()``, R-hat and ESS."""
        return refine(self, method=method, num_samples=num_samples, num_chains=num_chains,
                      key=key, **kwargs)

    # --- diagnostics (see vi_ext.diagnostics)

    def elbo(self, num_samples: int = 1000, key: Any = 0):
        """The ELBO of the fitted guide with its standard error: ``Estimate(value, se)``."""
        return diagnostics.elbo(self, num_samples, key)

    def psis_khat(self, num_samples: int = 1000, seeds=(0, 1, 2, 3, 4)):
        """Pareto k-hat of the weights p/q over several seeds: ``KHat(values, mean, max,
        verdict)``; k < 0.5 good, < 0.7 ok, else the guide misses posterior mass."""
        return diagnostics.psis_khat(self, num_samples, seeds)

    def gradient_variance(self, num_samples: int = 100, key: Any = 0) -> dict[str, float]:
        """Per parameter, the summed variance of the fit's gradient estimator at the fitted
        parameters."""
        return diagnostics.gradient_variance(self, num_samples, key)

    def log_predictive(self, *args: Any, num_samples: int = 1000, key: Any = 0,
                       pointwise: bool = False, **kwargs: Any):
        """Log pointwise predictive density of data (default: the fit's own data)."""
        return diagnostics.log_predictive(self, *args, num_samples=num_samples, key=key,
                                          pointwise=pointwise, **kwargs)

    def __getattr__(self, name: str):
        # boosting returned a BoostResult of its own until 0.1; its names are now the
        # mixture guide's (res.guide.weights, ...) or diagnostics'
        if name in _BOOST_RESULT_NAMES and "guide" in self.__dict__:
            import warnings

            new, get = _BOOST_RESULT_NAMES[name]
            warnings.warn(f"res.{name} (of the former BoostResult) is now {new}.",
                          DeprecationWarning, stacklevel=2)
            return get(self)
        raise AttributeError(f"'FitResult' object has no attribute {name!r}")

    def __repr__(self) -> str:
        last = self.losses[np.isfinite(self.losses)][-min(100, len(self.losses)) :]
        final = f"{np.mean(last):.4g}" if last.size else "nan"
        return (
            f"FitResult(objective={self.objective.name!r}, steps={len(self.losses)}, "
            f"final_loss={final}, params={sorted(self.params)}, "
            f"rejected={self.num_rejected}, seconds={self.seconds:.2f})"
        )




#: deprecated names of the former BoostResult -> (the new spelling, how to get it)
_BOOST_RESULT_NAMES = {
    "mixture": ("res.guide.mixture", lambda r: r.guide.mixture),
    "weights": ("res.guide.weights", lambda r: r.guide.weights),
    "target": ("res.guide.flat", lambda r: r.guide.flat),
    "log_density": ("res.guide.log_density", lambda r: r.guide.log_density),
    "log_weights": ("vx.diagnostics.log_weights(res, ...)",
                    lambda r: lambda num_samples=1000, key=0: diagnostics.log_weights(
                        r, num_samples, key)),
    "as_fit_result": ("res itself (boosting returns a FitResult)", lambda r: lambda: r),
}
