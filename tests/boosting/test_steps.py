"""Step-size rules: each rule object on lines with known answers, and what the loop records."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from boosting_targets import FAST, bimodal, member

import vi_ext as vx
from models import eight_schools
from vi_ext.boosting import mixture as mx
from vi_ext.boosting.moves import frank_wolfe_line
from vi_ext.boosting.steps import Adaptive, Fixed, GlobalCurvature, Line, LineSearch, Step
from vi_ext.flat import FunctionDensity


def _quadratic(g=1.0, L=2.0, cap=1.0):
    """f(gamma) = -g gamma + L gamma^2 / 2 (||d|| = 1): the best step is g / L."""
    return Line(lambda gm: -g * gm + 0.5 * L * gm**2, g, 0.0, 0.0, cap=cap, adds_mass=False)


def test_every_rule_returns_a_named_step_record():
    line = _quadratic()
    for rule in (Fixed(), LineSearch(), Adaptive(), GlobalCurvature()):
        step = rule(line, 2, None)
        assert isinstance(step, Step) and 0.0 <= step.gamma <= line.cap
    assert Fixed()(line, 2, None).gamma == 0.5  # 2 / (t + 2)
    assert abs(LineSearch()(line, 1, None).gamma - 0.5) < 1e-9  # the grid minimum, g / L


def test_adaptive_backtracking_finds_the_curvature_of_a_quadratic():
    # from the optimistic start (gamma = cap), tau = 2 doublings reach L >= 2: the accepted
    # step satisfies the sufficient-decrease inequality exactly as written
    line = _quadratic(g=1.0, L=2.0)
    step = Adaptive(tau=2.0)(line, 1, None)
    assert not step.fallback and step.tries >= 2
    L = np.exp(step.log_L)  # ||d||^2 = 1
    assert L >= 2.0 - 1e-9
    assert line.f(step.gamma) <= line.f0 - step.gamma * line.gap + 0.5 * step.gamma**2 * L
    # the global rule keeps the curvature it found at its first step
    glob = GlobalCurvature()
    first = glob(line, 1, None)
    later = glob(_quadratic(g=0.5, L=2.0), 2, first.log_L)
    assert later.log_L == first.log_L and abs(later.gamma - 0.5 / np.exp(first.log_L)) < 1e-12


def test_no_descent_no_step():
    line = _quadratic()._replace(gap=-1.0)
    for rule in (Adaptive(), GlobalCurvature()):
        assert rule(line, 1, None).gamma == 0.0


def _two_mode_line():
    """q covers N(-3, 1), the new component N(3, 1), p = their even mixture."""
    def target(z):
        return jnp.logaddexp(dist.Normal(-3.0, 1.0).log_prob(z[0]),
                             dist.Normal(3.0, 1.0).log_prob(z[0])) + jnp.log(0.5)

    mix = mx.add(mx.empty(2, 1), 0, member([-3.0], [1.0]), jnp.array(1.0))
    line, _ = frank_wolfe_line(FunctionDensity(target), mix, member([3.0], [1.0]),
                               jax.random.PRNGKey(0), vx.boosting.Settings())
    return line


def test_the_anchored_adaptive_step_is_not_tiny_where_the_papers_is():
    line = _two_mode_line()
    paper = Adaptive(anchor=0.0, lazy_steps=1)(line, 1, None)
    anchored = Adaptive(lazy_steps=1)(line, 1, None)
    # the anchored step's sufficient decrease holds, from f(delta)
    assert line.f(anchored.gamma) <= anchored.bound + 1e-6
    # (the best step here is 0.5: q then equals p)
    assert paper.gamma < 0.01 and anchored.gamma > 10 * paper.gamma
    assert line.f(anchored.gamma) < line.f(paper.gamma)


def test_lazy_steps_go_on_along_the_same_direction_with_sufficient_decrease():
    mix = mx.add(mx.empty(2, 1), 0, member([2.0], [0.9]), jnp.array(1.0))  # the heavier mode
    line, _ = frank_wolfe_line(FunctionDensity(bimodal), mix, member([-2.5], [0.6]),
                               jax.random.PRNGKey(0), vx.boosting.Settings())
    one = Adaptive(lazy_steps=1)(line, 1, None)
    lazy = Adaptive()(line, 1, None)
    grid = jnp.linspace(0.0, 1.0, 1001)
    best = float(jnp.min(jax.vmap(line.f)(grid)))
    # one anchored step stops well short of the best step (the missed mode weighs 0.4);
    # lazy steps close most of the rest, and the last one's sufficient decrease holds
    assert lazy.gamma > one.gamma and float(line.f(lazy.gamma)) <= lazy.bound + 1e-6
    assert float(line.f(lazy.gamma)) - best < 0.1 * (float(line.f(one.gamma)) - best)
    assert lazy.tries > one.tries  # it took more evaluations (tries) to get there


def test_the_loop_takes_rules_by_name_or_as_objects():
    kw = eight_schools.data()
    fixed = vx.boosting.boost(eight_schools.model, num_components=3, step_size="fixed",
                              progress=False, settings=FAST, **kw)
    assert [round(h["gamma"], 6) for h in fixed.history] == [1.0, round(2 / 3, 6), 0.5]
    by_object = vx.boosting.boost(eight_schools.model, num_components=3, step_size=Fixed(),
                                  progress=False, settings=FAST, **kw)
    assert [h["gamma"] for h in by_object.history] == [h["gamma"] for h in fixed.history]
    glob = vx.boosting.boost(None, log_density=bimodal, dim=1, num_components=4,
                             step_size="global", progress=False,
                             settings=FAST._replace(entropy_weight=0.5))
    assert [h["entropy_weight"] for h in glob.history] == [1.0, 0.5, 0.5, 0.5]
    curv = [h["log_L"] for h in glob.history[1:] if h["log_L"] is not None]
    assert curv and all(c == curv[0] for c in curv)  # one constant L
    with pytest.raises(vx.ArgumentError, match="step_size"):
        vx.boosting.boost(eight_schools.model, step_size="huge", **kw)


def test_a_failed_backtracking_falls_back_to_the_best_step_tried_and_restores_l():
    # the estimate says descent (gap 1) but f only grows: no trial passes the test, so the
    # fallback takes the best step tried, gamma = 0, and L returns to its value before
    line = Line(lambda gm: gm, 1.0, 0.0, 0.0)
    step = Adaptive(max_tries=5)(line._replace(adds_mass=False), 1, 0.0)
    assert step.fallback and step.gamma == 0.0 and step.tries == 5
    assert step.log_L == np.log(0.9)  # eta L_prev, where this step started
