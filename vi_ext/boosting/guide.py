"""The boosted mixture as a NumPyro guide: boosting's result is a FitResult like any other.

:class:`AutoMixture` is an ``AutoContinuous`` autoguide whose distribution over the flat
unconstrained latent vector is the mixture sum_t w_t c(z; theta_t) of any component family;
NumPyro's machinery maps the vector to each latent site (transforms, Jacobians), so
``Predictive``, ``psis_diagnostic`` and vi_ext's FitResult methods work with it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.transforms import PermuteTransform
from numpyro.infer.autoguide import AutoContinuous

from vi_ext.boosting import mixture as mx
from vi_ext.boosting.mixture import Mixture
from vi_ext.flat import FlatModel


class AutoMixture(AutoContinuous):
    """A mixture on the model's unconstrained latent space.

    Its params are ``{prefix}_log_weights`` and ``{prefix}_{name}`` for each entry of the
    family's params dict (for Gaussians: ``boost_loc``, ``boost_log_scale``), stacked
    along the component axis in the mixture's own coordinate order.

    Args:
        model: the NumPyro model.
        mixture: the mixture, with coordinates in the order of ``flat``'s vector.
        flat: the model's flat unconstrained space (:class:`~vi_ext.flat.FlatModel`), or
            just its ``unravel`` (flat vector -> dict of unconstrained site values, in the
            order ``mixture`` uses; AutoContinuous may order sites differently: draws are
            permuted to its order).
        prefix: the prefix of the guide's param names.

    Attributes:
        mixture: the mixture the guide was built with (``mixture_at(params)`` reads one
            from a param store).
        flat: the :class:`~vi_ext.flat.FlatModel` (None when built from ``unravel``).
    """

    def __init__(self, model: Callable, mixture: Mixture, flat: FlatModel | Callable,
                 prefix: str = "boost"):
        self.mixture = mixture
        self.flat = flat if isinstance(flat, FlatModel) else None
        self._unravel = flat.unravel if isinstance(flat, FlatModel) else flat
        super().__init__(model, prefix=prefix)

    @property
    def weights(self) -> np.ndarray:
        """The weights of the components in use (a skipped step leaves its slot empty)."""
        w = np.asarray(self.mixture.weights)
        return w[w > 0]

    def log_density(self, z: jax.Array) -> jax.Array:
        """log q(z) of the mixture at points z [..., D] of the flat unconstrained space."""
        return mx.log_prob(self.mixture, z)

    def mixture_at(self, params: dict) -> Mixture:
        """The mixture held in a param store (e.g. ``res.params``)."""
        log_w = params[f"{self.prefix}_log_weights"]
        return Mixture(jnp.where(log_w <= -1e29, -jnp.inf, log_w),
                       {name: params[f"{self.prefix}_{name}"] for name in self.mixture.params},
                       self.mixture.family)

    def _column_order(self) -> jnp.ndarray:
        # the position, in the mixture's flat vector, of each entry of AutoContinuous's
        positions = self._unravel(jnp.arange(self.latent_dim, dtype=jnp.float32))
        return jnp.concatenate([jnp.reshape(positions[name], -1)
                                for name in self._init_locs]).astype(jnp.int32)

    def _get_posterior(self):
        # empty slots weigh 0: a very negative finite logit (Categorical rejects -inf)
        init_w = jnp.where(jnp.isfinite(self.mixture.log_weights), self.mixture.log_weights,
                           -1e30)
        log_w = numpyro.param(f"{self.prefix}_log_weights", init_w)
        params = {name: numpyro.param(f"{self.prefix}_{name}", value)
                  for name, value in self.mixture.params.items()}
        mixture = dist.MixtureSameFamily(dist.Categorical(logits=log_w),
                                         self.mixture.family.distribution(params))
        order = jax.device_get(self._column_order())
        return dist.TransformedDistribution(mixture, PermuteTransform(order))
