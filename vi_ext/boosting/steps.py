"""Step-size rules for boosting: how far to move along a direction, as objects behind one
protocol.

A direction is a :class:`Line`: f(gamma) = KL(q + gamma d || p) - log Z estimated on fixed
draws (common random numbers: every gamma is scored on the same draws), its gap
g = -f'(0), log ||d||^2 and the largest step ``cap`` that keeps q a density. A rule is any
object with ``rule(line, t, log_L) -> Step``: t is the iteration and log_L the curvature
estimate the previous step left (None at first). It returns a :class:`Step`, the record the
loop writes into its history. The loop knows no rule by name; ``rule_for("adaptive",
settings)`` turns the names ``boost`` accepts into these objects.

- :class:`Fixed`: gamma = 2 / (t + 2) (the classical open-loop rule).
- :class:`LineSearch`: gamma minimizing the estimate of f on a grid over [0, cap].
- :class:`GlobalCurvature`: gamma = min(g / (L ||d||^2), cap) with one L, found by
  backtracking at the first step and kept.
- :class:`Adaptive`: AdaFW, the local-curvature approximate backtracking of Dresdner et al.
  (IJCAI 2021, after Pedregosa et al., AISTATS 2020): L <- eta L_prev,
  gamma = min(g / (L ||d||^2), cap), accept when

      f(gamma) <= f(0) - gamma g + gamma^2 L ||d||^2 / 2,

  else L <- tau L and retry, at most ``max_tries`` times; then the best step tried (or none)
  is taken, recorded as ``fallback``, and L returns to where it started. For steps that add
  mass where q may have none (Frank-Wolfe and pairwise steps) it anchors the quadratic
  model at gamma = delta and then takes lazy steps along the same line (see the class).

References: Dresdner, Shekhar, Pedregosa, Locatello & Rätsch, "Boosting Variational Inference
With Locally Adaptive Step-Sizes", IJCAI 2021; Pedregosa, Negiar, Askari & Jaggi, "Linearly
Convergent Frank-Wolfe with Backtracking Line-Search", AISTATS 2020; Braun, Pokutta & Zink,
"Lazifying Conditional Gradient Algorithms", ICML 2017.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from vi_ext.boosting.settings import Settings
from vi_ext.errors import ArgumentError


class Line(NamedTuple):
    """A direction d to step along from the mixture q.

    Attributes:
        f: gamma -> the estimate of f(q + gamma d) (up to log Z), on fixed draws.
        gap: g, the estimate of -f'(0) (the Frank-Wolfe, away or pairwise gap).
        f0: f(0).
        log_d2: log ||d||^2 (the L2 norm of the direction, squared).
        cap: the largest step that keeps q a density.
        adds_mass: the step adds mass where q may have none (Frank-Wolfe, pairwise), so
            f has a gamma log gamma term at 0; away steps only move mass q has.
    """

    f: Callable[[float], float]
    gap: float
    f0: float
    log_d2: float
    cap: float = 1.0
    adds_mass: bool = True


class Step(NamedTuple):
    """How far a rule moved along a :class:`Line`, and why.

    Attributes:
        gamma: the step taken (0: none).
        tries: estimates of f the rule evaluated to decide.
        fallback: the backtracking ran out of tries and took the best step tried.
        log_L: the curvature estimate after the step (None: the rule keeps none).
        bound: the sufficient-decrease bound the accepted step met (NaN: no test).
    """

    gamma: float
    tries: int = 0
    fallback: bool = False
    log_L: float | None = None
    bound: float = float("nan")


@runtime_checkable
class StepRule(Protocol):
    """``rule(line, t, log_L) -> Step``; ``measures``: whether the rule looks at the line at
    all (away and pairwise steps need one that does)."""

    measures: bool

    def __call__(self, line: Line, t: int, log_L: float | None) -> Step: ...


class Fixed(NamedTuple):
    """gamma = min(2 / (t + 2), cap), whatever the line."""

    measures: bool = False

    def __call__(self, line: Line, t: int, log_L: float | None) -> Step:
        return Step(min(2.0 / (t + 2.0), line.cap), log_L=log_L)


class LineSearch(NamedTuple):
    """gamma minimizing the estimate of f on ``grid`` evenly spaced points of [0, cap]."""

    grid: int = 201
    measures: bool = True

    def __call__(self, line: Line, t: int, log_L: float | None) -> Step:
        grid = jnp.linspace(0.0, line.cap, self.grid)
        values = jax.vmap(line.f)(grid)
        values = jnp.where(jnp.isfinite(values), values, jnp.inf)
        return Step(float(grid[jnp.argmin(values)]), log_L=log_L)


class Adaptive(NamedTuple):
    """AdaFW: local-curvature approximate backtracking, anchored and lazy where steps add
    mass (see the module docstring for the rule).

    Attributes:
        eta, tau, max_tries: the curvature's decrease before each step, its increase on
            each retry, and the retry bound.
        anchor: delta > 0 anchors the quadratic model, for steps that add mass, at
            gamma = delta: the step delta is taken, then AdaFW backtracks on
            f(delta + u) <= f(delta) - u g_delta + u^2 L ||d||^2 / 2 with the slope
            g_delta = -f'(delta) from a central difference (step delta / 4) of the same
            estimate; f is convex in gamma, so f(delta) < f(0) whenever g_delta > 0. 0 is the
            paper's rule.
        lazy_steps: after an accepted step that adds mass, up to ``lazy_steps - 1`` further
            AdaFW steps along the same line from the current gamma, each with the gap
            -f'(gamma) (central difference), L carried over and its own sufficient-decrease
            test; it stops at the first step not accepted, at no descent, or at the cap.
            Each costs only evaluations of the estimate on fixed draws.
    """

    eta: float = 0.9
    tau: float = 2.0
    max_tries: int = 20
    anchor: float = 0.01
    lazy_steps: int = 10
    measures: bool = True

    def __call__(self, line: Line, t: int, log_L: float | None) -> Step:
        if not line.adds_mass:
            return self.backtrack(line, log_L)
        step = self.anchored(line, log_L) if self.anchor > 0 else self.backtrack(line, log_L)
        return self.lazy(line, step)

    def backtrack(self, line: Line, log_L: float | None) -> Step:
        """The paper's AdaFW step along ``line``, from curvature ``log_L`` (None: the
        optimistic start, whose first trial step is the cap)."""
        g, cap = line.gap, line.cap
        if not (g > 0) or not math.isfinite(g):
            # not a descent direction by this estimate: no step
            return Step(0.0, log_L=log_L)
        if log_L is None:
            log_L = math.log(g) - line.log_d2
        else:
            log_L = log_L + math.log(self.eta)
        tried = {0.0: line.f0}
        start_log_L = log_L
        for tries in range(1, self.max_tries + 1):
            gamma = min(math.exp(math.log(g) - log_L - line.log_d2), cap)
            bound = line.f0 - gamma * g + 0.5 * gamma**2 * math.exp(log_L + line.log_d2)
            value = float(line.f(gamma))
            if value <= bound:
                return Step(gamma, tries, False, log_L, bound)
            tried[gamma] = value if math.isfinite(value) else math.inf
            log_L = log_L + math.log(self.tau)
        # fallback: the best step tried by the same estimate, or none (f never goes up);
        # and the curvature estimate goes back to where this step started: one bad direction
        # must not freeze the steps of the next ones
        best = min(tried, key=tried.get)
        return Step(best, self.max_tries, True, start_log_L)

    def anchored(self, line: Line, log_L: float | None) -> Step:
        """AdaFW with its quadratic model anchored at gamma = delta (``anchor``); gamma is
        measured from 0."""
        delta = min(float(self.anchor), 0.5 * line.cap)
        f_d = float(line.f(delta))
        g_d = -slope(line.f, delta, 0.25 * delta)
        if not (f_d < line.f0) or not (g_d > 0) or not math.isfinite(g_d):
            return Step(0.0, log_L=log_L)
        step = self.backtrack(shifted(line, delta, g_d, f_d), log_L)
        return step._replace(gamma=delta + step.gamma)

    def lazy(self, line: Line, step: Step) -> Step:
        """Further AdaFW steps along ``line`` after ``step`` (lazy Frank-Wolfe); the tries
        are summed and the bound is the last step's, so f(gamma) <= bound still holds."""
        gamma, tries, log_L, bound = step.gamma, step.tries, step.log_L, step.bound
        for _ in range(self.lazy_steps - 1):
            room = line.cap - gamma
            if step.fallback or not (gamma > 0) or not (room > 1e-6):
                break
            g_k = -slope(line.f, gamma, 0.25 * min(gamma, room, float(self.anchor) or 0.01))
            if not (g_k > 0) or not math.isfinite(g_k):
                break
            more = self.backtrack(shifted(line, gamma, g_k, float(line.f(gamma))), log_L)
            tries += more.tries
            if more.fallback or not (more.gamma > 0):
                break
            gamma, log_L, bound = gamma + more.gamma, more.log_L, more.bound
        return Step(gamma, tries, step.fallback, log_L, bound)


