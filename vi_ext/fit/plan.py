"""How a fit's loop cuts ``num_steps`` into compiled chunks (:class:`Plan`).

One chunk length is compiled (the last chunk is padded with inactive steps); the steps of
each chunk are cut so that checkpoints and callbacks fall exactly every k steps. The loop
(:mod:`vi_ext.fit.loop`) runs by it, and so does the default fit's race between the model's
forms (:mod:`vi_ext.fit.forms`), which therefore compiles the same program the loop reuses.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vi_ext.fit.config import FitConfig


class Plan:
    """How the loop cuts ``num_steps`` into chunks: one compiled length, and the steps of
    each chunk cut so that checkpoints and callbacks fall exactly every k steps."""

    def __init__(self, config: FitConfig):
        num_steps = int(config.num_steps)
        chunk = config.chunk_size or max(1, min(1000, math.ceil(num_steps / 100)))
        self.checkpoint_every = config.checkpoint_every
        if config.checkpoint is not None and self.checkpoint_every is None:
            self.checkpoint_every = max(1, math.ceil(num_steps / 10))
        self.everies = [e for e in (self.checkpoint_every,
                                    config.callback_every if config.callbacks else None) if e]
        if config.chunk_size is None:
            chunk = min([chunk, *self.everies])
        self.chunk = min(chunk, num_steps)
        self.callback_every = config.callback_every or self.chunk
        self.num_steps = num_steps
        self._masks: dict[int, jax.Array] = {}

    def active(self, n: int) -> jax.Array:
        """The chunk's mask, ``[chunk]`` bools, the first ``n`` True (made once per n: a
        fresh device array per chunk would cost a dispatch each)."""
        mask = self._masks.get(n)
        if mask is None:
            mask = self._masks[n] = jnp.asarray(np.arange(self.chunk) < n)
        return mask

    def steps(self, start: int) -> int:
        """Steps of the chunk that starts at ``start``."""
        n = min(self.chunk, self.num_steps - start)
        for every in self.everies:
            n = min(n, every - start % every)
        return n
