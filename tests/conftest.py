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
