"""Random keys: every public function takes an int seed or a JAX key."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vi_ext.errors import ArgumentError


def as_key(key: Any, argument: str = "key") -> jax.Array:
    """A raw uint32 PRNG key from an int seed, a raw key, or a typed ``jax.random.key``."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.PRNGKey(int(key))
    if isinstance(key, (jax.Array, np.ndarray)):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(key)
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return key
    raise ArgumentError(
        argument,
        f"expected an int seed or a JAX PRNG key, got {type(key).__name__} "
        f"{getattr(key, 'shape', '')}. Pass e.g. key=0 or key=jax.random.key(0).",
    )
