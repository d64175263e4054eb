"""Shared fixtures: fits are compiled once per session and reused across tests."""

import os
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")
warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import pytest  # noqa: E402

import vi_ext as vx  # noqa: E402


def gaussian_model(x=None):
    """z ~ N(0, 1); x ~ N(z, 1): the exact posterior is N(x/2, 1/2)."""
    z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def gaussian_guide(x=None):
    m = numpyro.param("m", 0.3)
    s = numpyro.param("s", 0.8, constraint=dist.constraints.positive)
    numpyro.sample("z", dist.Normal(m, s))


@pytest.fixture(scope="session")
def eight_schools_fit():
    from models import eight_schools

    return vx.fit(eight_schools.model, num_steps=4000, key=0, progress=False,
                  **eight_schools.data())


@pytest.fixture(scope="session")
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture(autouse=True)
def _numpy_seed():
    np.random.seed(0)


EIGHT_SCHOOLS_NUTS = os.path.join(os.path.dirname(__file__), "fixtures", "eight_schools_nuts.json")


def assert_matches_eight_schools_nuts(r) -> None:
    """A refine result's means of mu, tau and theta agree with the long reference NUTS run
    (the same posterior in either parameterization) within 4 combined Monte Carlo standard
    errors, and its chains mixed (split R-hat < 1.05)."""
    import json

    with open(EIGHT_SCHOOLS_NUTS) as f:
        ref = json.load(f)["noncentered"]["sites"]
    assert r.max_rhat < 1.05
    for name in ("mu", "tau", "theta"):
        got = r.samples[name].mean(0)
        mcse = r.samples[name].std(0) / np.sqrt(r.ess[name])
        want, ref_se = np.asarray(ref[name]["mean"]), np.asarray(ref[name]["mcse_mean"])
        assert np.all(np.abs(got - want) < 4 * np.hypot(mcse, ref_se)), name
