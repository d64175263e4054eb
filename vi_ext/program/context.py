"""The evaluation context of an objective program.

An objective program (see :mod:`vi_ext.program`) is an ordinary Python function. When
:func:`vi_ext.estimate` or :func:`vi_ext.fit` transforms it, the program runs inside a
:class:`Frame` that carries what its primitives need but the user should not pass by hand:
the current parameters, a source of fresh random keys, the per-site gradient strategies, and
the records that the transformation later turns into a differentiable surrogate.

Every primitive call gets an *address*: the frame's path (the ``particles`` calls around it)
and the call's own index, ``("p0", "s1")`` for the second ``sim`` inside the first
``particles``. A draw's address is its ``sim`` call's address and its site name, so two
``sim`` calls of one guide are two draws, each pinned or re-run on its own. Addresses are the
same in every run of the same program (they follow the order of the calls).

Frames nest: :func:`vi_ext.program.particles` runs its body in a child frame per particle
(vectorized with ``jax.vmap``) and hands the child's records back to the parent, batched.

A frame runs in one of two modes:

- ``"analysis"``: the program is being staged to find its structure
  (:mod:`vi_ext.program.structure`); :meth:`Frame.tag` marks values with the tag primitive;
- ``"run"``: the program computes; :meth:`Frame.tag` adds the frame's ``inputs`` for the
  label, if any (zero perturbations whose cotangents are the coefficients of the terms, see
  :mod:`vi_ext.program.transform`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vi_ext.errors import VIError

_STACK: list[Frame] = []


class DrawInfo(NamedTuple):
    """Static facts about one draw, kept beside its (traced) record."""

    site: Any  # the Site, its fn as seen where it was drawn
    strategy: Any
    draw: Any  # the strategy's Draw (its flags; arrays are not used from here)
    pinned: bool  # fixed by a continuation re-run: not a random draw in this run
    path: tuple  # the particles calls around it, outermost first
    sim: tuple  # the address of its sim call


class TermInfo(NamedTuple):
    """Static facts about one tagged term: where it lives and its plates."""

    path: tuple  # the particles calls around it, outermost first
    plates: tuple  # (name, dim, size) of its plates, dims counted from the right


class RunInfo:
    """Static facts gathered while one run of a program is traced (shared by its frames)."""

    def __init__(self) -> None:
        self.draws: dict[tuple, DrawInfo] = {}
        self.terms: dict[tuple, TermInfo] = {}
        self.visited_sites: set[str] = set()


#: keys made by one split at a frame's first :meth:`Frame.next_key` (the last one seeds more)
KEY_BLOCK = 16


class Frame:
    """State shared by the primitives while one objective program runs.

    Args:
        params: constrained parameter values, keyed like NumPyro's param store.
        key: a JAX PRNG key; every primitive call draws a fresh key from it with
            :meth:`next_key` (deterministic: the i-th key depends on ``key`` and i alone).
        estimators: per-site strategy overrides, site name -> strategy.
        overrides: draw address -> value, for the re-runs of continuation strategies.
        inputs: tag label -> an array added to the tagged value (run mode), or a path scale
            (label ``("scale", sim address)``).
        state: strategy state carried from one fit step to the next (read-only here).
        mode: ``"run"`` or ``"analysis"``.
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        key: jax.Array,
        estimators: Mapping[str, Any],
        overrides: Mapping[tuple, Any] | None = None,
        inputs: Mapping[tuple, Any] | None = None,
        state: Mapping[str, Any] | None = None,
        mode: str = "run",
        path: tuple = (),
        info: RunInfo | None = None,
    ):
        self.params = dict(params)
        self.key = key
        self.estimators = dict(estimators)
        self.overrides = dict(overrides or {})
        self.inputs = dict(inputs or {})
        self.state = dict(state or {})
        self.mode = mode
        self.path = tuple(path)
        self.info = info if info is not None else RunInfo()
        self._counter = 0
        self._block: jax.Array | None = None
        self._calls: dict[str, int] = {}
        self.records: list[Any] = []

    @property
    def depth(self) -> int:
        """How many ``particles`` calls enclose this frame."""
        return sum(1 for p in self.path if p.startswith("p"))

    @property
    def in_particles(self) -> bool:
        return self.depth > 0

    def next_key(self) -> jax.Array:
        """A fresh key for the ``i``-th call: row i of ``split(key, KEY_BLOCK)`` for the
        first ``KEY_BLOCK - 1`` calls, then ``fold_in`` of the block's last row by i.

        One split serves a program's first keys: on CPU every threefry call is a loop of
        its own in the compiled step, and for small models those loops, one per key, were
        a large part of the step's time (docs/design.md, "Keys").
        """
        i = self._counter
        self._counter += 1
        if self._block is None:
            self._block = jax.random.split(self.key, KEY_BLOCK)
        if i < KEY_BLOCK - 1:
            return self._block[i]
        return jax.random.fold_in(self._block[KEY_BLOCK - 1], i)

    def address(self, kind: str) -> tuple:
        """The address of this frame's next call of a kind (``"s"`` for sim, ``"d"`` for
        density, ``"p"`` for particles, ``"m"`` for logmeanexp, ``"n"`` for normalize)."""
        n = self._calls.get(kind, 0)
        self._calls[kind] = n + 1
        return self.path + (f"{kind}{n}",)

    def tag(self, x: Any, label: tuple) -> Any:
        """Mark a value of the program (see the module docstring)."""
        x = jnp.asarray(x)
        if self.mode == "analysis":
            from vi_ext.program.structure import tag

            return tag(x, label)
        delta = self.inputs.get(label)
        return x if delta is None else x + delta

    def child(self, key: jax.Array, path: tuple, inputs: Mapping[tuple, Any]) -> Frame:
        """A frame for one particle: same parameters, strategies, state and run info; its
        own key, path and records."""
        return Frame(self.params, key, self.estimators, inputs=inputs, state=self.state,
                     mode=self.mode, path=path, info=self.info)

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


def active_frame() -> Frame | None:
    """The innermost active frame, or None outside a transformation."""
    return _STACK[-1] if _STACK else None
