"""Discrete model sites summed out plate by plate (NumPyro's parallel enumeration).

A model site z marked ``infer={"enumerate": "parallel"}`` that the guide does not sample is
summed out of the model's density exactly. Inside plates the sum is local: for z_n in a
plate of N positions with K values each, and the factors f_n that depend on z_n (its own
prior, the likelihood of x_n, ...),

    log p(x, rest) = sum_n log sum_k exp( sum_{f in factors(z_n)} log f(k) ) + other factors,

O(N K) work instead of the K^N of enumerating the joint. It runs the model once with z set
to its support laid along a new batch dimension to the left of every plate (so each factor
that depends on z broadcasts over it), then reduces each factor group with a logsumexp over
that dimension. This is the "sum out" half of NumPyro's TraceEnum_ELBO, without funsor.

Supported: any number of enumerated sites, each with its own factors; a factor that depends
on two enumerated sites (a chain, as in an HMM) would need variable elimination and is
refused by name. An enumerated site's dependents must sit in its plates (or deeper), as
NumPyro also requires. Plate subsampling scales apply per position, after the sum.

Reference: Obermeyer et al., "Tensor Variable Elimination for Plated Factor Graphs", ICML
2019 (the plated sum this implements for one enumerated site per factor).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from numpyro.distributions.util import is_identically_one
from numpyro.primitives import Messenger

from vi_ext.errors import SiteError
from vi_ext.program.sites import site_log_prob, site_log_prob_array


def is_enumerated(site: dict) -> bool:
    """A latent model site marked for parallel enumeration."""
    return (site["type"] == "sample" and not site.get("is_observed")
            and (site.get("infer") or {}).get("enumerate") == "parallel")


def max_plate_nesting(trace: Mapping[str, dict]) -> int:
    """The number of batch dimensions the plates of ``trace`` use."""
    dims = [-f.dim for s in trace.values() for f in s.get("cond_indep_stack", ())
            if f.dim is not None]
    return max(dims, default=0)


def laid_out_support(fn, dim: int) -> jnp.ndarray:
    """The support of a scalar finite-support distribution as a vector laid along batch
    dimension ``dim`` (< 0): shape [K, 1, ..., 1] with -dim - 1 trailing ones."""
    support = jnp.reshape(fn.enumerate_support(expand=False), (-1,))
    return jnp.reshape(support, (-1,) + (1,) * (-dim - 1))


class EnumerateSites(Messenger):
    """Set each enumerated site not in ``provided``, and each latent site named in ``also``,
    to its support, along its own batch dimension (``first_dim``, ``first_dim - 1``, ... in
    order of appearance)."""

    def __init__(self, fn, provided, first_dim: int, also=()):
        self.provided = provided
        self.first_dim = first_dim
        self.also = frozenset(also)
        self.dims: dict[str, tuple[int, int]] = {}  # name -> (batch dim, support size)
        super().__init__(fn)

    def process_message(self, msg):
        wanted = is_enumerated(msg) or (msg["type"] == "sample" and msg["name"] in self.also
                                        and not msg.get("is_observed"))
        if not wanted or msg["name"] in self.provided:
            return
        name, fn = msg["name"], msg["fn"]
        if not getattr(fn, "has_enumerate_support", False):
            raise SiteError(name, f"is marked infer={{'enumerate': 'parallel'}} but "
                            f"{type(fn).__name__} has no finite support to sum over.")
        if tuple(fn.event_shape) != ():
            raise SiteError(name, f"enumeration needs scalar draws; {type(fn).__name__} has "
                            f"event shape {tuple(fn.event_shape)} (use Categorical, not "
                            "OneHotCategorical).")
        dim = self.first_dim - len(self.dims)
        msg["value"] = laid_out_support(fn, dim)
        self.dims[name] = (dim, int(msg["value"].shape[0]))


def _factor_groups(trace, dims, provided):
    """({site: its log factor, for the factors without an enumerated dimension}, {site: the
    log factors that depend on it, summed and reduced to the site's own shape [K, its
    plates]}, {site: its plate scale})."""
    plain: dict[str, jnp.ndarray] = {}
    groups: dict[str, jnp.ndarray] = {}
    scales: dict[str, object] = {}
    for s in trace.values():
        if s["type"] != "sample":
            continue
        name = s["name"]
        if not (name in provided or s.get("is_observed") or name in dims):
            raise SiteError(name, "the model samples this latent site but the guide does "
                            "not provide it (and it is not marked for enumeration).")
        fn, value = s["fn"], s["value"]
        lp = fn.log_prob(value, s["intermediates"]) if s.get("intermediates") \
            else fn.log_prob(value)
        on = [e for e, (dim, size) in dims.items()
              if jnp.ndim(lp) >= -dim and jnp.shape(lp)[dim] == size and size > 1]
        if not on:
            plain[name] = site_log_prob_array(s, check_shape=name in provided)
            continue
        if len(on) > 1:
            raise SiteError(name, f"depends on the enumerated sites {on}; vi_ext sums out one "
                            "enumerated site per factor. Sample all but one of them in the "
                            "guide (with vx.estimators.enum() as their strategy).")
        e = on[0]
        scale = s.get("scale")
        if e in scales and not _same_scale(scales[e], scale):
            raise SiteError(name, f"has plate scale {scale} but the enumerated site {e!r} has "
                            f"{scales[e]}; the factors of an enumerated site must share its "
                            "plates' subsampling.")
        scales.setdefault(e, scale)
        lp = _to_site_shape(lp, trace[e])
        groups[e] = lp if e not in groups else groups[e] + lp
    return plain, groups, scales


def _to_site_shape(lp, site):
    """Positions in deeper plates than the enumerated site's own (x_nm given z_n) multiply
    within each of its positions: sum their logs over those plates first."""
    own = tuple(jnp.shape(site["fn"].log_prob(site["value"])))
    own = (1,) * (jnp.ndim(lp) - len(own)) + own
    axes = tuple(a for a in range(jnp.ndim(lp)) if own[a] == 1 and jnp.shape(lp)[a] > 1)
    return jnp.sum(lp, axis=axes, keepdims=True) if axes else lp


def log_density_terms(trace: Mapping[str, dict], dims: Mapping[str, tuple[int, int]],
                      provided, expected: Mapping | None = None) -> tuple[dict, dict]:
    """The terms of log p of a trace run under :class:`EnumerateSites`, position by
    position: ({site: its factor}, {enumerated site: its factor group, log-sum-exp'ed over
    its dimension and scaled by its plate's subsampling scale}). For a site in ``expected``
    (name -> the guide's distribution there, a guide site integrated by its strategy) the
    group is averaged over the dimension under the guide's probabilities instead:
    sum_k q_n(k) log f_n(k)."""
    expected = expected or {}
    plain, groups, scales = _factor_groups(trace, dims, provided)
    out = {}
    for e, acc in groups.items():
        if e in expected:
            g = _expectation(expected[e], trace[e]["value"], acc, dims[e][0])
        else:
            g = logsumexp(acc, axis=dims[e][0])
        scale = scales.get(e)
        if scale is not None and not is_identically_one(scale):
            g = scale * g
        out[e] = g
    return plain, out


def summed_log_density(trace: Mapping[str, dict], dims: Mapping[str, tuple[int, int]],
                       provided, expected: Mapping | None = None) -> jnp.ndarray:
    """log p of a trace run under :class:`EnumerateSites`: the sum of
    :func:`log_density_terms`."""
    plain, groups = log_density_terms(trace, dims, provided, expected)
    return sum((jnp.sum(x) for x in (*plain.values(), *groups.values())), jnp.zeros(()))


def _expectation(guide_fn, support, acc, dim):
    """sum_k q_n(k) acc[k, n] over the enumeration dimension ``dim``: the guide's
    probabilities at the laid-out ``support``, broadcast against the factor group."""
    log_q = guide_fn.log_prob(support)
    return jnp.sum(jnp.exp(log_q) * acc, axis=dim)


def expected_log_prob(site: dict) -> jnp.ndarray:
    """E_q[log q] of a guide site integrated by its strategy, position by position (with
    its plate scale): sum_k q_n(k) log q_n(k), minus the entropy at position n."""
    fn = site["fn"]
    log_q = fn.log_prob(laid_out_support(fn, -len(fn.batch_shape) - 1))
    out = jnp.sum(jnp.where(jnp.isfinite(log_q), jnp.exp(log_q) * log_q, 0.0), axis=0)
    scale = site.get("scale")
    if scale is not None and not is_identically_one(scale):
        out = scale * out
    return out


def run(fn, values: Mapping, key, args=(), kwargs=None,
        also=()) -> tuple[dict, dict | None, dict]:
    """Trace ``fn`` (a model already conditioned on ``values``) once; when it has enumerated
    sites not in ``values``, or sites named in ``also`` (guide sites whose strategy
    integrates them), trace it again with their supports laid out.

    Returns:
        the plain trace, the enumerated trace (None without enumerated sites), and
            {site: (batch dim, support size)}.
    """
    from numpyro import handlers

    kwargs = kwargs or {}
    trace = handlers.trace(handlers.seed(fn, rng_seed=key)).get_trace(*args, **kwargs)
    if not also and not any(is_enumerated(s) and s["name"] not in values
                            for s in trace.values()):
        return trace, None, {}
    missing = [n for n in also if n not in trace]
    if missing:
        raise SiteError(missing[0], "the guide's strategy for this site integrates it "
                        "against the model's factors, but the model has no latent site of "
                        "that name.")
    enum = EnumerateSites(fn, values, -max_plate_nesting(trace) - 1, also)
    etrace = handlers.trace(handlers.seed(enum, rng_seed=key)).get_trace(*args, **kwargs)
    return trace, etrace, enum.dims


def model_log_density(model, values: Mapping, key, *args, **kwargs) -> jnp.ndarray:
    """log p(x, values) of a NumPyro model, with its enumerated sites not in ``values``
    summed out (for the diagnostics; objective programs use ``density``)."""
    from numpyro import handlers

    fn = handlers.condition(model, data=dict(values))
    trace, etrace, dims = run(fn, values, key, args, kwargs)
    if etrace is not None:
        return summed_log_density(etrace, dims, values)
    return sum((site_log_prob(s) for s in trace.values() if s["type"] == "sample"),
               jnp.zeros(()))


def posterior_draws(model, values: Mapping, key, *args, **kwargs) -> dict:
    """One draw of each enumerated site from its conditional posterior given ``values``
    (the guide's latents) and the data: p(z_n = k | rest) is proportional to the product
    of its factors at k, position by position. {} when the model enumerates nothing."""
    from numpyro import handlers

    fn = handlers.condition(model, data=dict(values))
    trace, etrace, dims = run(fn, values, key, args, kwargs)
    if etrace is None:
        return {}
    _, groups, _ = _factor_groups(etrace, dims, values)
    out = {}
    for i, (e, (dim, size)) in enumerate(dims.items()):
        support = jnp.reshape(trace[e]["fn"].enumerate_support(expand=False), (-1,))
        logits = groups.get(e, jnp.zeros((size,) + (1,) * (-dim - 1)))
        k = jax.random.categorical(jax.random.fold_in(key, i), logits, axis=dim)
        shape = jnp.shape(trace[e]["value"])
        k = jnp.reshape(k, k.shape[len(k.shape) - len(shape):]) if len(k.shape) > len(shape) \
            else k
        out[e] = jnp.broadcast_to(support[k], shape)
    return out


def _same_scale(a, b) -> bool:
    one = lambda s: s is None or is_identically_one(s)  # noqa: E731
    if one(a) or one(b):
        return one(a) and one(b)
    try:
        return bool(np.allclose(np.asarray(a), np.asarray(b)))
    except Exception:  # noqa: BLE001 - traced scales cannot be compared: trust the plates
        return True
