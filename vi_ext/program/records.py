"""Records: the traced values a run of a program leaves for the transformation.

Records are pytrees whose static part is the address or label they belong to (the rest of
what is static lives in the frame's :class:`~vi_ext.program.context.RunInfo`). Inside
:func:`vi_ext.program.particles` they come back batched over the particles, the particle axes
leading, outermost first.
"""

from __future__ import annotations

from typing import Any

import jax


@jax.tree_util.register_pytree_node_class
class DrawRecord:
    """One draw: its value, its log density per position (as it enters log q), the site's
    distribution and the strategy's data."""

    def __init__(self, value: Any, log_prob: Any, fn: Any, data: Any, *, address: tuple):
        self.value = value
        self.log_prob = log_prob
        self.fn = fn
        self.data = data
        self.address = address

    def tree_flatten(self):
        return (self.value, self.log_prob, self.fn, self.data), self.address

    @classmethod
    def tree_unflatten(cls, address, children):
        return cls(*children, address=address)


@jax.tree_util.register_pytree_node_class
class TermRecord:
    """The value of one tagged term (a log density per position, a logmeanexp output)."""

    def __init__(self, value: Any, *, label: tuple):
        self.value = value
        self.label = label

    def tree_flatten(self):
        return (self.value,), self.label

    @classmethod
    def tree_unflatten(cls, label, children):
        return cls(*children, label=label)


@jax.tree_util.register_pytree_node_class
class LogMeanExpRecord:
    """The input of one :func:`vi_ext.program.logmeanexp` (over axis 0 of a vector)."""

    def __init__(self, x: Any, *, address: tuple):
        self.x = x
        self.address = address

    def tree_flatten(self):
        return (self.x,), self.address

    @classmethod
    def tree_unflatten(cls, address, children):
        return cls(*children, address=address)
