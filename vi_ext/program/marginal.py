"""Approximate marginalization of a hierarchical guide: :class:`Marginal`.

A hierarchical guide q(z, u) = q(u) q(z | u) has an intractable marginal q(z). With a
proposal r(u | z) (the reverse model), two unbiased estimators make it usable in programs:

- the *density side*, at a given z (``density(Marginal(...), z)``):

      q_hat(z) = 1/M sum_{m=1..M} q(z, u_m) / r(u_m | z),   u_m ~ r(. | z),

  E[q_hat(z)] = q(z), so E[log q_hat(z)] <= log q(z);
- the *simulation side* (``sim(Marginal(...))``): draw (z, u_0) ~ q jointly, then

      q_hat(z) = 1/(M+1) [ q(z, u_0) / r(u_0 | z) + sum_{m=1..M} q(z, u_m) / r(u_m | z) ],

  for which E[1/q_hat(z)] = 1/q(z) (for M = 0 exactly so), so E[log q_hat(z)] >= log q(z)
  and E[log p(x, z) - log q_hat(z)] stays a lower bound of the ELBO of q(z) and of log p(x):
  HVI for M = 0 (Ranganath, Tran & Blei, 2016; Agakov & Barber, 2004), IWHVI for M > 0
  (Sobolev & Vetrov, NeurIPS 2019), and, inside an importance-weighted bound over outer
  particles, DIWHVI. The bound tightens as M grows and as r approaches q(u | z).

Every draw involved (u_0 and z from the guide, u_m from the proposal) is an ordinary draw of
the program, with its own address and strategy.

Reference: Becker et al., "Probabilistic Programming with Programmable Variational
Inference", PLDI 2024 (marginal as a language construct with both sides).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from numpyro import handlers

from vi_ext.errors import ArgumentError, require_int
from vi_ext.program.context import current_frame
from vi_ext.program.primitives import Choices, density, particles, sim
from vi_ext.program.sites import sample_sites


def model_latent_names(model: Callable, values: dict, args: tuple, kwargs: dict) -> set[str]:
    """Names of the latent sites ``model`` samples among ``values``, found by one trace of
    the model (no draw, no runtime cost)."""
    frame = current_frame("marginal")
    fn = handlers.seed(handlers.substitute(model, data=frame.params), jax.random.PRNGKey(0))
    fn = handlers.condition(fn, data=values)
    with handlers.block():
        trace = handlers.trace(fn).get_trace(*args, **kwargs)
    return {s["name"] for s in sample_sites(trace) if s["name"] in values}


class Marginal(NamedTuple):
    """The marginal of a hierarchical guide over the sites ``keep``, as a generative object:
    :func:`~vi_ext.program.sim` and :func:`~vi_ext.program.density` accept it.

    Attributes:
        guide: a NumPyro guide whose latent sites are ``keep`` plus auxiliary ones.
        keep: the sites to keep (the model's latents), or a function of the guide's drawn
            values returning them.
        proposal: ``proposal(kept_values, *args, **kwargs)``, a NumPyro function that
            samples the auxiliary sites given the kept ones: the reverse model r(u | z),
            which may have ``numpyro.param`` sites of its own. ``None`` uses the guide's own
            distribution of the auxiliary sites, q(u), as the proposal (which requires the
            auxiliary sites to be drawn before, and independently of, the kept ones).
        num_particles: M, the number of proposal draws (0: HVI on the simulation side; the
            density side needs M >= 1).
    """

    guide: Callable
    keep: Sequence[str] | Callable[[dict], Sequence[str]]
    proposal: Callable | None = None
    num_particles: int = 0

    def _check(self, least: int) -> None:
        require_int(self.num_particles, "num_particles", least, "Marginal")

    def _kept_names(self, values: Mapping[str, Any]) -> list[str]:
        keep = list(self.keep(dict(values)) if callable(self.keep) else self.keep)
        missing = [k for k in keep if k not in values]
        if missing:
            raise ArgumentError("keep", f"the guide has no latent site {missing}; its sites "
                                f"are {sorted(values)}.")
        return sorted(keep)

    def _log_weight(self, kept: dict, *args: Any, **kwargs: Any) -> jax.Array:
        """log q(z, u) - log r(u | z) at one proposal draw u ~ r(. | z)."""
        if self.proposal is None:
            draw = sim(self.guide, *args, **kwargs)
            aux = {n: v for n, v in draw.values.items() if n not in kept}
            log_r = sum((draw.site_log_densities[n] for n in aux), jnp.zeros(()))
        else:
            draw = sim(self.proposal, kept, *args, **kwargs)
            aux, log_r = draw.values, draw.log_density
        return density(self.guide, {**kept, **aux}, *args, **kwargs) - log_r

    def simulate(self, *args: Any, **kwargs: Any) -> Choices:
        """Draw z (with u_0) from the guide; ``log_density`` is log q_hat(z), the simulation
        side's estimate (its reciprocal unbiased for 1/q(z))."""
        self._check(0)
        joint = sim(self.guide, *args, **kwargs)
        names = self._kept_names(joint.values)
        kept = {k: joint.values[k] for k in names}
        aux_names = [n for n in joint.values if n not in kept]
        if self.proposal is None:
            log_r0 = sum((joint.site_log_densities[n] for n in aux_names), jnp.zeros(()))
        else:
            aux0 = {n: joint.values[n] for n in aux_names}
            log_r0 = density(self.proposal, aux0, kept, *args, **kwargs)
        log_w0 = joint.log_density - log_r0
        addresses = {k: joint.addresses[k] for k in names if k in joint.addresses}
        if self.num_particles == 0:
            return Choices(kept, log_w0, {}, joint.subsamples, {}, addresses)
        log_w = particles(self.num_particles, self._log_weight, kept, *args, **kwargs)
        all_w = jnp.concatenate([log_w0[None], log_w])
        log_q_hat = logsumexp(all_w) - jnp.log(all_w.shape[0])
        return Choices(kept, log_q_hat, {}, joint.subsamples, {}, addresses)

    def log_density(self, choices: Choices | Mapping[str, Any], *args: Any,
                    **kwargs: Any) -> jax.Array:
        """log q_hat(z) at given kept values: the density side (q_hat unbiased for q(z))."""
        self._check(1)
        values = dict(choices.values if isinstance(choices, Choices) else choices)
        names = list(self.keep(values) if callable(self.keep) else self.keep)
        missing = [k for k in names if k not in values]
        if missing:
            raise ArgumentError("keep", f"no value given for the kept site(s) {missing}.")
        kept = {k: values[k] for k in names}
        log_w = particles(self.num_particles, self._log_weight, kept, *args, **kwargs)
        return logsumexp(log_w) - jnp.log(log_w.shape[0])


def marginal(
    guide: Callable,
    *args: Any,
    keep: Sequence[str] | Callable[[dict], Sequence[str]],
    proposal: Callable | None = None,
    num_particles: int = 0,
    **kwargs: Any,
) -> Choices:
    """Draw from a hierarchical guide and estimate the log density of the kept sites:
    ``sim(Marginal(guide, keep, proposal, num_particles), *args, **kwargs)``.

    Args:
        guide: a NumPyro guide whose latent sites are ``keep`` plus auxiliary ones.
        *args: the guide's positional arguments.
        keep: the sites to keep (the model's latents), or a function of the drawn values
            returning them.
        proposal: the reverse model r(u | z), or None (see :class:`Marginal`).
        num_particles: M, the number of extra proposal draws (0: HVI).
        **kwargs: the guide's keyword arguments.

    Returns:
        Choices of the kept sites, with ``log_density`` = log q_hat(kept).
    """
    return Marginal(guide, keep, proposal, num_particles).simulate(*args, **kwargs)
