"""The objective language's promise, checked over generated programs.

    Any objective program the language accepts, with any per-site strategy mix, yields an
    unbiased estimate of the gradient of the program's expected value; what cannot be shown
    valid is refused with an error naming the site, the strategy and the reason.

Programs are drawn by hypothesis from a small grammar (:mod:`composition_cases`): one or two
``sim`` calls per scope; atoms ``lw`` (density - log_density), ``lp``, ``-lq``, the density
at a plain dict of a sim's values or at a mix of two sims' values, a draw's value itself,
constants, and for a hierarchical guide the log weight of ``marginal(guide, keep, M)``
(M in 0..1); combinators ``a*e1 + b*e2``, ``e1 * e2``, ``exp``/``square``/``tanh``,
``logmeanexp`` of two sub-expressions, and ``particles(K, body)`` (K in 1..3, nested up to
twice) reduced by ``logmeanexp``, ``mean`` or both. They run on seven small models
(Bernoulli; two dependent Bernoullis; a plate of three; Gaussian; a Gaussian chain z1 -> z2;
Bernoulli then Gaussian; a hierarchical guide u -> z), under an objective name drawn among
library names and others, with a strategy per guide site drawn among those defined for its
kind (Bernoulli: reinforce with no, "loo" or "average" baseline, enum, mvd, local_enum;
Normal: reparam, stl, dreg, the three reinforce, mvd).

For each case, either ``vx.estimate`` refuses with a :class:`vx.SiteError` whose message
names the site and its strategy, or the mean of N independent estimates of the value and of
every parameter's gradient (computed in float64) is within 4.5 standard errors of the exact
ones, which an evaluator independent of vi_ext computes (enumeration and Gauss-Hermite
quadrature over every draw of the program, in float64, differentiated with ``jax.grad``).
Where the quadrature is not accurate to a tenth of a standard error the case is discarded.

The default run (CI) checks 20 generated cases plus the known cases below, without
shrinking. The large setting, for a manual run, shrinks the first failure to a minimal program. It
takes hours, not minutes: most cases take about a second, but programs with mvd or enum on
several draws of several ``sim`` calls trace nested continuation re-runs, minutes a case
(measured 2026-11-30); split it over processes with ``VX_PROPERTY_SEED``::

    VX_PROPERTY_EXAMPLES=3000 JAX_PLATFORMS=cpu nice -n 10 .venv/bin/python -m pytest \\
        tests/program/test_composition_property.py -q -x -k generated

``VX_PROPERTY_SEED=n`` draws another stream of cases (to split a large run over processes);
``VX_PROPERTY_SHRINK=1`` turns shrinking on at any size; ``VX_PROPERTY_FLOAT32=1`` computes
the estimates in float32, JAX's default, instead. ``VX_PROPERTY_SURVEY=out.jsonl``
turns the generated test into a survey: it asserts nothing and writes one line per case
(the program, and whether it was refused acceptably, refused wrongly, estimated without bias
or biased, with the refusal's message or the z-scores), to see every failure of a run.
"""

from __future__ import annotations

import json
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from composition_cases import (
    BERN,
    BERN_CHAIN,
    BERN_PLATE,
    GAUSS,
    GAUSS_CHAIN,
    HIER,
    STRATEGIES,
    Block,
    Case,
    LogMeanExp2,
    LogP,
    LogW,
    MargLogW,
    Reduce,
    Unary,
    Value,
    cases,
    compile_program,
    exact_value_and_grad,
    run_once,
    scale,
    show,
)
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import seed as hypothesis_seed

import vi_ext as vx
from vi_ext.program import expectation, value_and_grad_fn

