"""Where the default fit starts and in which form of the model, decided by a short race:
the model as written or with its hierarchical location-scale latents non-centered, each
from its best start and from the runner-up.

A latent z ~ F(loc, scale) whose location or scale depends on other latents
(:func:`vi_ext.reparam.hierarchical_sites`) can be sampled as written or non-centered,
z = loc + scale * z', z' ~ F(0, 1) (:func:`vi_ext.reparam.noncentered`): the same posterior,
another geometry. A Gaussian guide fits one far better than the other, and which one depends
on the data (centered eight schools is a funnel, its non-centered form near-Gaussian; with
many observations per group the centered form is the easy one; a state-space model's
states, drawn in a ``scan`` body, non-centered are the shooting form of its path).

``vx.fit(model)`` (``start="auto"``, the default guide) builds the default fit of each form
(``reparam="auto"``; with ``reparam=None`` the model as written only), each from its own
chosen start (:func:`vi_ext.start.choose_start`) and from that choice's runner-up (the same
compiled program, another initial state), runs each for ``k`` steps (:func:`race`), and keeps
the model as written from its chosen start unless another entrant's loss (the negative ELBO,
in nats, comparable between the forms: both bound the same evidence; a trimmed mean,
:func:`trimmed`) over the second half of the race is lower by at least :data:`MARGIN`
standard errors; then the lowest. The chosen fit then starts again from step 0 (the race's
steps are charged to its start, not added to its losses), so a fit is the same whether or
not it raced. ``k`` is :func:`race_steps`: 5% of ``num_steps``, at most 1000; no race below
500. A resumed fit does not race: it continues in the form its checkpoint was written in
(:func:`resumed`), whatever a race would say at its new ``num_steps``.

Why a race and not the start's cheap score: the start's candidates are mean-field Gaussians
fitted for 300 steps, and their ELBO prefers the centered funnel's neck (eight schools:
-40.4 as written against -48.4 non-centered), while the full-rank fits that follow end 1.1
nats the other way (-32.7 against -31.5) and 8x closer to the posterior means. A thousand
steps of the fit itself already separate the forms by 2-5 nats on the suite's hierarchical
models (standard errors 0.02-0.06). Why not learn a partial centering during the fit
(:func:`vi_ext.reparam.learned_centering`): where the best centering is 0 or 1 (Neal's
funnel, a banana) its logit drifts at every step, and no test can say the fit converged.
Why the runner-up start too: the same mean-field score misjudges where a fit ends when the
posterior's main mode is strongly correlated. On the Lorenz bridge (non-centered) the start
scored -166.9 nats ended in the mode that calls the observations noise (loss 133 at the
race, 125 at the end), the runner-up scored -177.6 in the mode that explains them (100 at
the race, 58 at the end).

Reference:
    Papaspiliopoulos, Roberts, Skold. A general framework for the parametrization of
    hierarchical models. Statistical Science 2007.
    Gorinova, Moore, Hoffman. Automatic Reparameterisation of Probabilistic Programs.
    ICML 2020.
    Tukey, McLaughlin. Less vulnerable confidence and significance procedures for location
    based on a single sample: trimming/winsorization 1. Sankhya A 1963.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from vi_ext.fit.plan import Plan
from vi_ext.reparam import hierarchical_sites

#: the race's steps per form: this share of num_steps, at most MAX_RACE_STEPS; no race
#: below MIN_RACE_STEPS
RACE_SHARE, MAX_RACE_STEPS, MIN_RACE_STEPS = 0.05, 1000, 500
#: an entrant must beat the first (as written, from the chosen start) by this many standard
#: errors of the difference to be run instead
MARGIN = 2.0
#: the share of a lap's losses left out at each end of its mean (:func:`trimmed`)
TRIM = 0.05


def race_steps(num_steps: int) -> int:
    """Steps each form runs in the race of a fit of ``num_steps`` (0: no race)."""
    steps = min(MAX_RACE_STEPS, int(RACE_SHARE * num_steps))
    return steps if steps >= MIN_RACE_STEPS else 0


class Lap(NamedTuple):
    """One entrant's run in the race: the trimmed mean loss over the second half of its steps
    and the standard error of that mean (over its finite losses; :func:`trimmed`)."""

    mean: float
    se: float


def lap(fitter: Any, plan: Plan, steps: int) -> Lap:
    """Run ``fitter`` (a :class:`~vi_ext.fit.fitter.Fitter` without streamed data) for
    ``steps`` steps from its initial state, in the chunks of ``plan`` (the program its
    loop then reuses); its loss over the second half."""
    state, done, losses = fitter.init_state, 0, []
    while done < steps:
        n = min(plan.chunk, steps - done)
        state, chunk_losses = fitter.run_chunk(state, plan.active(n))
        losses.append(np.asarray(jax.device_get(chunk_losses))[:n])
        done += n
    return trimmed(np.concatenate(losses)[steps // 2:])


def trimmed(losses: np.ndarray, trim: float = TRIM) -> Lap:
    """The mean of the finite ``losses`` without their ``trim`` smallest and ``trim``
    largest shares, and its standard error from the winsorized variance (Tukey and
    McLaughlin 1963):

        se = s_w / ((1 - 2 g) sqrt(n)),   s_w^2: the variance of the losses with each
                                          trimmed one set to the nearest one kept.

    Why trimmed: a stochastic ELBO can meet, at a rare draw, a loss many orders above its
    scale (a Lorenz path that diverges: 6e9 against 130); one such draw in a lap decided a
    race by itself. The entrants' trimmed means are compared as the means were; an entrant
    whose losses are heavy-tailed throughout still shows it in its trimmed mean and its
    standard error.
    """
    x = np.sort(losses[np.isfinite(losses)])
    n = x.size
    if n < 2:
        return Lap(float("inf"), float("inf"))
    g = int(np.floor(trim * n))
    kept = x[g:n - g]
    winsorized = np.clip(x, kept[0], kept[-1])
    se = np.std(winsorized) / ((1.0 - 2.0 * g / n) * np.sqrt(n))
    return Lap(float(np.mean(kept)), float(se))


def form_name(sites: Sequence[str]) -> str:
    """"non-centered a, b" for the sites a form non-centers; "as written" for none."""
    return f"non-centered {', '.join(sites)}" if sites else "as written"


def resumed(fitters: Sequence[Any], sites: Sequence[str], info: dict) -> Any:
    """The fitter of (as written, non-centered at ``sites``) that wrote the checkpoint whose
    ``info`` is given, with its start saying so; None when neither did. The form is the one
    the checkpoint records (``info["noncentered"]``); a checkpoint written before forms were
    recorded is matched by its parameter names (which a full-rank guide's two forms share:
    such a checkpoint resumes as written)."""
    recorded = info.get("noncentered")
    for fitter, noncentered in zip(fitters, (False, True), strict=True):
        form = tuple(sites) if noncentered else ()
        if (tuple(recorded) == form if recorded is not None
                else sorted(fitter.constraints) == sorted(info.get("params", ()))):
            s = fitter.start
            return fitter._replace(start=s._replace(
                noncentered=form,
                reason=f"{form_name(form)}: the form of the checkpoint resumed; start: "
                       f"{s.reason}"))
    return None


class Entrant(NamedTuple):
    """A fit in the race: a :class:`~vi_ext.fit.fitter.Fitter` (from its start) and the
    sites it has non-centered (empty: the model as written)."""

    fitter: Any
    noncentered: tuple = ()

    def label(self) -> str:
        return f"{form_name(self.noncentered)} from {self.fitter.start.name}"


def entrants(fitter: Any, params_for: Any, sites: tuple = (), runner_up: bool = True
             ) -> list[Entrant]:
    """The entrants of one form: ``fitter`` from its chosen start and, if ``runner_up`` and
    the choice had one, from the runner-up (the same compiled chunk, another initial state:
    ``params_for(start)`` gives the guide's params there)."""
    out = [Entrant(fitter, sites)]
    second = fitter.start.runner_up
    if runner_up and second is not None:
        out.append(Entrant(fitter._replace(init_state=fitter.init_for(params_for(second)),
                                           start=second), sites))
    return out


def race_sites(model: Any, args: tuple, kwargs: dict, trace: dict) -> tuple:
    """:func:`~vi_ext.reparam.hierarchical_sites` of the model, or none (with a warning)
    when NumPyro's dependency analysis cannot trace it: the fit can do without."""
    try:
        return hierarchical_sites(model, args, kwargs, trace)
    except Exception as e:  # noqa: BLE001 - an analysis the fit can do without
        warnings.warn(f"reparam='auto': NumPyro's dependency analysis could not trace the "
                      f"model ({type(e).__name__}: {str(e)[:200]}); it is fitted as written. "
                      "Pass reparam=None to skip the analysis.", RuntimeWarning, stacklevel=5)
        return ()


def race(field: Sequence[Entrant], plan: Plan, steps: int) -> Any:
    """The fitter to run: each entrant runs :func:`lap`; the first (the model as written,
    from its chosen start) is run unless another's loss is lower by :data:`MARGIN`
    standard errors, and then the lowest. The chosen fitter's start
    (:class:`~vi_ext.start.Start`) is charged every start and every lap, names the
    non-centered sites (``Start.noncentered``) and says why in its reason."""
    t0 = time.perf_counter()
    laps = [lap(e.fitter, plan, steps) for e in field]
    a, i = laps[0], min(range(len(laps)), key=lambda j: laps[j].mean)
    b = laps[i]
    margin = MARGIN * float(np.hypot(a.se, b.se)) if np.isfinite(a.se + b.se) else 0.0
    if not b.mean + margin < a.mean:
        i = 0
    chosen = field[i]
    others = "; ".join(f"{e.label()} {laps[j].mean:.4g} +- {laps[j].se:.2g}"
                       for j, e in enumerate(field) if j != i)
    s = chosen.fitter.start
    reason = (f"{chosen.label()}: loss {laps[i].mean:.4g} +- {laps[i].se:.2g}, against "
              f"{others}, over steps {steps // 2}-{steps} of a {steps}-step race; start: "
              f"{s.reason}")
    # each form chose its start once (a runner-up came from the same choice)
    chosen_once = {id(e.fitter.run_chunk): e.fitter.start for e in field}.values()
    particles = chosen.fitter.objective.num_particles
    start = s._replace(
        noncentered=chosen.noncentered,
        seconds=sum(c.seconds for c in chosen_once) + time.perf_counter() - t0,
        gradient_evaluations=sum(c.gradient_evaluations for c in chosen_once)
        + len(field) * steps * particles,
        density_evaluations=sum(c.density_evaluations for c in chosen_once),
        reason=reason, runner_up=None)
    return chosen.fitter._replace(start=start)