class GlobalCurvature(NamedTuple):
    """gamma = min(g / (L ||d||^2), cap) with one curvature constant L, found by AdaFW's
    backtracking at the first step (the classical global-curvature rule, with L estimated
    rather than assumed) and kept."""

    tau: float = 2.0
    max_tries: int = 20
    measures: bool = True

    def __call__(self, line: Line, t: int, log_L: float | None) -> Step:
        if log_L is None:
            return Adaptive(tau=self.tau, max_tries=self.max_tries).backtrack(line, None)
        g = line.gap
        if not (g > 0) or not math.isfinite(g):
            return Step(0.0, log_L=log_L)
        return Step(min(math.exp(math.log(g) - log_L - line.log_d2), line.cap), log_L=log_L)


def slope(f: Callable[[float], float], at: float, h: float) -> float:
    """f'(at) by a central difference of the same common-random-number estimate (smooth away
    from gamma = 0; autodiff would meet log 0 at empty mixture slots)."""
    return (float(f(at + h)) - float(f(at - h))) / (2.0 * h)


def shifted(line: Line, at: float, gap: float, f_at: float) -> Line:
    """The same line seen from gamma = ``at``: u -> f(at + u), 0 <= u <= cap - at."""
    return line._replace(f=lambda u: line.f(at + u), gap=gap, f0=f_at, cap=line.cap - at)


STEP_SIZES = ("adaptive", "fixed", "line_search", "global")


def rule_for(step_size: str | StepRule, settings: Settings) -> StepRule:
    """The rule object for a name ``boost`` accepts (constants from ``settings``), or the
    rule itself."""
    if isinstance(step_size, StepRule):
        return step_size
    if step_size == "adaptive":
        return Adaptive(settings.eta, settings.tau, settings.max_tries, settings.anchor,
                        settings.lazy_steps)
    if step_size == "global":
        return GlobalCurvature(settings.tau, settings.max_tries)
    if step_size == "fixed":
        return Fixed()
    if step_size == "line_search":
        return LineSearch()
    raise ArgumentError("step_size", f"expected one of {STEP_SIZES} or a step rule "
                        f"(vx.boosting.steps.Adaptive(), ...), got {step_size!r}.")