#: independent estimates per case, vectorized in one compiled call
N = 4000
#: a mean this many standard errors from the exact value fails (two-sided p ~ 7e-6)
N_SE = 4.5
#: estimates are computed in float64 (``VX_PROPERTY_FLOAT32=1``: in float32), so that rounding
#: does not blur the comparison of deterministic estimates (enumeration) of programs whose
#: gradient is a near-cancellation of large terms; the allowance below is still float32's
X64 = os.environ.get("VX_PROPERTY_FLOAT32") != "1"
#: float32 rounding of an estimate, relative to its magnitude (2^7 accumulated ulps), the
#: only allowance beside the standard error; it matters only for zero-variance estimates
ROUNDING = 2.0**-16
#: for an exact value of zero and an estimator of zero variance
ZERO = 1e-6
#: a case is checked only where the reference's quadrature error bound is below this share
#: of the standard error (quadrature converges slowly where the program is near a step or a
#: kink on the scale of the draws; such cases are discarded, not judged)
REFERENCE_SHARE = 0.1

EXAMPLES = int(os.environ.get("VX_PROPERTY_EXAMPLES", "20"))
SHRINK = EXAMPLES > 100 or os.environ.get("VX_PROPERTY_SHRINK") == "1"
SURVEY = os.environ.get("VX_PROPERTY_SURVEY")
#: another stream of generated cases (for runs split over processes); unset: the fixed one
SEED = os.environ.get("VX_PROPERTY_SEED")


def estimates(case: Case, n: int = N):
    """n independent (value, grads) of the case's program, from one compiled vmap."""
    mc = case.model
    objective = expectation(compile_program(case.program), name=case.name)
    f = value_and_grad_fn(objective, mc.model, mc.guide, estimators=case.estimators(),
                          **mc.kwargs)
    seed = zlib.crc32(repr(case).encode())  # a fixed seed per case
    with jax.enable_x64(X64):
        params = {k: jnp.asarray(np.asarray(v), float) for k, v in mc.params.items()}
        keys = jax.random.split(jax.random.PRNGKey(seed), n)
        return run_once(jax.vmap(f, in_axes=(None, 0)), params, keys)


def refusal_problem(case: Case, err: vx.SiteError) -> str | None:
    """Why a refusal is not acceptable (None when it is): it must name a guide site and the
    strategy that site was given, and the case must not be one that has to be accepted."""
    strategies = dict(case.mix)
    if case.must_accept:
        return "this program must be accepted"
    if err.site not in strategies or f"'{err.site}'" not in str(err):
        return f"the error does not name a guide site (sites: {sorted(strategies)})"
    name = STRATEGIES[strategies[err.site]]().name
    if name not in str(err):
        return f"the error does not name the site's strategy {name}()"
    return None


def compare(samples, exact: float, exact_error: float = 0.0) -> dict:
    """The mean of ``samples`` against ``exact`` (known within ``exact_error``): mean, se,
    z-score, and ok (within N_SE standard errors, plus the reference's error bound and
    float32 rounding)."""
    samples = np.asarray(samples, np.float64)
    mean = float(samples.mean())
    se = float(samples.std(ddof=1) / np.sqrt(len(samples)))
    err = mean - exact
    floor = ZERO + ROUNDING * max(abs(exact), float(np.abs(samples).mean())) + exact_error
    # an estimate with no variance beyond rounding is deterministic: exact or infinitely off
    z = err / se if se > floor else (0.0 if abs(err) <= floor else float("inf") * np.sign(err))
    ok = bool(np.all(np.isfinite(samples)) and abs(err) <= N_SE * se + floor)
    return {"mean": mean, "exact": exact, "se": se, "z": float(z), "ok": ok,
            "exact_error": exact_error, "trusted": exact_error <= REFERENCE_SHARE * se + ZERO}


