"""Mixtures over a flat unconstrained latent space, of any reparameterizable component family.

    q(z) = sum_t w_t c(z; theta_t),    w on the simplex,

stored with a fixed capacity T (unused slots have weight 0, log weight -inf) and the
component parameters stacked along a leading axis of length T, so every boosting iteration
reuses one compiled program. The log density is computed in log space,
log q(z) = logsumexp_t [log w_t + log c(z; theta_t)], and is exact.

A component family (:class:`Family`) is a function from parameters to a NumPyro
distribution with event shape [D] that can be sampled by reparameterization; three are
built in: :data:`diag_normal`, :data:`full_normal` (full-rank Gaussian) and :data:`laplace`.

The squared L2 distance between mixtures, ||q - r||^2 = <q,q> - 2<q,r> + <r,r>, is closed
form for Gaussian components, because int N(z; a, A) N(z; b, B) dz = N(a; b, A + B); for
other families it is estimated by Monte Carlo (:func:`log_sq_distance_mc`). Both are returned
as logs, since in many dimensions the distance under- or overflows.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

from vi_ext.errors import ArgumentError

_LOG_2PI = math.log(2.0 * math.pi)


class Family(NamedTuple):
    """A reparameterizable component family on R^D.

    Attributes:
        name: a label (for messages and the history).
        init: ``(loc [D], log_scale [D]) -> params``, a dict of arrays: the member centred
            at ``loc`` with per-coordinate scales ``exp(log_scale)``.
        distribution: ``params -> numpyro Distribution`` with event shape [D] and
            ``has_rsample``; params may carry leading batch axes (a stack of components),
            which become the distribution's batch shape. Its ``mean`` and ``variance`` must
            be finite (boosting moment-matches the mixture for its defensive proposal).
        log_overlap: optional ``(params_a, params_b) -> log int a(z) b(z) dz`` for single
            members, in closed form; without it, L2 distances are estimated by Monte Carlo.

    Example: a Student-t family with 5 degrees of freedom::

        Family("student_t",
               lambda loc, log_scale: {"loc": loc, "log_scale": log_scale},
               lambda p: dist.StudentT(5.0, p["loc"], jnp.exp(p["log_scale"])).to_event(1))
    """

    name: str
    init: Callable[[jax.Array, jax.Array], dict]
    distribution: Callable[[dict], dist.Distribution]
    log_overlap: Callable[[dict, dict], jax.Array] | None = None


def _loc_scale(loc, log_scale):
    return {"loc": loc, "log_scale": log_scale}


def _diag_normal(p):
    return dist.Normal(p["loc"], jnp.exp(p["log_scale"])).to_event(1)


def _diag_normal_overlap(a, b):
    var = jnp.exp(2 * a["log_scale"]) + jnp.exp(2 * b["log_scale"])
    diff = a["loc"] - b["loc"]
    return jnp.sum(-0.5 * diff**2 / var - 0.5 * jnp.log(var) - 0.5 * _LOG_2PI, axis=-1)


def _full_normal_init(loc, log_scale):
    return {"loc": loc, "scale_tril": jnp.diag(log_scale)}


def scale_tril(raw: jax.Array) -> jax.Array:
    """The Cholesky factor a full-rank member stores as ``raw``: the strictly lower triangle
    of ``raw`` plus exp of its diagonal (so any ``raw`` gives a valid factor)."""
    return jnp.tril(raw, -1) + jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))[..., None] \
        * jnp.eye(raw.shape[-1], dtype=raw.dtype)


def _full_normal(p):
    return dist.MultivariateNormal(p["loc"], scale_tril=scale_tril(p["scale_tril"]))


def _full_normal_overlap(a, b):
    La, Lb = scale_tril(a["scale_tril"]), scale_tril(b["scale_tril"])
    cov = La @ La.T + Lb @ Lb.T
    chol = jnp.linalg.cholesky(cov)
    eps = jax.scipy.linalg.solve_triangular(chol, a["loc"] - b["loc"], lower=True)
    return (-0.5 * jnp.sum(eps**2) - jnp.sum(jnp.log(jnp.diagonal(chol)))
            - 0.5 * a["loc"].shape[-1] * _LOG_2PI)


def _laplace(p):
    return dist.Laplace(p["loc"], jnp.exp(p["log_scale"])).to_event(1)


#: N(loc, diag(exp(log_scale))^2); params {"loc", "log_scale"}; closed-form overlaps
diag_normal = Family("diag_normal", _loc_scale, _diag_normal, _diag_normal_overlap)
#: N(loc, L L^T), L = :func:`scale_tril` of params["scale_tril"]; closed-form overlaps
full_normal = Family("full_normal", _full_normal_init, _full_normal, _full_normal_overlap)
#: independent Laplace(loc, exp(log_scale)) coordinates; Monte Carlo L2 distances
laplace = Family("laplace", _loc_scale, _laplace)

FAMILIES = {f.name: f for f in (diag_normal, full_normal, laplace)}


def get_family(family: str | Family, dim: int) -> Family:
    """A family by name (``"diag_normal"``, ``"full_normal"``, ``"laplace"``) or a
    :class:`Family`, checked on R^dim: params a dict of arrays, a distribution with event
    shape [dim], reparameterized sampling, finite mean and variance."""
    if isinstance(family, str):
        if family not in FAMILIES:
            raise ArgumentError("family", f"expected one of {tuple(FAMILIES)} or a "
                                f"vx.boosting.Family, got {family!r}.")
        return FAMILIES[family]
    if not isinstance(family, Family):
        raise ArgumentError("family", f"expected one of {tuple(FAMILIES)} or a "
                            f"vx.boosting.Family(name, init, distribution), got {family!r}.")
    params = family.init(jnp.zeros(dim), jnp.zeros(dim))
    if not isinstance(params, dict) or not all(
            isinstance(v, jax.Array) for v in params.values()):
        raise ArgumentError("family", f"{family.name}: init must return a dict of arrays, got "
                            f"{params!r}.")
    d = family.distribution(params)
    if tuple(d.event_shape) != (dim,) or tuple(d.batch_shape) != ():
        raise ArgumentError("family", f"{family.name}: the distribution of one member must have "
                            f"event shape ({dim},) and no batch shape, got event "
                            f"{tuple(d.event_shape)} and batch {tuple(d.batch_shape)} "
                            "(use .to_event(1) for independent coordinates).")
    if not d.has_rsample:
        raise ArgumentError("family", f"{family.name}: {type(d).__name__} cannot be sampled by "
                            "reparameterization, which the boosting oracle needs.")
    if not (jnp.all(jnp.isfinite(d.mean)) and jnp.all(jnp.isfinite(d.variance))):
        raise ArgumentError("family", f"{family.name}: the member's mean and variance must be "
                            "finite (boosting moment-matches the mixture).")
    return family


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A mixture of members of one :class:`Family` (a pytree; the family is static).

    Attributes:
        log_weights: [T] log mixture weights (-inf for unused slots).
        params: the family's params dict, each array with a leading component axis T.
        family: the component :class:`Family`.
    """

    log_weights: jax.Array
    params: dict
    family: Family = diag_normal

    @property
    def weights(self) -> jax.Array:
        return jnp.exp(self.log_weights)

    @property
    def num_active(self) -> jax.Array:
        return jnp.sum(jnp.isfinite(self.log_weights))

    @property
    def capacity(self) -> int:
        return int(self.log_weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.components().event_shape[0])

    def components(self) -> dist.Distribution:
        """The T components as one distribution with batch shape [T]."""
        return self.family.distribution(self.params)

    def component(self, i: Any) -> dict:
        """The params of component ``i``."""
        return jax.tree_util.tree_map(lambda x: x[i], self.params)

    def replace(self, **changes: Any) -> Mixture:
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(Mixture, data_fields=["log_weights", "params"],
                                 meta_fields=["family"])


