"""Devices: a fit's minibatches and particles sharded across a JAX device mesh.

fit runs on JAX's own machinery: a :class:`jax.sharding.Mesh`, ``NamedSharding`` and one
``jax.jit`` with input and output shardings. Parameters and optimizer state are replicated;
the stacked minibatches of a chunk, ``[steps, B, ...]``, are split along B over the mesh
axis ``"data"``; the particles of :func:`vi_ext.program.particles` are split over the axis
``"particles"`` (by a sharding constraint on their keys, which XLA propagates through the
vectorized program). XLA's SPMD partitioner compiles the step to one program per device that
sums the gradient with an all-reduce: no host round trip per device or per step.

``fit(devices=4)`` (or a list of devices) builds a 1-D mesh whose axis is ``"data"`` when
data are streamed and ``"particles"`` otherwise; ``fit(mesh=...)`` takes any mesh with
either or both axes (other axes hold replicas).

Across hosts, call ``jax.distributed.initialize()`` in every process first, then pass a
mesh over ``jax.devices()`` (all hosts' devices): every process computes the same row
indices and reads only the rows of its own devices' shards
(``jax.make_array_from_callback``).

Reference: JAX, "Distributed arrays and automatic parallelization" and "Multi-host
and multi-process environments".
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from vi_ext.data import take_rows
from vi_ext.errors import ArgumentError

DATA_AXIS = "data"
PARTICLE_AXIS = "particles"

_PARTICLE_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar(
    "vi_ext_particle_mesh", default=None)


def resolve_mesh(devices: Any, mesh: Any, streaming: bool) -> Mesh | None:
    """fit's ``devices`` and ``mesh`` arguments as a Mesh (None: no sharding).

    Args:
        devices: None, a number of devices (the first ones of ``jax.devices()``), or a list
            of devices.
        mesh: None or a :class:`jax.sharding.Mesh` with an axis ``"data"`` and/or
            ``"particles"``.
        streaming: whether fit streams ``data`` (the 1-D mesh's axis is then ``"data"``).
    """
    if devices is not None and mesh is not None:
        raise ArgumentError("devices", "pass devices= or mesh=, not both.")
    if mesh is not None:
        if not isinstance(mesh, Mesh):
            raise ArgumentError("mesh", f"expected a jax.sharding.Mesh, got {mesh!r}.")
        if not {DATA_AXIS, PARTICLE_AXIS} & set(mesh.axis_names):
            raise ArgumentError(
                "mesh", f"has axes {mesh.axis_names}; name one '{DATA_AXIS}' (minibatch rows) "
                f"or '{PARTICLE_AXIS}' (particles), e.g. jax.make_mesh((4,), ('data',)).")
        # fit lets XLA's partitioner place the step's intermediates: its axes are Auto even
        # when the mesh was made with Explicit axes (jax.make_mesh's default)
        return Mesh(mesh.devices, mesh.axis_names,
                    axis_types=(AxisType.Auto,) * len(mesh.axis_names))
    if devices is None:
        return None
    available = jax.devices()
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ArgumentError(
                "devices", f"asked for {devices} devices, {len(available)} available "
                f"({available[0].platform}). On a CPU, simulate more with "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N (set before JAX starts).")
        chosen = available[:int(devices)]
    elif isinstance(devices, Sequence) and devices and all(
            isinstance(d, jax.Device) for d in devices):
        chosen = list(devices)
    else:
        raise ArgumentError("devices", f"expected a number of devices or a list of "
                            f"jax.Device, got {devices!r}.")
    axis = DATA_AXIS if streaming else PARTICLE_AXIS
    return Mesh(np.array(chosen), (axis,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole value (parameters, optimizer state, keys)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Stacked minibatches ``[steps, B, ...]`` split along B over the ``"data"`` axis."""
    if DATA_AXIS not in mesh.axis_names:
        return replicated(mesh)
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def axis_size(mesh: Mesh, axis: str) -> int:
    """Devices along ``axis`` (1 if the mesh has no such axis)."""
    return int(mesh.shape[axis]) if axis in mesh.axis_names else 1


def check_batch_size(mesh: Mesh, batch_size: int) -> None:
    """The batch must split evenly over the ``"data"`` axis."""
    n = axis_size(mesh, DATA_AXIS)
    if batch_size % n:
        raise ArgumentError(
            "batch_size", f"{batch_size} rows do not split evenly over the {n} devices of the "
            f"mesh axis '{DATA_AXIS}': use a multiple of {n}.")


def put_batches(arrays: Mapping[str, Any], rows: np.ndarray, mesh: Mesh | None,
                out: Mapping[str, np.ndarray] | None = None) -> dict:
    """Gather ``rows`` (``[steps, B]`` indices) of each array onto the devices.

    With a mesh, each process reads only the rows of its addressable devices' shards.
    Without one, the rows are gathered into ``out`` (name -> host buffer, see
    :class:`vi_ext.data.BatchBuffers`) if given, else into new arrays.
    """
    if mesh is None:
        return {k: jax.device_put(take_rows(a, rows, None if out is None else out[k]))
                for k, a in arrays.items()}
    sharding = batch_sharding(mesh)

    def one(a):
        shape = rows.shape + tuple(a.shape[1:])
        return jax.make_array_from_callback(
            shape, sharding, lambda index: take_rows(a, rows[index[0], index[1]]))

    return {k: one(a) for k, a in arrays.items()}


@contextlib.contextmanager
def particles_on(mesh: Mesh | None):
    """Within this context, :func:`vi_ext.program.particles` shards particles over ``mesh``."""
    token = _PARTICLE_MESH.set(mesh)
    try:
        yield
    finally:
        _PARTICLE_MESH.reset(token)


def constrain_particles(keys: jax.Array) -> jax.Array:
    """Shard the particles' keys ``[K, 2]`` over the ``"particles"`` axis, if one is active.

    K must be a multiple of the axis size; otherwise the keys are left as they are.
    """
    mesh = _PARTICLE_MESH.get()
    if mesh is None or PARTICLE_AXIS not in mesh.axis_names:
        return keys
    if keys.shape[0] % axis_size(mesh, PARTICLE_AXIS):
        return keys
    return jax.lax.with_sharding_constraint(
        keys, NamedSharding(mesh, PartitionSpec(PARTICLE_AXIS)))
