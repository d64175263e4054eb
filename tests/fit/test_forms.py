"""The default fit's choice of form (vi_ext.fit.forms): the model as written or its
hierarchical latents non-centered, by a short race of the two fits."""

import os
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpyro import handlers
from numpyro.infer.autoguide import AutoNormal

import vi_ext as vx
from models import funnel
from vi_ext.checkpoint import CheckpointError
from vi_ext.fit import build
from vi_ext.fit.config import FitConfig
from vi_ext.fit.forms import (
    MARGIN,
    MAX_RACE_STEPS,
    MIN_RACE_STEPS,
    Entrant,
    race,
    race_steps,
    trimmed,
)
from vi_ext.fit.plan import Plan

#: VX_PROPERTY_EXAMPLES=N runs the generated-case tests below on N cases
LARGE = int(os.environ.get("VX_PROPERTY_EXAMPLES", "0"))


def test_race_steps_are_a_share_of_the_fit_bounded_both_ways():
    assert race_steps(20000) == MAX_RACE_STEPS
    assert race_steps(100000) == MAX_RACE_STEPS
    assert race_steps(16000) == 800
    assert race_steps(int(MIN_RACE_STEPS / 0.05)) == MIN_RACE_STEPS
    # shorter races mislead: at 200 steps the funnel's non-centered fit is still widening
    # its scales from the start's 0.1 while the centered one has settled in the neck
    assert race_steps(int(MIN_RACE_STEPS / 0.05) - 20) == 0


def test_the_funnel_is_fitted_non_centered_and_resumes_so(tmp_path):
    # the funnel: x | v ~ N(0, e^(v/2)); non-centered it is a standard Gaussian. The fit
    # races, then runs 100 steps (a callback stops it) and writes a checkpoint
    path = str(tmp_path / "funnel_nc.npz")
    first = vx.fit(funnel.model, num_steps=10000, key=0, progress=False, stopping=None,
                   checkpoint=path, checkpoint_every=100, callback_every=100,
                   callbacks=[lambda step, state, loss: step >= 100])
    assert first.start.noncentered == ("x",)
    assert first.start.reason.startswith("non-centered x from "), first.start.reason
    # the race is charged to the start: both forms' starts and 4 x 500 steps x 4 particles
    # (each form from its best start and from the runner-up)
    assert first.start.gradient_evaluations >= 4 * 500 * 4
    # the fitted model samples x_decentered and keeps x = e^(v/2) x_decentered, so draws
    # (res.sample) carry both
    tr = handlers.trace(handlers.seed(first.model, 1)).get_trace()
    assert tr["x_decentered"]["type"] == "sample" and tr["x"]["type"] == "deterministic"
    np.testing.assert_allclose(tr["x"]["value"], np.exp(tr["v"]["value"] / 2.0)
                               * tr["x_decentered"]["value"], rtol=1e-5)
    # its checkpoint resumes in its form (the full-rank guide's params have the same names
    # in both: the checkpoint records the form), and refuses the model as written
    again = vx.fit(funnel.model, num_steps=10000, key=0, progress=False, stopping=None,
                   resume=path, callback_every=1,
                   callbacks=[lambda step, state, loss: True])
    assert again.start.noncentered == ("x",) and len(again.losses) == 101
    np.testing.assert_array_equal(again.losses[:100], first.losses)
    with pytest.raises(CheckpointError, match="non-centered at x; this fit runs it as written"):
        vx.fit(funnel.model, num_steps=10000, key=0, progress=False, stopping=None,
               resume=path, reparam=None)


def _pinned(y=None):
    # four groups, each pinned down by 20 precise observations: the centered form is the
    # near-Gaussian one here, and the race keeps it
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(5.0))
    with numpyro.plate("groups", 4):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
    with numpyro.plate("obs", 80):
        numpyro.sample("y", dist.Normal(theta[np.arange(80) % 4], 0.1), obs=y)


def test_a_model_pinned_by_its_data_stays_as_written():
    y = np.repeat(np.array([[-2.0, 0.5, 1.0, 3.0]]), 20, 0).ravel() + \
        0.1 * np.random.default_rng(0).normal(size=80)
    fitter = build(_pinned, num_steps=10000, key=0, y=y)
    assert fitter.start.noncentered == (), fitter.start.reason
    assert fitter.start.reason.startswith("as written from "), fitter.start.reason
    assert "non-centered theta from" in fitter.start.reason  # it raced, and lost


def test_no_race_of_forms_for_a_model_with_no_hierarchy_or_reparam_none_and_no_race_for_a_guide_of_ones_own():  # noqa: E501
    def flat(y=None):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(z, 1.0), obs=y)

    # only the starts race: the chosen one against the runner-up, as written
    reason = build(flat, num_steps=10000, key=0, y=0.3).start.reason
    assert "non-centered" not in reason and reason.count("as written from") == 2, reason
    written = build(funnel.model, num_steps=10000, key=0, reparam=None)
    assert written.start.noncentered == () and "non-centered" not in written.start.reason
    assert "race" not in build(flat, num_steps=5000, key=0, y=0.3).start.reason
    # a Start given by the caller is used as given, its runner-up not raced
    given = vx.start.choose_start(flat, key=0, y=0.3)
    assert given.runner_up is not None
    fitted = build(flat, start=given, num_steps=10000, key=0, y=0.3).start
    assert fitted.name == given.name and "race" not in fitted.reason
    own = build(funnel.model, guide=AutoNormal(funnel.model), num_steps=10000, key=0)
    assert own.start is None and not hasattr(own.model, "__wrapped__")


