"""The boosted mixture as a NumPyro guide, so a boosting result has FitResult's surface.

:class:`AutoMixture` is an ``AutoContinuous`` autoguide whose distribution over the flat
unconstrained latent vector is the mixture sum_t w_t c(z; theta_t) of any component family;
NumPyro's machinery maps the vector to each latent site (transforms, Jacobians), so
``Predictive``, ``psis_diagnostic`` and vi_ext's FitResult methods work with it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.transforms import PermuteTransform
from numpyro.infer.autoguide import AutoContinuous

from vi_ext.boosting.mixture import Mixture


class AutoMixture(AutoContinuous):
    """A mixture on the model's unconstrained latent space.

    Its params are ``{prefix}_log_weights`` and ``{prefix}_{name}`` for each entry of the
    family's params dict (for Gaussians: ``boost_loc``, ``boost_log_scale``), stacked
    along the component axis in the mixture's own coordinate order.

    Args:
        model: the NumPyro model.
        mixture: the mixture, with coordinates in the order of ``unravel``'s flat vector.
        unravel: flat vector -> dict of unconstrained site values (the order ``mixture``
            uses; AutoContinuous may order sites differently: draws are permuted to its
            order).
        prefix: the prefix of the guide's param names.
    """

    def __init__(self, model: Callable, mixture: Mixture, unravel: Callable,
                 prefix: str = "boost"):
        self._mixture = mixture
        self._unravel = unravel
        super().__init__(model, prefix=prefix)

    def _column_order(self) -> jnp.ndarray:
        # the position, in the mixture's flat vector, of each entry of AutoContinuous's
        positions = self._unravel(jnp.arange(self.latent_dim, dtype=jnp.float32))
        return jnp.concatenate([jnp.reshape(positions[name], -1)
                                for name in self._init_locs]).astype(jnp.int32)

    def _get_posterior(self):
        # empty slots weigh 0: a very negative finite logit (Categorical rejects -inf)
        init_w = jnp.where(jnp.isfinite(self._mixture.log_weights), self._mixture.log_weights,
                           -1e30)
        log_w = numpyro.param(f"{self.prefix}_log_weights", init_w)
        params = {name: numpyro.param(f"{self.prefix}_{name}", value)
                  for name, value in self._mixture.params.items()}
        mixture = dist.MixtureSameFamily(dist.Categorical(logits=log_w),
                                         self._mixture.family.distribution(params))
        order = jax.device_get(self._column_order())
        return dist.TransformedDistribution(mixture, PermuteTransform(order))