def check(case: Case) -> dict:
    """Run a case: {"refused": error, "problem": why it is unacceptable or None}, or
    {"stats": {quantity: compare(...)}, "bad": [quantities off by more than N_SE SE],
    "untrusted": [quantities whose reference is not accurate enough to judge them]}."""
    try:
        values, grads = estimates(case)
    except vx.SiteError as err:
        return {"refused": err, "problem": refusal_problem(case, err)}
    exact = exact_value_and_grad(case.model, case.program)
    stats = {"value": compare(values, exact.value, exact.value_error)}
    for name, g in exact.grads.items():
        flat_g = np.asarray(grads[name]).reshape(len(values), -1)
        errors = np.reshape(exact.grad_errors[name], -1)
        for j, ex in enumerate(np.reshape(g, -1)):
            label = name if np.ndim(g) == 0 else f"{name}[{j}]"
            stats[label] = compare(flat_g[:, j], float(ex), float(errors[j]))
    return {"stats": stats, "bad": [k for k, v in stats.items() if not v["ok"]],
            "untrusted": [k for k, v in stats.items() if not v["trusted"]]}


def assert_valid(case: Case, out: dict | None = None) -> None:
    """The promise for one case (see the module docstring), given ``check(case)``."""
    out = check(case) if out is None else out
    if "refused" in out:
        assert out["problem"] is None, (
            f"{case}\nrefused: {out['refused']}\nnot acceptable: {out['problem']}")
        return
    assert not out["untrusted"], f"{case}: the reference is not accurate enough to judge it"
    table = "\n".join(f"  {k:8s} mean {v['mean']:+.5f} exact {v['exact']:+.5f} "
                      f"(+-{v['exact_error']:.0e}) se {v['se']:.1e} z {v['z']:+.1f}"
                      for k, v in out["stats"].items())
    assert not out["bad"], f"{case}\nbiased beyond {N_SE} SE in {out['bad']}:\n{table}"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None, database=None,
          phases=[Phase.explicit, Phase.generate] + ([Phase.shrink] if SHRINK else []),
          suppress_health_check=list(HealthCheck))
@hypothesis_seed(int(SEED or 0))
@given(case=cases())
def test_generated_programs_are_unbiased_or_refused_by_name(case):
    """Every generated program, with every strategy mix, is refused naming the site and the
    strategy, or estimated without bias (value and every parameter's gradient). Cases whose
    reference the quadrature cannot pin down to a tenth of a standard error are discarded."""
    out = check(case)
    if out.get("untrusted"):
        reject()
    if SURVEY:
        with open(SURVEY, "a") as f:
            f.write(json.dumps(verdict(case, out)) + "\n")
        return
    assert_valid(case, out)


def verdict(case: Case, out: dict) -> dict:
    """One line of a survey: the case, its outcome, and the refusal or the z-scores."""
    if "refused" in out:
        outcome = "refused" if out["problem"] is None else "refused wrongly"
        return {"case": repr(case), "outcome": outcome, "problem": out["problem"],
                "error": str(out["refused"])}
    return {"case": repr(case), "outcome": "biased" if out["bad"] else "unbiased",
            "bad": out["bad"], "z": {k: v["z"] for k, v in out["stats"].items()}}


# --------------------------------------------------------------------------------------------
# Known cases: programs that must hold whatever the generator draws

LW = Block(1, LogW(0))


def iwae(k: int) -> Reduce:
    """``logmeanexp(particles(k, lw))``."""
    return Reduce(k, LW, 1.0, 0.0)


#: IWAE with K = 2 written with two separate sims: logmeanexp of the two stacked log weights
TWO_SIM_IWAE = Block(2, LogMeanExp2(LogW(0), LogW(1)))
#: Renyi (alpha = 0.5): 1/(1-alpha) logmeanexp((1-alpha) log w), K = 3
RENYI = Block(0, Reduce(3, Block(1, scale(0.5, LogW(0))), 2.0, 0.0))
#: CUBO (n = 2): -logmeanexp(2 log w) / 2, K = 3
CUBO = Block(0, Reduce(3, Block(1, scale(2.0, LogW(0))), -0.5, 0.0))
#: IWHVI with one extra proposal draw: log p(x, z) - log q_hat(z), q_hat from marginal()
IWHVI = Block(0, MargLogW(1, ("z",)))