def test_a_bad_reparam_is_named():
    with pytest.raises(vx.ArgumentError) as e:
        vx.fit(funnel.model, reparam="noncentered", progress=False)
    assert e.value.argument == "reparam"


def test_a_resumed_fit_continues_in_its_checkpoints_form(tmp_path):
    # written by a fit too short to race (as written); resumed with num_steps that would
    # race (and choose the non-centered form): it stays as written and continues exactly
    path = str(tmp_path / "funnel.npz")
    first = vx.fit(funnel.model, num_steps=50, key=0, progress=False, stopping=None,
                   checkpoint=path)
    assert first.start.noncentered == ()
    res = vx.fit(funnel.model, num_steps=10000, key=0, progress=False, resume=path,
                 stopping=None, callbacks=[lambda step, state, loss: True], callback_every=1)
    assert res.start.noncentered == ()
    assert res.start.reason.startswith("as written: the form of the checkpoint resumed")
    np.testing.assert_array_equal(res.losses[:50], first.losses)
    assert len(res.losses) == 51


def test_a_model_the_dependency_analysis_cannot_trace_is_fitted_as_written(monkeypatch):
    import importlib

    forms = importlib.import_module("vi_ext.fit.forms")

    def fails(*args, **kwargs):
        raise NotImplementedError("no provenance rule for this primitive")

    monkeypatch.setattr(forms, "hierarchical_sites", fails)
    with pytest.warns(RuntimeWarning, match="dependency analysis could not trace.*NotImpl"):
        f = build(funnel.model, num_steps=10000, key=0)
    assert f.start.noncentered == () and "non-centered" not in f.start.reason


def test_one_diverging_draw_does_not_decide_a_lap():
    # a lap's losses around 130 with one draw at 6e9 (a Lorenz path that diverged): the
    # trimmed mean and its standard error are those of the bulk
    rng = np.random.default_rng(0)
    losses = 130.0 + rng.normal(0.0, 2.0, 500)
    spiked = losses.copy()
    spiked[123] = 6e9
    spiked[7] = np.nan  # a rejected step's loss is left out
    lap = trimmed(spiked)
    assert abs(lap.mean - 130.0) < 4 * 2.0 / np.sqrt(500)
    assert 0.5 * 2.0 / np.sqrt(500) < lap.se < 1.5 * 2.0 / np.sqrt(500)
    # and the trimmed mean of symmetric noise is its mean, within its standard error
    plain = trimmed(losses)
    assert abs(plain.mean - losses.mean()) < plain.se
    assert trimmed(np.array([1.0, np.inf])).mean == float("inf")


class _Fake(NamedTuple):
    # what race() reads of a Fitter: its state, its chunks (here: given losses), its start
    init_state: Any
    run_chunk: Any
    start: Any
    objective: Any = vx.objectives.elbo(1)


def _form(runs, sites=()):
    """The entrants of one form, one per (start name, losses): one chunk function shared by
    them (a form compiles once; its starts are initial states), here reading the losses
    from the state, an offset into all of them."""
    losses = np.concatenate([x for _, x in runs])

    def run_chunk(state, active):
        n = int(np.sum(active))
        return state + n, jnp.asarray(losses[state:state + n])

    offsets = np.cumsum([0] + [len(x) for _, x in runs])
    return [Entrant(_Fake(int(o), run_chunk, vx.start.Start(
        name, {}, {}, {}, {}, 100, 10, 1.0, f"{name} chosen")), sites)
        for (name, _), o in zip(runs, offsets, strict=False)]


def test_the_race_keeps_the_first_entrant_unless_another_beats_it_by_the_margin():
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, 1.0, 400)
    plan = Plan(FitConfig(num_steps=8000))
    # the runner-up start of the non-centered form is 30 nats lower: it wins, and its start
    # is charged the laps of all four and the starts of the two forms
    field = _form([("saa_median", 130 + noise), ("saa_uniform", 131 + noise)]) + \
        _form([("saa_median", 125 + noise), ("saa_uniform", 100 + noise)], ("u",))
    won = race(field, plan, 400)
    assert won.start.name == "saa_uniform" and won.start.noncentered == ("u",)
    assert won.start.reason.startswith("non-centered u from saa_uniform: loss 99.9")
    assert won.start.gradient_evaluations == 2 * 100 + 4 * 400 * 1
    # lower, but within the margin (2 standard errors of the difference): the first stays
    close = _form([("saa_median", 130 + noise), ("saa_uniform", 129.95 + noise)])
    assert race(close, plan, 400).start.reason.startswith("as written from saa_median")


@settings(max_examples=LARGE or 25, deadline=None)
@given(offsets=st.lists(st.floats(-5.0, 5.0), min_size=1, max_size=4),
       spread=st.floats(0.1, 3.0), seed=st.integers(0, 2**16))
def test_the_race_runs_the_first_unless_the_lowest_beats_it_by_two_standard_errors(
        offsets, spread, seed):
    # any field: the winner is the first entrant, or the entrant of the lowest trimmed
    # mean when that is below the first's by MARGIN standard errors of the difference
    rng = np.random.default_rng(seed)
    runs = [(f"s{i}", 100.0 + o + spread * rng.standard_t(3, 200))
            for i, o in enumerate(offsets)]
    field = _form(runs)
    laps = [trimmed(x[100:]) for _, x in runs]
    won = race(field, Plan(FitConfig(num_steps=4000)), 200)
    low = min(range(len(laps)), key=lambda i: laps[i].mean)
    beats = laps[low].mean + MARGIN * np.hypot(laps[0].se, laps[low].se) < laps[0].mean
    assert won.start.name == runs[low if beats else 0][0]
    assert won.start.gradient_evaluations == 100 + len(runs) * 200
