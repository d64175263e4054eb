"""A NumPyro model as a log density over a flat unconstrained vector.

    log pi(z) = log p(x, T(z)) + log |det J_T(z)|,    z in R^D

where T maps unconstrained values to each latent site's support (NumPyro's
``initialize_model`` potential, negated) and the vector z is the sites' unconstrained values
raveled in a fixed order. Mixture guides live on this space; ``constrain`` maps draws back
to every latent and deterministic site of the model.

The log density is a pytree (:class:`ModelDensity`) whose leaves are the model's array
arguments and whose static part is the model and the layout of z: boosting's compiled
programs take it as an argument, so they compile once per model and data shapes and are
reused by later calls (another step-size rule, another seed, new data of the same shapes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import initialize_model, potential_energy

from vi_ext.errors import SiteError
from vi_ext.keys import as_key


class _Static:
    """A static (aux data) value compared by equality when it is hashable, else by
    identity."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def _key(self):
        try:
            hash(self.value)
            return (type(self.value), self.value)
        except TypeError:
            return id(self.value)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key() == other._key()


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


@jax.tree_util.register_pytree_node_class
class ModelDensity:
    """z [D] -> log p(x, T(unravel(z))) + log |det J_T|: a NumPyro model's log density on
    its flat unconstrained space, as a pytree (leaves: the model's array arguments).

    Args:
        model: the NumPyro model.
        model_args: its positional arguments (arrays are leaves, anything else static).
        model_kwargs: its keyword arguments (likewise).
        layout: ((site, shape), ...) in the order of the flat vector.
    """

    def __init__(self, model: Callable, model_args: tuple, model_kwargs: dict, layout: tuple):
        self.model = model
        self.model_args = tuple(model_args)
        self.model_kwargs = dict(model_kwargs)
        self.layout = tuple(layout)

    def unravel(self, z: jax.Array) -> dict:
        return unravel(self.layout, z)

    def __call__(self, z: jax.Array) -> jax.Array:
        return -potential_energy(self.model, self.model_args, self.model_kwargs,
                                 self.unravel(z))

    def tree_flatten(self):
        leaves, treedef = jax.tree_util.tree_flatten((self.model_args, self.model_kwargs))
        arrays = [x for x in leaves if _is_array(x)]
        static = tuple(None if _is_array(x) else _Static(x) for x in leaves)
        return arrays, (self.model, treedef, static, self.layout)

    @classmethod
    def tree_unflatten(cls, aux, arrays):
        model, treedef, static, layout = aux
        it = iter(arrays)
        leaves = [next(it) if s is None else s.value for s in static]
        args, kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
        return cls(model, args, kwargs, layout)


@jax.tree_util.register_pytree_node_class
class FunctionDensity:
    """A user's log density function f(z) as a pytree with no leaves (static: f)."""

    def __init__(self, fn: Callable[[jax.Array], jax.Array]):
        self.fn = fn

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.fn(z)

    def tree_flatten(self):
        return (), _Static(self.fn)

    @classmethod
    def tree_unflatten(cls, aux, _):
        return cls(aux.value)


def as_density(log_density: Callable) -> ModelDensity | FunctionDensity:
    """A log density as a pytree that compiled functions can take as an argument."""
    if isinstance(log_density, (ModelDensity, FunctionDensity)):
        return log_density
    return FunctionDensity(log_density)


def unravel(layout: tuple, z: jax.Array) -> dict:
    """The flat vector z [..., D] as a dict of site values, by ``layout``."""
    out, start = {}, 0
    for name, shape in layout:
        size = int(np.prod(shape, dtype=int))
        out[name] = jnp.reshape(z[..., start:start + size], z.shape[:-1] + tuple(shape))
        start += size
    return out


class Target(NamedTuple):
    """A model's unnormalized log posterior on a flat unconstrained space.

    Attributes:
        log_density: z [D] -> log pi(z) (a scalar), jit- and vmap-compatible; a pytree
            (:class:`ModelDensity` or :class:`FunctionDensity`).
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
        info, _, postprocess_fn, _ = initialize_model(
            as_key(key), model, init_strategy=init_to_median(num_samples=15),
            model_args=model_args, model_kwargs=model_kwargs)
    flat, _ = ravel_pytree(info.z)  # (a dict ravels in sorted key order)
    layout = tuple((name, tuple(jnp.shape(info.z[name]))) for name in sorted(info.z))
    density = ModelDensity(model, model_args, model_kwargs, layout)

    def constrain(z):
        return postprocess_fn(density.unravel(z))

    return Target(density, int(flat.shape[0]), jnp.asarray(flat), density.unravel, constrain)


def from_function(log_density: Callable[[jax.Array], jax.Array], dim: int) -> Target:
    """A user's unnormalized log density on R^dim as a :class:`Target` (site ``"z"``)."""
    return Target(FunctionDensity(log_density), dim, jnp.zeros(dim), lambda z: {"z": z},
                  lambda z: {"z": z})