KNOWN = {
    # two sims of one site are two draws: each must be enumerated (or coupled) on its own
    "iwae2-two-sims-enum": Case(BERN, TWO_SIM_IWAE, "iwae2", (("z", "enum"),), True),
    "iwae2-two-sims-mvd": Case(BERN, TWO_SIM_IWAE, "iwae2", (("z", "mvd"),), True),
    # the ELBO is recognized by its structure, not its name
    "my-elbo-local-enum": Case(BERN_PLATE, LW, "my_elbo", (("z", "local_enum"),), True),
    # and a non-linear program named "elbo" is not the ELBO
    "elbo-named-square-local-enum": Case(BERN, Block(1, Unary("square", LogW(0))), "elbo",
                                         (("z", "local_enum"),)),
    # DReG on a guide whose second site depends on the first
    "my-iwae2-dreg-chain": Case(GAUSS_CHAIN, Block(0, iwae(2)), "my_iwae",
                                (("z1", "dreg"), ("z2", "dreg")), True),
    "my-renyi-dreg": Case(GAUSS, RENYI, "my_renyi", (("z", "dreg"),)),
    "my-cubo-dreg": Case(GAUSS, CUBO, "my_cubo", (("z", "dreg"),)),
    # leave-one-out baselines under programs that are not a plain logmeanexp
    "2-iwae4-loo": Case(BERN, Block(0, Reduce(4, LW, 2.0, 0.0)), "objective",
                        (("z", "reinforce_loo"),)),
    "iwae4-plus-mean-loo": Case(BERN, Block(0, Reduce(4, LW, 1.0, 0.3)), "objective",
                                (("z", "reinforce_loo"),)),
    # a control: a textbook estimator, unbiased today
    "control-iwhvi-reparam": Case(HIER, IWHVI, "my_iwhvi", (("u", "reparam"), ("z", "reparam")),
                                  True),
    # sticking the landing holds for the ELBO only, whatever the program is called
    "my-iwhvi-stl": Case(HIER, IWHVI, "my_iwhvi", (("u", "stl"), ("z", "stl"))),
    # found by the survey: z2's distribution is chosen from z1 by jnp.where, so a program
    # that uses z2's value depends on z1 (the dataflow through a selection's predicate)
    "value-of-a-dependent-draw-reinforce": Case(
        BERN_CHAIN, Block(0, Reduce(2, Block(1, Value(0, "z2")), 0.0, 1.0)), "elbo",
        (("z1", "reinforce"), ("z2", "reinforce")), True),
    # found by the survey: a score-function draw upstream of a draw that a continuation
    # strategy pins; the re-runs are weighted by q(pinned | upstream), so the upstream draw's
    # signal is each re-run's whole value
    "reinforce-upstream-of-mvd": Case(HIER, Block(1, LogP(0)), "elbo",
                                      (("u", "reinforce"), ("z", "mvd")), True),
    "reinforce-upstream-of-enum": Case(BERN_CHAIN, Block(1, LogP(0)), "elbo",
                                       (("z1", "reinforce"), ("z2", "enum")), True),
}


@pytest.mark.parametrize("case", list(KNOWN.values()), ids=list(KNOWN))
def test_known_compositions(case):
    """Each known case is estimated without bias, or (where not marked must_accept) refused
    naming the site and its strategy."""
    assert_valid(case)


# --------------------------------------------------------------------------------------------
# The reference evaluator itself