def empty(capacity: int, dim: int, family: Family = diag_normal) -> Mixture:
    """A mixture with no components yet (capacity slots of dimension dim)."""
    one = family.init(jnp.zeros(dim), jnp.zeros(dim))
    params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (capacity, *x.shape)), one)
    # (strong dtypes: a weak-typed leaf turns strong at the first update, and every compiled
    # function that takes the mixture would compile a second time)
    return Mixture(jnp.full((capacity,), -jnp.inf, dtype=jnp.result_type(float)), params, family)


def component_log_probs(mix: Mixture, z: jax.Array) -> jax.Array:
    """log c(z; theta_t) of every slot, shape [..., T], for z of shape [..., D]."""
    return mix.components().log_prob(z[..., None, :])


def log_prob(mix: Mixture, z: jax.Array) -> jax.Array:
    """log q(z) for z of shape [..., D]."""
    return logsumexp(component_log_probs(mix, z) + mix.log_weights, axis=-1)


def member_log_prob(family: Family, params: dict, z: jax.Array) -> jax.Array:
    """log c(z; params) of one member, for z of shape [..., D]."""
    return family.distribution(params).log_prob(z)


def member_sample(family: Family, params: dict, key: jax.Array, n: int) -> jax.Array:
    """n reparameterized draws [n, D] from one member (differentiable in params)."""
    return family.distribution(params).rsample(key, (n,))


def sample(mix: Mixture, key: jax.Array, n: int) -> jax.Array:
    """n draws [n, D] from the mixture."""
    kc, kz = jax.random.split(key)
    c = jax.random.categorical(kc, mix.log_weights, shape=(n,))
    return mix.family.distribution(mix.component(c)).rsample(kz)


def component_sample(mix: Mixture, key: jax.Array, n: int) -> jax.Array:
    """n draws from every slot, [T, n, D] (empty slots too)."""
    return jnp.swapaxes(mix.components().rsample(key, (n,)), 0, 1)


