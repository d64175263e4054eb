"""Records: what strategies and primitives leave in the frame for the surrogate.

After a program returns its value F, the transformation adds
``record.surrogate_term(stop_gradient(F), records)`` of every record to F. Records are
pytrees: inside :func:`vi_ext.program.particles` they come back batched over particles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


class Record:
    """Base class: a record contributes ``surrogate_term`` (zero by default)."""

    def surrogate_term(self, value: jax.Array, records: list) -> jax.Array:
        return jnp.zeros(())

    def state_update(self, value: jax.Array) -> dict:
        """Entries of the strategy state to replace after this estimate (none by default)."""
        return {}


@jax.tree_util.register_pytree_node_class
class LogMeanExpRecord(Record):
    """The input of a :func:`vi_ext.program.logmeanexp` (for leave-one-out baselines)."""

    def __init__(self, x):
        self.x = x

    def tree_flatten(self):
        return (self.x,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)
