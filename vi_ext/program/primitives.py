"""The primitives of the objective language.

An objective is a Python function ``program(model, guide, *args, **kwargs) -> estimate``
written with these primitives; its expected value is the objective, and
:func:`vi_ext.estimate` derives an unbiased estimator of that value's gradient.

- :func:`sim` runs the guide, drawing every latent site with its gradient strategy, and returns
  the choices and the guide's log density at them. Every call is its own draw.
- :func:`density` is the model's log joint at given choices (observations included).
- :func:`particles` runs a sub-program ``K`` times independently, vectorized.
- :func:`logmeanexp` is ``log(mean(exp(x)))``, computed stably.

``sim`` and ``density`` also accept *generative objects*, objects with ``simulate(*args,
**kwargs) -> Choices`` and ``log_density(choices, *args, **kwargs)``, such as
:class:`vi_ext.program.Marginal`.

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

from vi_ext.errors import SiteError, require_int
from vi_ext.estimators.base import Draw, Site, as_draw, is_strategy
from vi_ext.estimators.defaults import default_strategy
from vi_ext.program.context import DrawInfo, Frame, TermInfo, active_frame, current_frame
from vi_ext.program.enumerate import expected_log_prob, log_density_terms
from vi_ext.program.enumerate import run as run_enumerated
from vi_ext.program.records import DrawRecord, LogMeanExpRecord, TermRecord
from vi_ext.program.sites import sample_sites, site_log_prob_array
from vi_ext.sharding import constrain_particles

sg = jax.lax.stop_gradient


class Choices(NamedTuple):
    """The result of :func:`sim`.

    Attributes:
        values: latent site name -> value drawn by the guide.
        log_density: log q(values), the guide's log density at its own draws (a scalar).
        site_log_densities: site name -> that site's (scaled, summed) log density.
        subsamples: plate name -> the indices a subsampling plate of the guide drew
            (``plate(name, N, subsample_size=B)``); :func:`density` gives the model's plate
            of that name the same indices, as NumPyro's ``replay`` does.
        enumerated: site name -> the guide's distribution at a site its strategy integrates
            (``local_enum()``): its value in ``values`` is a placeholder, ``log_density``
            holds E_q[log q] for it, and :func:`density` takes the model's expectation over
            it position by position.
        addresses: site name -> the address of this draw (see
            :mod:`vi_ext.program.context`).
    """

    values: dict[str, jax.Array]
    log_density: jax.Array
    site_log_densities: dict[str, jax.Array] = {}
    subsamples: dict[str, jax.Array] = {}
    enumerated: dict[str, Any] = {}
    addresses: dict[str, tuple] = {}


def is_generative(obj: Any) -> bool:
    """An object ``sim`` and ``density`` hand over to (``simulate`` and ``log_density``)."""
    return callable(getattr(obj, "simulate", None)) and callable(getattr(obj, "log_density",
                                                                         None))


class ReplayPlates(Messenger):
    """Give each subsampling plate named in ``subsamples`` those indices instead of new ones."""

    def __init__(self, fn: Callable | None, subsamples: Mapping[str, jax.Array]):
        self.subsamples = subsamples
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "plate" and msg["name"] in self.subsamples and msg["value"] is None:
            msg["value"] = self.subsamples[msg["name"]]


def site_plates(msg: dict) -> tuple:
    """The (name, dim, size) of the plates of a sample site, dims counted from the right."""
    return tuple((f.name, int(f.dim), int(f.size)) for f in msg.get("cond_indep_stack", ())
                 if f.dim is not None)


class StrategyMessenger(Messenger):
    """Draws each latent guide site with its strategy (per-call choice, guide choice, default).

    Args:
        fn: the guide.
        frame: the running frame.
        sim_address: the address of the ``sim`` call (a draw's address adds its site name).
        lenient: sites with no usable strategy are left to NumPyro's sampler (parameter
            initialization runs guides this way: wake-sleep guides need no strategy at all).
    """

    def __init__(self, fn: Callable, frame: Frame, sim_address: tuple = ("init",),
                 lenient: bool = False):
        self.frame = frame
        self.sim_address = tuple(sim_address)
        self.lenient = lenient
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or msg.get("is_observed") or msg["value"] is not None:
            return
        frame = self.frame
        name = msg["name"]
        address = self.sim_address + (name,)
        infer = dict(msg.get("infer") or {})
        site = Site(name=name, fn=msg["fn"],
                    sample_shape=tuple(msg["kwargs"].get("sample_shape", ()) or ()),
                    infer=infer, address=address, plates=site_plates(msg))
        strategy = frame.estimators.get(name) or infer.get("estimator")
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
        frame.info.visited_sites.add(name)
        key = frame.next_key()
        pinned = address in frame.overrides
        if pinned:  # a re-run of the program for a continuation: the value is fixed
            draw = Draw(frame.overrides[address])
            value = draw.value
        else:
            draw = as_draw(strategy.sample(site, key))
            value = frame.tag(draw.value, ("v", address))
        msg["value"] = value
        if draw.intermediates is not None:
            msg["intermediates"] = draw.intermediates
        msg["infer"] = {**infer, "_vx_address": address}
        frame.info.draws[address] = DrawInfo(site, strategy, draw, pinned, frame.path,
                                             self.sim_address)


def _scaled_params(params: Mapping[str, Any], scale: jax.Array) -> dict:
    """The parameters with their tangents multiplied by ``scale`` (values unchanged)."""
    return {k: sg(v) + scale * (v - sg(v)) for k, v in params.items()}


def sim(guide: Callable, *args: Any, **kwargs: Any) -> Choices:
    """Run the guide once; every latent site is drawn with its gradient strategy.

    Every call is its own draw, with its own address: two ``sim`` calls of one guide are two
    independent draws, each re-run, pinned or weighted on its own by its strategy.

    Args:
        guide: a NumPyro guide (any autoguide or hand-written function), or a generative
            object such as :class:`vi_ext.program.Marginal`.
        *args: the guide's positional arguments.
        **kwargs: the guide's keyword arguments.

    Returns:
        :class:`Choices` with the latent values and log q(values).
    """
    if is_generative(guide):
        return guide.simulate(*args, **kwargs)
    frame = current_frame("sim")
    address = frame.address("s")
    scale = frame.inputs.get(("scale", address))
    params = frame.params if scale is None else _scaled_params(frame.params, scale)
    fn = StrategyMessenger(handlers.substitute(guide, data=params), frame, address)
    fn = handlers.seed(fn, rng_seed=frame.next_key())
    trace = handlers.trace(fn).get_trace(*args, **kwargs)
    latent = [s for s in sample_sites(trace, observed=False)
              if (s.get("infer") or {}).get("_vx_address")]
    values = {s["name"]: s["value"] for s in latent}
    draws = {s["name"]: frame.info.draws[s["infer"]["_vx_address"]] for s in latent}
    stopped = [n for n, d in draws.items() if not d.pinned and d.draw.stop_params]
    replay = None
    if stopped:
        # log q at the draws with the guide's parameters held constant, the draws (and so
        # the values upstream of each site) live
        still = jax.tree_util.tree_map(sg, frame.params)
        again = handlers.condition(handlers.substitute(guide, data=still), data=values)
        with handlers.block():
            replay = handlers.trace(handlers.seed(again, rng_seed=frame.next_key())
                                    ).get_trace(*args, **kwargs)
    per_site, enumerated, addresses = {}, {}, {}
    for s in latent:
        name, info = s["name"], draws[s["name"]]
        address = info.site.address
        addresses[name] = address
        d = info.draw
        if info.pinned:
            lp = site_log_prob_array(s)
        elif d.integrate:
            lp = expected_log_prob(s)
            enumerated[name] = s["fn"]
        elif d.log_prob is not None:
            lp = jnp.asarray(d.log_prob)
            scale_ = s.get("scale")
            lp = lp if scale_ is None else scale_ * lp
        elif d.stop_params:
            try:
                lp = site_log_prob_array(replay[name])
            except NotImplementedError as e:
                raise SiteError(name, f"{info.strategy.name}() scores the draw with the guide's "
                                "parameters held constant, which needs the log density at a "
                                f"given value, and the guide's distribution here cannot ({e}). "
                                "Use reparam() for this site.") from e
        else:
            lp = site_log_prob_array(s)
        label = ("lq", address)
        lp = frame.tag(lp, label)
        frame.info.terms[label] = TermInfo(frame.path, info.site.plates)
        frame.records.append(TermRecord(lp, label=label))
        if not info.pinned:
            frame.records.append(DrawRecord(s["value"], lp, s["fn"], d.data, address=address))
        per_site[name] = jnp.sum(lp)
    log_q = sum(per_site.values(), jnp.zeros(()))
    subsamples = {s["name"]: s["value"] for s in trace.values()
                  if s["type"] == "plate" and s["args"][1] is not None
                  and s["args"][0] != s["args"][1]}
    return Choices(values, log_q, per_site, subsamples, enumerated, addresses)


def density(
    model: Callable, choices: Choices | Mapping[str, Any], *args: Any, **kwargs: Any
) -> jax.Array:
    """The model's log joint density log p(x, z) at latent values ``choices``.

    Observed sites contribute their likelihood; plate subsampling scales apply. Model sites
    marked ``infer={"enumerate": "parallel"}`` that ``choices`` lacks are summed out exactly,
    plate by plate (:mod:`vi_ext.program.enumerate`); for guide sites whose strategy
    integrates them (``local_enum()``) the model's factors that depend on them are averaged
    under the guide's probabilities, position by position.

    Args:
        model: a NumPyro model (or a guide, scored at its own sites), or a generative object
            such as :class:`vi_ext.program.Marginal`.
        choices: the result of :func:`sim`, or a dict site name -> value.
        *args: the model's positional arguments.
        **kwargs: the model's keyword arguments (observations included).

    Raises:
        SiteError: the model samples a latent site that ``choices`` lacks (and that is not
            marked for enumeration), a value's shape does not match the model's distribution
            at that site, or an enumerated site cannot be summed out.
    """
    if is_generative(model):
        return model.log_density(choices, *args, **kwargs)
    frame = current_frame("density")
    address = frame.address("d")
    values = dict(choices.values if isinstance(choices, Choices) else choices)
    expected = dict(choices.enumerated) if isinstance(choices, Choices) else {}
    draw_addresses = dict(choices.addresses) if isinstance(choices, Choices) else {}
    for name in expected:  # integrated sites: their placeholder values are not used
        values.pop(name)
    fn = handlers.substitute(model, data=frame.params)
    if isinstance(choices, Choices) and choices.subsamples:
        fn = ReplayPlates(fn, choices.subsamples)
    fn = handlers.condition(fn, data=values)
    try:
        trace, etrace, dims = run_enumerated(fn, values, frame.next_key(), args, kwargs,
                                             also=tuple(expected))
        plain, groups = log_density_terms(etrace, dims, values, expected) \
            if etrace is not None else ({}, {})
    except SiteError as e:
        if not expected:
            raise
        # say which strategies asked for the integration, so the user knows what to change
        who = ", ".join(f"'{n}' by {_strategy_name(frame, draw_addresses.get(n))}()"
                        for n in sorted(expected))
        raise SiteError(e.site, f"{str(e).split(': ', 1)[-1]} (guide sites integrated by "
                        f"their strategies: {who})") from e
    terms: list[tuple[tuple, jax.Array, tuple]] = []
    if etrace is not None:  # enumerated sites, summed out (or averaged) plate by plate
        for name, lp in plain.items():
            terms.append((("lp", address, name), lp, site_plates(etrace[name])))
        for name, lp in groups.items():
            who = draw_addresses.get(name, name) if name in expected else name
            terms.append((("lpe", address, who), lp, site_plates(etrace[name])))
    else:
        for s in sample_sites(trace):
            name = s["name"]
            if name in values:
                lp = site_log_prob_array(s, check_shape=True)
            elif s.get("is_observed"):
                lp = site_log_prob_array(s)
            else:
                raise SiteError(
                    name,
                    "the model samples this latent site but the guide does not provide it. "
                    f"Add numpyro.sample('{name}', ...) to the guide, or use an autoguide "
                    "(guide=None builds AutoNormal).",
                )
            terms.append((("lp", address, name), lp, site_plates(s)))
    total = jnp.zeros(())
    for label, lp, plates in terms:
        lp = frame.tag(lp, label)
        frame.info.terms[label] = TermInfo(frame.path, plates)
        frame.records.append(TermRecord(lp, label=label))
        total = total + jnp.sum(lp)
    return total


def _strategy_name(frame: Frame, address: tuple | None) -> str:
    info = frame.info.draws.get(address) if address is not None else None
    return getattr(info.strategy, "name", "?") if info is not None else "?"


def particles(num_particles: int, fn: Callable[..., Any], *args: Any, over: Any = None,
              **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` ``num_particles`` times independently, vectorized.

    Each run draws its own random keys; outputs are stacked along a new leading axis of size
    ``num_particles``. Estimates that combine the runs (a mean, :func:`logmeanexp`) stay
    differentiable through every particle, and every draw inside is a draw per particle.

    Args:
        num_particles: K >= 1.
        fn: the sub-program to repeat.
        over: optional pytree of arrays with a leading axis of size K; particle k calls
            ``fn(over_k, *args, **kwargs)`` with its slice (weighted draws of
            :func:`vi_ext.program.normalize`, say).

    Use ``particles`` (not ``jax.vmap``) to vectorize anything that calls ``sim``,
    ``density`` or ``logmeanexp``: it gives every particle its own draws and addresses and
    hands what they record back to the program; a bare ``jax.vmap`` around them leaks traced
    values out of the vmap (JAX reports an escaped tracer).
    """
    require_int(num_particles, "num_particles", 1, "particles")
    parent = current_frame("particles")
    address = parent.address("p")
    keys = jax.random.split(parent.next_key(), num_particles)
    if parent.depth == 0:
        # outermost particles only: fit(devices=...) may shard them across devices
        keys = constrain_particles(keys)
    inputs = {label: x for label, x in parent.inputs.items() if _within(label, address)}

    def one(key, inp, x):
        child = parent.child(key, address, inp)
        with child:
            out = fn(*args, **kwargs) if over is None else fn(x, *args, **kwargs)
        return out, child.records

    outs, records = jax.vmap(one)(keys, inputs, over)
    parent.records.extend(records)
    if parent.mode == "analysis":
        leaves, tree = jax.tree_util.tree_flatten(outs)
        leaves = [parent.tag(x, ("pout", address, i, parent.depth))
                  for i, x in enumerate(leaves)]
        outs = jax.tree_util.tree_unflatten(tree, leaves)
    return outs


def _within(label: tuple, address: tuple) -> bool:
    where = label[1] if len(label) > 1 else ()
    return isinstance(where, tuple) and where[: len(address)] == address \
        and len(where) > len(address)


def logmeanexp(x: jax.Array, axis: int = 0) -> jax.Array:
    """log(mean(exp(x))) along ``axis``, computed stably with logsumexp.

    Inside a program, for a vector ``x`` along axis 0, the output is a term of the program
    (strategies that need it find it: leave-one-out baselines, DReG).
    """
    x = jnp.asarray(x)
    if x.shape[axis] == 1:  # the mean of one: the value itself, exactly (and affine)
        return jnp.squeeze(x, axis)
    frame = active_frame()
    if frame is None or axis != 0 or x.ndim != 1:
        return logsumexp(x, axis=axis) - jnp.log(x.shape[axis])
    address = frame.address("m")
    x = frame.tag(x, ("lmein", address))
    out = logsumexp(x) - jnp.log(x.shape[0])
    label = ("lme", address)
    out = frame.tag(out, label)
    frame.info.terms[label] = TermInfo(frame.path, ())
    frame.records.append(TermRecord(out, label=label))
    frame.records.append(LogMeanExpRecord(x, address=address))
    return out