def moments(mix: Mixture) -> tuple[jax.Array, jax.Array]:
    """Per-component means and variances, each [T, D]."""
    comps = mix.components()
    return comps.mean, comps.variance


@jax.jit
def add(mix: Mixture, slot: int, params: dict, gamma: jax.Array) -> Mixture:
    """(1 - gamma) q + gamma s, with the component s (params) written into ``slot``."""
    w = jnp.exp(mix.log_weights) * (1.0 - gamma)
    w = w.at[slot].set(gamma)
    new = jax.tree_util.tree_map(lambda a, x: a.at[slot].set(x), mix.params, params)
    return Mixture(jnp.log(w), new, mix.family)


@functools.partial(jax.jit, static_argnames=("family",))
def single(params: dict, family: Family = diag_normal) -> Mixture:
    """The one-component mixture of the member ``params``."""
    return Mixture(jnp.zeros((1,)), jax.tree_util.tree_map(lambda x: x[None], params), family)


def _log_overlaps(p: Mixture, q: Mixture) -> jax.Array:
    """log int p_i(z) q_j(z) dz for every pair of components, [Tp, Tq] (closed form)."""
    overlap = p.family.log_overlap
    return jax.vmap(lambda a: jax.vmap(lambda b: overlap(a, b))(q.params))(p.params)


def log_inner(p: Mixture, q: Mixture) -> jax.Array:
    """log <p, q> = log int p(z) q(z) dz (closed form; the family must have log_overlap)."""
    lo = _log_overlaps(p, q)
    return logsumexp(lo + p.log_weights[:, None] + q.log_weights[None, :])


def has_closed_form(family: Family) -> bool:
    """Whether L2 distances between mixtures of this family are closed form."""
    return family.log_overlap is not None


@jax.jit
def log_sq_distance(p: Mixture, q: Mixture) -> jax.Array:
    """log ||p - q||^2 in L2, from the three inner products, stably in log space (closed
    form; for families without ``log_overlap`` use :func:`log_sq_distance_mc`)."""
    if not has_closed_form(p.family) or not has_closed_form(q.family):
        raise ArgumentError("family", f"{p.family.name} has no closed-form overlap: estimate "
                            "the distance with mixture.log_sq_distance_mc.")
    a, b, c = log_inner(p, p), log_inner(p, q), log_inner(q, q)
    m = jnp.maximum(jnp.maximum(a, b), c)
    d = jnp.exp(a - m) - 2.0 * jnp.exp(b - m) + jnp.exp(c - m)
    return m + jnp.log(jnp.maximum(d, jnp.finfo(d.dtype).tiny))


def sq_distance_log_integrand(log_a: jax.Array, log_b: jax.Array) -> jax.Array:
    """log[(a(z) - b(z))^2 / r(z)], r = (a + b) / 2, from log a(z) and log b(z).

    ||a - b||^2 = E_r[(a - b)^2 / r]: the integrand is non-negative, so its mean is
    estimated in log space (logsumexp) without the cancellation of <a,a> - 2<a,b> + <b,b>,
    and it is bounded by 2 max(a, b)."""
    hi = jnp.maximum(log_a, log_b)
    lo = jnp.minimum(log_a, log_b)
    both_zero = jnp.isneginf(hi)
    safe_hi, safe_lo = jnp.where(both_zero, 0.0, hi), jnp.where(both_zero, 0.0, lo)
    log_abs = safe_hi + jnp.log(-jnp.expm1(safe_lo - safe_hi))  # log |a - b|
    log_r = jnp.logaddexp(safe_hi, safe_lo) - math.log(2.0)
    return jnp.where(both_zero, -jnp.inf, 2.0 * log_abs - log_r)


def _log_mean(x: jax.Array, axis: int = -1) -> jax.Array:
    return logsumexp(x, axis=axis) - math.log(x.shape[axis])


@jax.jit
def log_sq_distance_mc(log_a_at_a: jax.Array, log_b_at_a: jax.Array, log_a_at_b: jax.Array,
                       log_b_at_b: jax.Array) -> jax.Array:
    """Monte Carlo log ||a - b||^2 from n draws of a and n draws of b (each argument [n]:
    the log densities of a and b at the draws of a, then at the draws of b).

    With r = (a + b) / 2 and the draws stratified over its two halves,

        ||a - b||^2 = 1/2 E_a[(a - b)^2 / r] + 1/2 E_b[(a - b)^2 / r],

    estimated in log space from :func:`sq_distance_log_integrand` (unbiased for the
    distance itself; its log is consistent)."""
    fa = _log_mean(sq_distance_log_integrand(log_a_at_a, log_b_at_a))
    fb = _log_mean(sq_distance_log_integrand(log_a_at_b, log_b_at_b))
    return jnp.logaddexp(fa, fb) - math.log(2.0)
