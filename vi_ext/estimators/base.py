"""The strategy protocol: how one latent sample site is drawn and differentiated.

A *strategy* decides, for one guide sample site, how its value is produced so that the
gradient of the objective with respect to the site's distribution parameters is estimated
without bias. The protocol is deliberately small so that users can add their own:

``strategy.sample(site, key) -> value``
    returns the site's value. A reparameterization strategy returns a draw that is a
    differentiable function of the parameters; a score-function strategy returns a
    stop-gradient draw and registers a surrogate term with the running frame.

Strategies are attached per call (``estimators={"z": vx.estimators.reparam()}``) or in the
guide (``numpyro.sample("z", d, infer={"estimator": vx.estimators.reparam()})``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax


class Site(NamedTuple):
    """What a strategy sees of a guide sample site.

    Attributes:
        name: the site's name.
        fn: the site's NumPyro distribution, already expanded by the enclosing plates.
        sample_shape: the ``sample_shape`` the site was called with.
        infer: the site's ``infer`` dict.
    """

    name: str
    fn: Any
    sample_shape: tuple[int, ...]
    infer: dict


@runtime_checkable
class Strategy(Protocol):
    """A per-site gradient strategy (see the module docstring)."""

    name: str

    def sample(self, site: Site, key: jax.Array) -> jax.Array:
        """Return the site's value, registering any surrogate terms with the frame."""
        ...


def is_strategy(obj: Any) -> bool:
    """True when ``obj`` follows the strategy protocol."""
    return callable(getattr(obj, "sample", None)) and isinstance(getattr(obj, "name", None), str)