def test_exact_evaluator_matches_closed_forms():
    """The evaluator reproduces the Gaussian ELBO and the HVI bound of a hierarchical guide in
    closed form (quadrature), and a two-sample Bernoulli IWAE summed by hand over the four
    joint draws (enumeration), with their gradients."""
    x = GAUSS.kwargs["x"]

    def elbo(p):  # z ~ N(theta, 1), x ~ N(z, 1), q = N(m, s^2)
        m, s, t = p["m"], p["s"], p["theta"]
        e_log_p = -jnp.log(2 * jnp.pi) - 0.5 * ((m - t) ** 2 + s**2 + (x - m) ** 2 + s**2)
        return e_log_p + 0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2)

    with jax.enable_x64(True):
        params = {k: jnp.asarray(np.asarray(v), jnp.float64) for k, v in GAUSS.params.items()}
        value, grads = jax.value_and_grad(elbo)(params)
    got_value, got_grads, value_error, _ = exact_value_and_grad(GAUSS, LW)
    assert value_error < 1e-10  # the integrand is quadratic: every rule is exact
    np.testing.assert_allclose(got_value, value, rtol=1e-10)
    for k in params:
        np.testing.assert_allclose(got_grads[k], grads[k], rtol=1e-9, atol=1e-12)

    x = HIER.kwargs["x"]

    def hvi(p):  # u ~ N(mu, su^2), z | u ~ N(u, sz^2): z ~ N(mu, su^2 + sz^2)
        m, s2, t = p["mu"], p["su"] ** 2 + p["sz"] ** 2, p["theta"]
        e_log_p = -jnp.log(2 * jnp.pi) - 0.5 * ((m - t) ** 2 + s2 + (x - m) ** 2 + s2)
        return e_log_p + 0.5 * jnp.log(2 * jnp.pi * jnp.e * p["sz"] ** 2)

    with jax.enable_x64(True):
        params = {k: jnp.asarray(np.asarray(v), jnp.float64) for k, v in HIER.params.items()}
        value, grads = jax.value_and_grad(hvi)(params)
    got_value, got_grads, _, _ = exact_value_and_grad(HIER, Block(0, MargLogW(0, ("z",))))
    np.testing.assert_allclose(got_value, value, rtol=1e-10)
    for k in params:
        np.testing.assert_allclose(got_grads[k], grads[k], rtol=1e-9, atol=1e-12)

    x = BERN.kwargs["x"]

    def iwae2(p):
        def lw(z):
            lp = (z * jax.nn.log_sigmoid(p["theta"]) + (1 - z) * jax.nn.log_sigmoid(-p["theta"])
                  - 0.5 * (x - (2 * z - 1)) ** 2 - 0.5 * jnp.log(2 * jnp.pi))
            return lp - jnp.log(jnp.where(z == 1, p["phi"], 1 - p["phi"]))

        total = 0.0
        for z0 in (0.0, 1.0):
            for z1 in (0.0, 1.0):
                prob = jnp.where(z0 == 1, p["phi"], 1 - p["phi"]) * jnp.where(
                    z1 == 1, p["phi"], 1 - p["phi"])
                total = total + prob * (jnp.logaddexp(lw(z0), lw(z1)) - jnp.log(2.0))
        return total

    with jax.enable_x64(True):
        params = {k: jnp.asarray(np.asarray(v), jnp.float64) for k, v in BERN.params.items()}
        value, grads = jax.value_and_grad(iwae2)(params)
    for program in (TWO_SIM_IWAE, Block(0, iwae(2))):
        got_value, got_grads, _, _ = exact_value_and_grad(BERN, program)
        np.testing.assert_allclose(got_value, value, rtol=1e-12)
        for k in params:
            np.testing.assert_allclose(got_grads[k], grads[k], rtol=1e-10)


def test_show_prints_the_program():
    """Failure reports print programs readably."""
    assert show(TWO_SIM_IWAE) == "[q0, q1 = sim()] lme([lw(q0), lw(q1)])"
    assert show(Block(0, Reduce(4, LW, 1.0, 0.3))) == (
        "(1.0*lme(particles(4, [r0 = sim()] lw(r0))) + 0.3*mean(same))")
    assert show(CUBO) == "(-0.5*lme(particles(3, [r0 = sim()] 2.0*lw(r0))))"
