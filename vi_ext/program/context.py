"""The evaluation context of an objective program.

An objective program (see :mod:`vi_ext.program`) is an ordinary Python function. When
:func:`vi_ext.estimate` or :func:`vi_ext.fit` transforms it, the program runs inside a
:class:`Frame` that carries what its primitives need but the user should not pass by hand:
the current parameters, a source of fresh random keys, the per-site gradient strategies, and
the records that the transformation later turns into a differentiable surrogate (score terms
of REINFORCE sites, for example).

Frames nest: :func:`vi_ext.program.particles` runs its body in a child frame per particle
(vectorized with ``jax.vmap``) and hands the child's records back to the parent.

Strategies that need the rest of the program (enumeration, measure-valued derivatives) file
a *continuation request*; the transformation answers it by running the program again with
the site's value fixed (``overrides``), see :mod:`vi_ext.program.transform`.

Two more things travel in a frame:

- ``state``: strategy state carried from one fit step to the next (the running average of a
  ``reinforce(baseline="average")`` site), read-only while the program runs; strategies'
  records propose its update, which ``fit`` applies after an accepted step.
- ``particle_weights``: for doubly reparameterized gradients (``dreg()``), the self-normalized
  importance weights of the top-level particles, known from a first pass of the program; each
  particle's child frame gets its weight as ``tangent_scale``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from vi_ext.errors import VIError

_STACK: list[Frame] = []


class Frame:
    """State shared by the primitives while one objective program runs.

    Args:
        params: constrained parameter values, keyed like NumPyro's param store.
        key: a JAX PRNG key; every primitive call draws a fresh key from it with
            :meth:`next_key` (deterministic: the i-th draw is ``fold_in(key, i)``).
        estimators: per-site strategy overrides, site name -> strategy.
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        key: jax.Array,
        estimators: Mapping[str, Any],
        overrides: Mapping[str, Any] | None = None,
        in_particles: bool = False,
        state: Mapping[str, Any] | None = None,
        depth: int = 0,
        particle_weights: jax.Array | None = None,
        tangent_scale: jax.Array | None = None,
    ):
        self.params = dict(params)
        self.key = key
        self.estimators = dict(estimators)
        self.overrides = dict(overrides or {})
        self.in_particles = in_particles
        self.state = dict(state or {})
        self.depth = depth
        self.particle_weights = particle_weights
        self.tangent_scale = tangent_scale
        self.num_particle_calls = 0
        self._counter = 0
        self.records: list[Any] = []
        self.requests: list[Any] = []
        self.visited_sites: set[str] = set()
        # sites drawn by stl() or dreg(): name -> (strategy name, particle depth of the draw)
        self.path_sites: dict[str, tuple[str, int]] = {}
        # guide sites drawn by local_enum(): their expectation is taken in sim and density
        self.local_enum_sites: set[str] = set()

    def next_key(self) -> jax.Array:
        """A fresh key, the ``i``-th fold of the frame's key for the ``i``-th call."""
        k = jax.random.fold_in(self.key, self._counter)
        self._counter += 1
        return k

    def child(self, key: jax.Array, tangent_scale: jax.Array | None = None) -> Frame:
        """A frame with the same parameters and strategies but its own key and records."""
        return Frame(
            self.params,
            key,
            self.estimators,
            in_particles=True,
            state=self.state,
            depth=self.depth + 1,
            tangent_scale=tangent_scale,
        )

    def __enter__(self) -> Frame:
        _STACK.append(self)
        return self

    def __exit__(self, *exc) -> None:
        popped = _STACK.pop()
        assert popped is self, "objective-program frames exited out of order"


def current_frame(primitive: str) -> Frame:
    """The innermost active frame; a clear error when a primitive runs outside one."""
    if not _STACK:
        raise VIError(
            f"vi_ext.program.{primitive}() was called outside an objective transformation. "
            "Objective programs are run by vx.estimate(objective, model, guide, params, ...) "
            "or vx.fit(model, objective=...), which supply parameters, random keys and "
            "gradient strategies; call one of those instead of the program itself."
        )
    return _STACK[-1]
