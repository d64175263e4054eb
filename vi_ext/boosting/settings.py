"""Boosting's tuning constants (:class:`Settings`), checked before anything is compiled."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from vi_ext.errors import ArgumentError


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
        eta, tau, max_tries: AdaFW's curvature decrease, increase and retry bound (the
            ``"adaptive"`` and ``"global"`` rules, :mod:`vi_ext.boosting.steps`).
        anchor: delta > 0 (default 0.01) anchors the adaptive rule's quadratic model for
            steps that add mass at gamma = delta, with the slope f'(delta) there (see
            :class:`~vi_ext.boosting.steps.Adaptive`); 0 is the paper's AdaFW, anchored at
            gamma = 0 with slope -g. KL(q_gamma || p) has a gamma log gamma term where the
            new component covers mass q_t lacks, so its slope at 0 overstates every
            achievable decrease and the paper's rule accepts only tiny steps there
            (measured in benchmarks/boosting.py).
        lazy_steps: k >= 1 (default 10): the adaptive rule takes up to k steps toward the
            same new component (lazy Frank-Wolfe: the oracle's answer is reused while it
            still gives descent), each an AdaFW step from the current point with its own
            sufficient-decrease test; 1 is the paper's one step per oracle call.
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
_RULES = {
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


def check_settings(settings: Settings) -> None:
    """Raise an ArgumentError naming the first field of ``settings`` out of its range."""
    if not isinstance(settings, Settings):
        raise ArgumentError("settings", f"expected vx.boosting.Settings(...), got {settings!r}.")
    for name, (ok, expected) in _RULES.items():
        value = getattr(settings, name)
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            raise ArgumentError("settings", f"settings.{name} must be {expected}, got {value!r}.")


def entropy_weight(settings: Settings, t: int) -> float:
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
