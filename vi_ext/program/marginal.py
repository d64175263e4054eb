"""Approximate marginalization of a hierarchical guide.

A hierarchical guide q(z, u) = q(u) q(z | u) has an intractable marginal q(z). For a
proposal r(u | z), the estimator

    q_hat(z) = 1/(M+1) [ q(z, u_0) / r(u_0 | z) + sum_{m=1..M} q(z, u_m) / r(u_m | z) ],
    (z, u_0) ~ q,  u_m ~ r(. | z),

satisfies E[log q_hat(z)] >= log q(z) (it is a stochastic *upper* bound, by Jensen and
E[1/q_hat] = 1/q for M = 0), so E[log p(x, z) - log q_hat(z)] stays a lower bound of the
ELBO of q(z) and of log p(x): HVI for M = 0 (Ranganath, Tran & Blei, 2016; Agakov & Barber,
2004), IWHVI for M > 0 (Sobolev & Vetrov, NeurIPS 2019), and, inside an importance-weighted
bound over outer particles, DIWHVI. The bound tightens as M grows and as r approaches
q(u | z).

Reference: Becker et al., "Probabilistic Programming with Programmable Variational
Inference", PLDI 2024 (marginal as a language primitive).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from numpyro import handlers

from vi_ext.errors import ArgumentError
from vi_ext.program.context import current_frame
from vi_ext.program.primitives import Choices, density, particles, sim
from vi_ext.program.sites import sample_sites


def model_latent_names(model: Callable, values: dict, args: tuple, kwargs: dict) -> set[str]:
    """Names of the latent sites ``model`` samples, found by one trace (no runtime cost)."""
    frame = current_frame("marginal")
    fn = handlers.seed(handlers.substitute(model, data=frame.params), jax.random.PRNGKey(0))
    fn = handlers.condition(fn, data=values)
    trace = handlers.trace(fn).get_trace(*args, **kwargs)
    return {s["name"] for s in sample_sites(trace) if s["name"] in values}


def marginal(
    guide: Callable,
    *args: Any,
    keep: Sequence[str],
    proposal: Callable | None = None,
    num_particles: int = 0,
    **kwargs: Any,
) -> Choices:
    """Draw from a hierarchical guide and estimate the log density of the kept sites.

    Args:
        guide: a NumPyro guide whose latent sites are ``keep`` plus auxiliary ones.
        *args: the guide's positional arguments.
        keep: the sites to keep (the model's latents); the others are auxiliary.
        proposal: ``proposal(kept_values, *args, **kwargs)``, a NumPyro function that samples
            the auxiliary sites given the kept ones: the reverse model r(u | z), which may
            have ``numpyro.param`` sites of its own. ``None`` uses the guide's own
            distribution of the auxiliary sites, q(u), as the proposal (which requires the
            auxiliary sites to be drawn before, and independently of, the kept ones).
        num_particles: M, the number of extra proposal draws (0: HVI).
        **kwargs: the guide's keyword arguments.

    Returns:
        Choices of the kept sites, with ``log_density`` = log q_hat(kept).
    """
    if not isinstance(num_particles, int) or num_particles < 0:
        raise ArgumentError("num_particles", f"expected an int >= 0, got {num_particles!r}")
    joint = sim(guide, *args, **kwargs)
    keep = list(keep)
    missing = [k for k in keep if k not in joint.values]
    if missing:
        raise ArgumentError("keep", f"the guide has no latent site {missing}; its sites are "
                            f"{sorted(joint.values)}.")
    kept = {k: joint.values[k] for k in keep}
    aux_names = [n for n in joint.values if n not in kept]

    def log_r(aux_values: dict, site_log_q: dict | None) -> jax.Array:
        if proposal is None:
            return sum((site_log_q[n] for n in aux_names), jnp.zeros(()))
        return density(proposal, aux_values, kept, *args, **kwargs)

    aux0 = {n: joint.values[n] for n in aux_names}
    log_w0 = joint.log_density - log_r(aux0, joint.site_log_densities)
    if num_particles == 0:
        return Choices(kept, log_w0, {})

    def one():
        if proposal is None:
            draw = sim(guide, *args, **kwargs)
            aux = {n: draw.values[n] for n in aux_names}
            lr = log_r(aux, draw.site_log_densities)
        else:
            draw = sim(proposal, kept, *args, **kwargs)
            aux = draw.values
            lr = draw.log_density
        return density(guide, {**kept, **aux}, *args, **kwargs) - lr

    log_w = particles(num_particles, one)
    all_w = jnp.concatenate([log_w0[None], log_w])
    log_q_hat = logsumexp(all_w) - jnp.log(all_w.shape[0])
    return Choices(kept, log_q_hat, {})
