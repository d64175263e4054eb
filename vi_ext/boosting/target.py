"""A NumPyro model as a log density over a flat unconstrained vector.

    log pi(z) = log p(x, T(z)) + log |det J_T(z)|,    z in R^D

where T maps unconstrained values to each latent site's support (NumPyro's
``initialize_model`` potential, negated) and the vector z is the sites' unconstrained values
raveled in a fixed order. Mixture guides live on this space; ``constrain`` maps draws back
to every latent and deterministic site of the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import initialize_model

from vi_ext.errors import SiteError
from vi_ext.keys import as_key


class Target(NamedTuple):
    """A model's unnormalized log posterior on a flat unconstrained space.

    Attributes:
        log_density: z [D] -> log pi(z) (a scalar), jit- and vmap-compatible.
        dim: D.
        init: [D] a starting point (the prior medians, unconstrained).
        unravel: z [D] -> dict of unconstrained site values.
        constrain: z [D] -> dict of constrained latent and deterministic site values.
    """

    log_density: Callable[[jax.Array], jax.Array]
    dim: int
    init: jax.Array
    unravel: Callable[[jax.Array], dict]
    constrain: Callable[[jax.Array], dict]


def from_model(model: Callable, model_args: tuple = (), model_kwargs: dict | None = None,
               key: Any = 0) -> Target:
    """The flat unconstrained log posterior of a NumPyro model with continuous latents."""
    model_kwargs = dict(model_kwargs or {})
    with numpyro.validation_enabled(False):
        trace = handlers.trace(handlers.seed(model, as_key(key))).get_trace(
            *model_args, **model_kwargs)
    for name, site in trace.items():
        if (site["type"] == "sample" and not site.get("is_observed")
                and getattr(site["fn"].support, "is_discrete", False)):
            raise SiteError(
                name,
                "boosting builds mixtures of Gaussians over the model's continuous latent "
                "space; this site is discrete. Marginalize it out of the model first.",
            )
    with numpyro.validation_enabled(False):
        info, potential_fn, postprocess_fn, _ = initialize_model(
            as_key(key), model, init_strategy=init_to_median(num_samples=15),
            model_args=model_args, model_kwargs=model_kwargs)
    flat, unravel = ravel_pytree(info.z)

    def log_density(z):
        return -potential_fn(unravel(z))

    def constrain(z):
        return postprocess_fn(unravel(z))

    return Target(log_density, int(flat.shape[0]), jnp.asarray(flat), unravel, constrain)
