"""A NumPyro model as a log density over a flat unconstrained vector.

    log pi(z) = log p(x, T(z)) + log |det J_T(z)|,    z in R^D

where T maps unconstrained values to each latent site's support (NumPyro's
``initialize_model`` potential, negated) and the vector z is the sites' unconstrained values
raveled in a fixed order (sites sorted by name, as ``ravel_pytree`` lays out a dict).
Boosting's mixtures live on this space and BlackJAX samples on it; :class:`FlatModel` maps
a z back to every latent and deterministic site of the model, and guide draws to a z.

The log density is a pytree (:class:`ModelDensity`) whose leaves are the model's array
arguments and whose static part is the model and the layout of z: compiled programs that
take it as an argument compile once per model and data shapes and are reused by later
calls (another step-size rule, another seed, new data of the same shapes). Discrete sites
marked ``infer={"enumerate": "parallel"}`` may be summed out of it (NumPyro's enumeration);
any other discrete latent is refused by name (:func:`vi_ext.traces.refuse_discrete`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import initialize_model, potential_energy, unconstrain_fn

from vi_ext.errors import SiteError
from vi_ext.keys import as_key
from vi_ext.program.enumerate import max_plate_nesting
from vi_ext.traces import prior_trace, refuse_discrete


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
        enum: sum discrete sites out by NumPyro's enumeration (``model`` is then wrapped in
            ``numpyro.contrib.funsor.enum``).
    """

    def __init__(self, model: Callable, model_args: tuple, model_kwargs: dict, layout: tuple,
                 enum: bool = False):
        self.model = model
        self.model_args = tuple(model_args)
        self.model_kwargs = dict(model_kwargs)
        self.layout = tuple(layout)
        self.enum = bool(enum)

    def unravel(self, z: jax.Array) -> dict:
        return unravel(self.layout, z)

    def __call__(self, z: jax.Array) -> jax.Array:
        return -potential_energy(self.model, self.model_args, self.model_kwargs,
                                 self.unravel(z), enum=self.enum)

    def tree_flatten(self):
        leaves, treedef = jax.tree_util.tree_flatten((self.model_args, self.model_kwargs))
        arrays = [x for x in leaves if _is_array(x)]
        static = tuple(None if _is_array(x) else _Static(x) for x in leaves)
        return arrays, (self.model, treedef, static, self.layout, self.enum)

    @classmethod
    def tree_unflatten(cls, aux, arrays):
        model, treedef, static, layout, enum = aux
        it = iter(arrays)
        leaves = [next(it) if s is None else s.value for s in static]
        args, kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
        return cls(model, args, kwargs, layout, enum)


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


class FlatModel(NamedTuple):
    """A model's unnormalized log posterior on a flat unconstrained space.

    Attributes:
        log_density: z [D] -> log pi(z) (a scalar), jit- and vmap-compatible; a pytree
            (:class:`ModelDensity` or :class:`FunctionDensity`).
        dim: D.
        init: [D] a starting point (the prior medians, unconstrained).
        unravel: z [D] -> dict of unconstrained site values.
        constrain: z [D] -> dict of constrained latent and deterministic site values.
        to_flat: {site: constrained value} (every site of ``sites``) -> z [D].
        sites: the continuous latent sites that make up z, in order.
    """

    log_density: Callable[[jax.Array], jax.Array]
    dim: int
    init: jax.Array
    unravel: Callable[[jax.Array], dict]
    constrain: Callable[[jax.Array], dict]
    to_flat: Callable[[dict], jax.Array] | None = None
    sites: tuple = ()


_BOOSTING_ADVICE = ("boosting builds mixtures over the model's continuous latent space. "
                    "Marginalize it out of the model first.")


def from_model(model: Callable, model_args: tuple = (), model_kwargs: dict | None = None,
               key: Any = 0, *, discrete: str | Callable[[dict], str] = _BOOSTING_ADVICE,
               allow_enumerated: bool = False) -> FlatModel:
    """The flat unconstrained log posterior of a NumPyro model.

    Args:
        model: a NumPyro model.
        model_args: its positional arguments.
        model_kwargs: its keyword arguments.
        key: a seed or key (the prior draws that find the sites and the starting point).
        discrete: the advice given with a discrete latent site that cannot be taken (see
            :func:`vi_ext.traces.refuse_discrete`).
        allow_enumerated: sum discrete sites marked for parallel enumeration out of the
            log density instead of refusing them.
    """
    model_kwargs = dict(model_kwargs or {})
    key = as_key(key)
    enumerated = refuse_discrete(prior_trace(model, model_args, model_kwargs, key), discrete,
                                 allow_enumerated=allow_enumerated)
    with numpyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        info, _, postprocess_fn, trace = initialize_model(
            key, model, init_strategy=init_to_median(num_samples=15),
            model_args=model_args, model_kwargs=model_kwargs)
    flat, _ = ravel_pytree(info.z)  # (a dict ravels in sorted key order)
    layout = tuple((name, tuple(jnp.shape(info.z[name]))) for name in sorted(info.z))
    if enumerated:
        from numpyro.contrib.funsor import config_enumerate, enum

        density_model = enum(config_enumerate(model), -max_plate_nesting(trace) - 1)
    else:
        density_model = model
    density = ModelDensity(density_model, model_args, model_kwargs, layout, bool(enumerated))
    names = tuple(name for name, _ in layout)

    def constrain(z):
        return postprocess_fn(density.unravel(z))

    def to_flat(constrained):
        missing = [n for n in names if n not in constrained]
        if missing:
            raise SiteError(missing[0], "no value for this latent site of the model (a guide "
                                        "must cover every continuous latent site).")
        seeded = handlers.seed(model, 0)  # discrete sites, if any, need a key to trace
        values = unconstrain_fn(seeded, model_args, model_kwargs,
                                {n: constrained[n] for n in names})
        return ravel_pytree(values)[0]

    return FlatModel(density, int(flat.shape[0]), jnp.asarray(flat), density.unravel,
                     constrain, to_flat, names)


class DensityModel:
    """A log density on R^dim as a NumPyro model: one latent site ``z``, flat on R^dim
    (an improper uniform), and the density as a factor; so a fit of a bare density has a
    model like any other. Equal when made of the same function and dimension (compiled
    programs keyed on the model are reused)."""

    def __init__(self, log_density: Callable[[jax.Array], jax.Array], dim: int):
        self.log_density = log_density
        self.dim = int(dim)

    def __call__(self):
        z = numpyro.sample("z", dist.ImproperUniform(constraints.real_vector, (), (self.dim,)))
        numpyro.factor("log_density", self.log_density(z))

    def __eq__(self, other):
        return (isinstance(other, DensityModel) and other.log_density is self.log_density
                and other.dim == self.dim)

    def __hash__(self):
        return hash((id(self.log_density), self.dim))


def from_function(log_density: Callable[[jax.Array], jax.Array], dim: int) -> FlatModel:
    """A user's unnormalized log density on R^dim as a :class:`FlatModel` (site ``"z"``)."""
    return FlatModel(FunctionDensity(log_density), dim, jnp.zeros(dim), lambda z: {"z": z},
                     lambda z: {"z": z}, lambda values: jnp.asarray(values["z"]), ("z",))
