"""The primitives of the objective language.

An objective is a Python function ``program(model, guide, *args, **kwargs) -> estimate``
written with these primitives; its expected value is the objective, and
:func:`vi_ext.estimate` derives an unbiased estimator of that value's gradient.

- :func:`sim` runs the guide, drawing every latent site with its gradient strategy, and returns
  the choices and the guide's log density at them.
- :func:`density` is the model's log joint at given choices (observations included).
- :func:`particles` runs a sub-program ``K`` times independently, vectorized.
- :func:`logmeanexp` is ``log(mean(exp(x)))``, computed stably.

Example (the ELBO, E_q[log p(x, z) - log q(z)])::

    from vi_ext.program import sim, density, expectation

    @expectation
    def my_elbo(model, guide, *args, **kwargs):
        q = sim(guide, *args, **kwargs)
        return density(model, q, *args, **kwargs) - q.log_density

Reference for the semantics: Lew et al., "ADEV: Sound Automatic Differentiation of Expected
Values of Probabilistic Programs", POPL 2023; Becker et al., "Probabilistic Programming with
Programmable Variational Inference", PLDI 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.primitives import Messenger

from vi_ext.errors import SiteError
from vi_ext.estimators.base import Site, is_strategy
from vi_ext.estimators.defaults import default_strategy
from vi_ext.program.context import _STACK, Frame, current_frame
from vi_ext.program.enumerate import check_leaves, expected_log_prob, summed_log_density
from vi_ext.program.enumerate import run as run_enumerated
from vi_ext.program.records import LogMeanExpRecord
from vi_ext.program.sites import sample_sites, site_log_prob
from vi_ext.sharding import constrain_particles


class Choices(NamedTuple):
    """The result of :func:`sim`.

    Attributes:
        values: latent site name -> value drawn by the guide.
        log_density: log q(values), the guide's log density at its own draws (a scalar).
        site_log_densities: site name -> that site's (scaled, summed) log density.
        subsamples: plate name -> the indices a subsampling plate of the guide drew
            (``plate(name, N, subsample_size=B)``); :func:`density` gives the model's plate
            of that name the same indices, as NumPyro's ``replay`` does.
        enumerated: site name -> the guide's distribution at a site drawn with
            ``local_enum()``: its value in ``values`` is a placeholder, ``log_density``
            holds E_q[log q] for it, and :func:`density` takes the model's expectation over
            it position by position.
    """

    values: dict[str, jax.Array]
    log_density: jax.Array
    site_log_densities: dict[str, jax.Array] = {}
    subsamples: dict[str, jax.Array] = {}
    enumerated: dict[str, Any] = {}


class ReplayPlates(Messenger):
    """Give each subsampling plate named in ``subsamples`` those indices instead of new ones."""

    def __init__(self, fn: Callable | None, subsamples: Mapping[str, jax.Array]):
        self.subsamples = subsamples
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "plate" and msg["name"] in self.subsamples and msg["value"] is None:
            msg["value"] = self.subsamples[msg["name"]]


class StrategyMessenger(Messenger):
    """Draws each latent guide site with its strategy (per-call choice, guide choice, default)."""

    def __init__(self, fn: Callable, frame: Frame, lenient: bool = False):
        self.frame = frame
        # lenient: sites with no usable strategy are left to NumPyro's sampler (parameter
        # initialization runs guides this way: wake-sleep guides need no strategy at all)
        self.lenient = lenient
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or msg.get("is_observed") or msg["value"] is not None:
            return
        name = msg["name"]
        site = Site(
            name=name,
            fn=msg["fn"],
            sample_shape=tuple(msg["kwargs"].get("sample_shape", ()) or ()),
            infer=dict(msg.get("infer") or {}),
        )
        strategy = self.frame.estimators.get(name) or site.infer.get("estimator")
        if strategy is None:
            if self.lenient and not getattr(site.fn, "has_rsample", False):
                return
            strategy = default_strategy(site)
        elif not is_strategy(strategy):
            raise SiteError(
                name,
                f"the estimator {strategy!r} does not follow the strategy protocol (a `name` "
                "string and a `sample(site, key)` method); build one with a factory of "
                "vx.estimators.",
            )
        self.frame.visited_sites.add(name)
        key = self.frame.next_key()
        if name in self.frame.overrides:
            # a re-run of the program for a continuation: the value is fixed
            msg["value"] = self.frame.overrides[name]
            return
        msg["value"] = strategy.sample(site, key)
        if getattr(strategy, "stop_guide_params", False):
            msg["infer"] = {**(msg.get("infer") or {}), "_vx_stop_params": True}
        if getattr(strategy, "local_enumeration", False):
            msg["infer"] = {**(msg.get("infer") or {}), "_vx_local_enum": True}
            self.frame.local_enum_sites.add(name)


def sim(guide: Callable, *args: Any, **kwargs: Any) -> Choices:
    """Run the guide once; every latent site is drawn with its gradient strategy.

    Args:
        guide: a NumPyro guide (any autoguide or hand-written function).
        *args: the guide's positional arguments.
        **kwargs: the guide's keyword arguments.

    Returns:
        :class:`Choices` with the latent values and log q(values).
    """
    frame = current_frame("sim")
    fn = handlers.substitute(guide, data=frame.params)
    fn = StrategyMessenger(fn, frame)
    fn = handlers.seed(fn, rng_seed=frame.next_key())
    trace = handlers.trace(fn).get_trace(*args, **kwargs)
    values = {s["name"]: s["value"] for s in sample_sites(trace, observed=False)}
    enumerated = {s["name"]: s["fn"] for s in sample_sites(trace, observed=False)
                  if (s.get("infer") or {}).get("_vx_local_enum")}
    if enumerated:
        check_leaves(handlers.substitute(guide, data=frame.params), trace, enumerated,
                     frame.next_key(), *args, **kwargs)
    per_site = {}
    for s in sample_sites(trace, observed=False):
        if s["name"] in enumerated:
            per_site[s["name"]] = expected_log_prob(s)
            continue
        if (s.get("infer") or {}).get("_vx_stop_params"):
            # sticking the landing: log q's parameters are constants, the draw is not
            s = {**s, "fn": jax.tree_util.tree_map(jax.lax.stop_gradient, s["fn"])}
        per_site[s["name"]] = site_log_prob(s)
    log_q = sum(per_site.values(), jnp.zeros(()))
    subsamples = {s["name"]: s["value"] for s in trace.values()
                  if s["type"] == "plate" and s["args"][1] is not None
                  and s["args"][0] != s["args"][1]}
    return Choices(values, log_q, per_site, subsamples, enumerated)


def density(
    model: Callable, choices: Choices | Mapping[str, Any], *args: Any, **kwargs: Any
) -> jax.Array:
    """The model's log joint density log p(x, z) at latent values ``choices``.

    Observed sites contribute their likelihood; plate subsampling scales apply. Model sites
    marked ``infer={"enumerate": "parallel"}`` that ``choices`` lacks are summed out exactly,
    plate by plate (:mod:`vi_ext.program.enumerate`); for guide sites drawn with
    ``local_enum()`` the model's factors that depend on them are averaged under the guide's
    probabilities, position by position.

    Args:
        model: a NumPyro model.
        choices: the result of :func:`sim`, or a dict site name -> value.
        *args: the model's positional arguments.
        **kwargs: the model's keyword arguments (observations included).

    Raises:
        SiteError: the model samples a latent site that ``choices`` lacks (and that is not
            marked for enumeration), a value's shape does not match the model's distribution
            at that site, or an enumerated site cannot be summed out.
    """
    frame = current_frame("density")
    values = dict(choices.values if isinstance(choices, Choices) else choices)
    expected = dict(choices.enumerated) if isinstance(choices, Choices) else {}
    for name in expected:  # local_enum() sites: their placeholder values are not used
        values.pop(name)
    fn = handlers.substitute(model, data=frame.params)
    if isinstance(choices, Choices) and choices.subsamples:
        fn = ReplayPlates(fn, choices.subsamples)
    fn = handlers.condition(fn, data=values)
    trace, etrace, dims = run_enumerated(fn, values, frame.next_key(), args, kwargs,
                                         also=tuple(expected))
    if etrace is not None:  # enumerated sites, summed out (or averaged) plate by plate
        return summed_log_density(etrace, dims, values, expected)
    total = jnp.zeros(())
    for s in sample_sites(trace):
        name = s["name"]
        if name in values:
            total = total + site_log_prob(s, check_shape=True)
        elif s.get("is_observed"):
            total = total + site_log_prob(s)
        else:
            raise SiteError(
                name,
                "the model samples this latent site but the guide does not provide it. Add "
                f"numpyro.sample('{name}', ...) to the guide, or use an autoguide "
                "(guide=None builds AutoNormal).",
            )
    return total


def particles(num_particles: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` ``num_particles`` times independently, vectorized.

    Each run draws its own random keys; outputs are stacked along a new leading axis of size
    ``num_particles``. Estimates that combine the runs (a mean, :func:`logmeanexp`) stay
    differentiable through every particle.

    Args:
        num_particles: K >= 1.
        fn: the sub-program to repeat.
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"particles(): num_particles must be an int >= 1, got {num_particles!r}")
    parent = current_frame("particles")
    keys = jax.random.split(parent.next_key(), num_particles)
    if parent.depth == 0:
        # outermost particles only: fit(devices=...) may shard them across devices
        keys = constrain_particles(keys)
    parent.num_particle_calls += 1
    weights = parent.particle_weights
    if weights is None or weights.shape != (num_particles,):
        weights = jnp.ones((num_particles,))
    children: list[Frame] = []

    def one(key, weight):
        child = parent.child(key, tangent_scale=weight)
        with child:
            out = fn(*args, **kwargs)
        children.append(child)
        return out, child.records

    outs, records = jax.vmap(one)(keys, weights)
    for child in children[-1:]:
        parent.visited_sites |= child.visited_sites
        parent.path_sites.update(child.path_sites)
        parent.local_enum_sites |= child.local_enum_sites
    parent.records.extend(records)
    return outs


def logmeanexp(x: jax.Array, axis: int = 0) -> jax.Array:
    """log(mean(exp(x))) along ``axis``, computed stably with logsumexp.

    Inside a program it also records its input, so that leave-one-out baselines
    (``reinforce(baseline="loo")``) can form each particle's learning signal.
    """
    x = jnp.asarray(x)
    if _STACK and axis == 0 and x.ndim == 1:
        _STACK[-1].records.append(LogMeanExpRecord(x))
    return logsumexp(x, axis=axis) - jnp.log(x.shape[axis])
