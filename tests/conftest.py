"""Shared fixtures: fits are compiled once per session and reused across tests.

Compiled programs are shared too: every process of the run (both xdist workers, the
notebooks' kernels, the subprocesses some tests start) uses one JAX compilation cache,
a directory for this run only. Most tests fit small models of the same shapes; each fit
builds new Python closures, which JAX's in-memory cache cannot recognize, while the
persistent cache recognizes the compiled program itself: a repeated fit of the same model
costs 0.2 s instead of 1.2 s of CPU (measured). Set VI_EXT_TEST_JAX_CACHE=0 to turn it off.
"""

import os
import shutil
import tempfile
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")
warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")


def _jax_cache_dir() -> str | None:
    if os.environ.get("VI_EXT_TEST_JAX_CACHE", "1") == "0":
        return None
    # xdist's workers are the controller's children: the controller's pid names the run
    run = os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()
    return os.path.join(tempfile.gettempdir(), f"vi_ext_test_jax_cache_{run}")


_CACHE = _jax_cache_dir()
if _CACHE and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # (environment variables, so that subprocesses and notebook kernels share it)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

# The suite is mostly XLA compilation (small programs, run for a few steps): LLVM's backend
# at optimization level 1 instead of XLA's default compiles faster (the default-fit test of
# eight schools 23.5 -> 19 s, a tutorial notebook 134 -> 113 s) and still runs the few
# loop-heavy tests at speed (level 0 compiled faster still but ran a Sinkhorn fit 4x
# slower: 16 s at level 1, 59 s at level 0). Only the tests' programs are built this way;
# benchmarks and users' runs keep XLA's defaults. VI_EXT_TEST_XLA_OPT=1 keeps them here too.
if os.environ.get("VI_EXT_TEST_XLA_OPT", "0") != "1" and \
        "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_backend_optimization_level=1").strip()

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


def pytest_collection_modifyitems(config, items):
    # the longest tests first (the notebooks, about a minute each): two workers then end
    # together instead of one finishing a notebook while the other waits
    items.sort(key=lambda item: "test_tutorials.py" not in item.nodeid)


def pytest_sessionfinish(session):
    # the controller (or a run without workers) removes this run's compilation cache
    if _CACHE and not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(_CACHE, ignore_errors=True)


def small_fit(**extra):
    """A 300-step fit of gaussian_guide to gaussian_model at x = 1.3 (key 7)."""
    return vx.fit(gaussian_model, guide=gaussian_guide, num_steps=300, key=7, progress=False,
                  x=1.3, **extra)


@pytest.fixture(scope="session")
def uninterrupted():
    """:func:`small_fit` run to its end without interruption (the reference for resumes)."""
    return small_fit()


@pytest.fixture(scope="session")
def small():
    """(X, y): the first 200 rows and 5 features of the logistic-regression data."""
    from models import logistic_regression as lr

    X, y = lr.data()["X"][:200, :5], lr.data()["y"][:200]
    return np.ascontiguousarray(X), y


def stream_fit(X, y, **kw):
    """A 60-step fit of the logistic regression streaming (X, y) in batches of 32."""
    from models import logistic_regression as lr

    kw = {"num_steps": 60, "batch_size": 32, "progress": False, "key": 3, "num_data": 200,
          **kw}
    return vx.fit(lr.model, data={"X": X, "y": y}, **kw)


@pytest.fixture(scope="session")
def eight_schools_fit():
    from models import eight_schools

    # fit's defaults: no num_steps, the stopping rule ends it
    return vx.fit(eight_schools.model, key=0, progress=False, **eight_schools.data())


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


# ---------------------------------------------------------------------------- boosting
# (compiled once per session, shared by tests/boosting/*)


@pytest.fixture(scope="session")
def boosted():
    """Four adaptive components on eight schools."""
    from boosting_targets import FAST

    from models import eight_schools

    return vx.boosting.boost(eight_schools.model, num_components=4, step_size="adaptive",
                             progress=False, settings=FAST, **eight_schools.data())


@pytest.fixture(scope="session")
def boosted_1d():
    """Four adaptive components on the 1-D two-mode model (steps are taken there)."""
    from boosting_targets import FAST

    from models import multimodal

    return vx.boosting.boost(multimodal.mixture_1d, num_components=4, step_size="adaptive",
                             progress=False, settings=FAST)
