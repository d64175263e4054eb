"""The boosted mixture as a NumPyro guide, so a boosting result has FitResult's surface.

:class:`AutoMixture` is an ``AutoContinuous`` autoguide whose distribution over the flat
unconstrained latent vector is the mixture sum_t w_t N(m_t, diag(s_t^2)); NumPyro's
machinery maps the vector to each latent site (transforms, Jacobians), so ``Predictive``,
``psis_diagnostic`` and vi_ext's FitResult methods work with it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer.autoguide import AutoContinuous

from vi_ext.boosting.mixture import Mixture


class AutoMixture(AutoContinuous):
    """A mixture of diagonal Gaussians on the model's unconstrained latent space.

    Args:
        model: the NumPyro model.
        mixture: the mixture, with columns in the order of ``unravel``'s flat vector.
        unravel: flat vector -> dict of unconstrained site values (the order ``mixture``
            uses; AutoContinuous may order sites differently, which is mapped here).
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
        order = self._column_order()
        # empty slots weigh 0: a very negative finite logit (Categorical rejects -inf)
        init_w = jnp.where(jnp.isfinite(self._mixture.log_weights), self._mixture.log_weights,
                           -1e30)
        log_w = numpyro.param(f"{self.prefix}_log_weights", init_w)
        locs = numpyro.param(f"{self.prefix}_locs", self._mixture.locs[:, order])
        log_scales = numpyro.param(f"{self.prefix}_log_scales",
                                   self._mixture.log_scales[:, order])
        return dist.MixtureSameFamily(dist.Categorical(logits=log_w),
                                      dist.Normal(locs, jnp.exp(log_scales)).to_event(1))
