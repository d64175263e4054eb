"""The posterior-quality reference suite: the models that the defaults of ``vx.fit`` are
measured on (benchmarks/posterior_quality.py), with where their reference moments come from.

``SUITE`` maps a name to a :class:`Target`. Reference moments (posterior mean and sd of every
scalar component of every latent site) are stored in tests/fixtures/posterior_suite/NAME.json;
scripts/nuts_reference.py writes them, by long NUTS runs or, for the targets whose moments
are known in closed form, exactly. :func:`reference` reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from models import (
    cox_process,
    eight_schools,
    funnel,
    item_response,
    logistic_regression,
    lorenz,
    multimodal,
    probit_regression,
    robust_regression,
    stochastic_volatility,
    time_series,
)

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                        "fixtures", "posterior_suite")


class Target(NamedTuple):
    """One posterior of the suite.

    Attributes:
        model: the NumPyro model.
        data: returns the model's keyword arguments (observations included).
        kind: what the posterior tests (one line, for tables).
        exact: None for a NUTS reference, else a function returning the exact moments
            ``{site: {"mean": ..., "sd": ...}}``.
        target_accept: NUTS's target acceptance probability for the reference.
        init: None (NumPyro's ``init_to_uniform`` per chain) or a function of the data
            returning initial values for NUTS (documented where used).
        reference_model: a model with the same posterior that NUTS samples instead (a
            non-centered form of a centered model, whose deterministic sites carry the
            latent sites of ``model``), or None for ``model`` itself.
    """

    model: Callable
    data: Callable[[], dict]
    kind: str
    exact: Callable[[], dict] | None = None
    target_accept: float = 0.9
    init: Callable[[dict], dict] | None = None
    reference_model: Callable | None = None


def _banana_moments() -> dict:
    # x1 ~ N(0, 4); x2 | x1 ~ N(x1^2 / 4 - 1, 1/4): E x2 = 4/4 - 1 = 0,
    # var x2 = var(x1^2) / 16 + 1/4 = 2 * 16 / 16 + 1/4
    return {"x1": {"mean": 0.0, "sd": 2.0}, "x2": {"mean": 0.0, "sd": 1.5}}


def _mixture_2d_moments() -> dict:
    w = np.array([0.3, 0.3, 0.4])
    m = np.array([[-3.0, 0.0], [3.0, 2.0], [0.0, -4.0]])
    s2 = np.array([0.7, 1.0]) ** 2
    mean = w @ m
    var = w @ (m**2) + s2 - mean**2
    return {"x": {"mean": mean.tolist(), "sd": np.sqrt(var).tolist()}}


def _lorenz_init(kw: dict) -> dict:
    # the chains start on the simulated path, in the mode that explains the data (see
    # scripts/nuts_reference.py): the reference is that mode's moments
    import jax.numpy as jnp

    path = jnp.asarray(lorenz.simulate()[0])
    return {"sigma": jnp.float32(1.0), "tau": jnp.float32(1.0), "u0": path[0], "u": path[1:]}


SUITE: dict[str, Target] = {
    "eight_schools_centered": Target(
        eight_schools.centered, eight_schools.data,
        "hierarchical, centered, HalfCauchy(5) scale",
        reference_model=eight_schools.noncentered),
    "eight_schools_noncentered": Target(
        eight_schools.noncentered, eight_schools.data,
        "hierarchical, non-centered, HalfCauchy(5) scale"),
    "eight_schools_wide_centered": Target(
        eight_schools.centered_wide, eight_schools.data,
        "hierarchical, centered, log_tau ~ N(5, 1)",
        reference_model=eight_schools.noncentered_wide),
    "eight_schools_wide_noncentered": Target(
        eight_schools.noncentered_wide, eight_schools.data,
        "hierarchical, non-centered, log_tau ~ N(5, 1)", target_accept=0.95),
    "logistic_regression": Target(
        logistic_regression.model, logistic_regression.data,
        "logistic regression, 31 latents, 569 rows"),
    "probit_regression": Target(
        probit_regression.model, probit_regression.data,
        "probit regression, 31 latents, 569 rows"),
    "time_series_centered_ar1": Target(
        time_series.model, time_series.data,
        "centered AR(1), NaN density for |phi| >= 1", target_accept=0.95,
        reference_model=time_series.noncentered),
    "stochastic_volatility": Target(
        stochastic_volatility.model, stochastic_volatility.data,
        "stochastic volatility, 103 latents", target_accept=0.95),
    "cox_process": Target(
        cox_process.model, cox_process.data,
        "log-Gaussian Cox process, centered GP, 42 latents", target_accept=0.95),
    "item_response": Target(
        item_response.model, item_response.data,
        "Rasch item response, 71 latents, 1000 answers"),
    "funnel": Target(funnel.model, funnel.data, "Neal's funnel, 10-D", exact=funnel.exact_moments),
    "banana": Target(multimodal.banana, multimodal.data, "banana (curved ridge), 2-D",
                     exact=_banana_moments),
    "mixture_2d": Target(multimodal.mixture_2d, multimodal.data,
                         "three separated modes, 2-D", exact=_mixture_2d_moments),
    "robust_regression": Target(
        robust_regression.model, robust_regression.data,
        "Student-t regression, heavy-tailed nu", target_accept=0.95),
    "lorenz_bridge": Target(
        lorenz.model, lorenz.data,
        "stochastic Lorenz-63 bridge, unknown noise scales, 122 latents",
        target_accept=0.95, init=_lorenz_init),
}


def reference(name: str) -> dict:
    """The stored reference of ``name``: ``{"meta": ..., "sites": {site: {"mean", "sd",
    ...}}}`` with flat lists per site."""
    with open(os.path.join(FIXTURES, f"{name}.json")) as f:
        return json.load(f)
