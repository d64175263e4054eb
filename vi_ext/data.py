"""Minibatches streamed from host memory or from memory-mapped .npy files.

``fit(model, data={"x": X, "y": y}, batch_size=B)`` calls the model with one minibatch per
step as keyword arguments: ``model(*args, x=X[rows_t], y=y[rows_t], **kwargs)``. The rows of
step t are a deterministic function of (key, t): epoch e = t // (N // B) visits the rows in
the order of a permutation drawn from (key, e) (or in file order with ``shuffle=False``),
and the last N mod B rows of each order are left out of that epoch, so every batch has the
static shape jit needs. A resumed fit therefore sees the same batches as one never stopped.

Arrays may be NumPy arrays, anything ``np.asarray`` accepts, or paths to ``.npy`` files,
which are memory-mapped read-only (``np.load(mmap_mode="r")``): only the rows of the
batches are read. Epoch orders are stored up to 2^20 rows (4 MiB) and computed beyond: a
keyed Feistel permutation of [0, N) (:mod:`vi_ext.orders`) maps a batch's positions to
rows in O(B) time and memory, so the process's own memory does not grow with N. (The pages a
memory map reads are the kernel's page cache: they count in the process's resident size
while mapped, but are shared, clean, and dropped by the kernel under memory pressure.)
The host gathers the next chunk's rows while the device computes the current chunk
(:class:`Prefetcher`).

The model must scale the likelihood of a minibatch by N / B, as NumPyro's own subsampling
does: declare the data plate with the full size and the batch size,
``numpyro.plate("data", num_data, subsample_size=x.shape[0])``, and pass
``num_data=N`` to fit. fit checks this on the first batch (:func:`check_scaled`).

Reference: the minibatch ELBO of stochastic variational inference, Hoffman et al., JMLR 14
(2013), and NumPyro's ``plate(subsample_size=...)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.primitives import Messenger

from vi_ext import orders
from vi_ext.errors import ArgumentError


def open_npy(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` file, memory-mapped read-only, checked for streaming.

    Raises:
        ArgumentError: the file is not a ``.npy`` array of numbers with contiguous rows.
    """
    path = os.fspath(path)
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ArgumentError("data", f"{path!r} is not a .npy file: {e}") from None
    if not isinstance(a, np.ndarray):
        raise ArgumentError("data", f"{path!r} is not a .npy file (an .npz archive?).")
    if a.ndim > 1 and not a.flags.c_contiguous:
        raise ArgumentError("data", f"{path!r} is Fortran-ordered; rows must be contiguous: "
                            "save it with np.save(path, np.ascontiguousarray(a)).")
    return a


def take_rows(a: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a``'s rows at the indices ``rows`` (any shape), as an in-memory array of shape
    ``rows.shape + a.shape[1:]``, written into ``out`` if given (that shape and a's dtype,
    C-contiguous; otherwise :class:`~vi_ext.errors.ArgumentError`).

    ``np.take(a, rows, axis=0)`` copies whole rows; ``a[rows]`` (fancy indexing) goes through
    NumPy's general index iterator and, on a memory map, its subclass: half the speed on a
    chunk of 25 x 1024 random rows of 100 floats (2.5 -> 1.2 ms, docs/design.md). Into
    ``out``, ``mode="clip"``: NumPy buffers the whole result when ``mode="raise"`` (the
    indices are in range by construction, so clipping never acts).
    """
    flat = rows.reshape(-1)
    shape = rows.shape + a.shape[1:]
    if out is None:
        return np.take(np.asarray(a), flat, axis=0).reshape(shape)
    if out.shape != shape or out.dtype != a.dtype or not out.flags.c_contiguous:
        raise ArgumentError("out", f"expected a C-contiguous {a.dtype} array of shape {shape} "
                            f"(the rows' shape, then a row's), got {out.dtype} {out.shape}.")
    np.take(np.asarray(a), flat, axis=0, out=out.reshape((flat.size, *a.shape[1:])),
            mode="clip")
    return out


def aligned_empty(shape: tuple, dtype: Any, align: int = 64) -> np.ndarray:
    """An uninitialized array whose data start on an ``align``-byte boundary.

    JAX's CPU client wraps an aligned host array without copying it (``jax.device_put``
    aliases its memory); an unaligned one is copied.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


class BatchBuffers:
    """Two aligned host buffers per array, handed out in turn, for a loop's chunks.

    The loop gathers chunk k+1 while the device computes chunk k, and reads chunk k's
    results before it gathers chunk k+2: so chunk k+2 may reuse chunk k's buffers, whose
    computation has ended. Reused, page-aligned buffers save the two costs of a fresh batch
    a chunk: the kernel zero-filling new pages as the gather first touches them, and, on
    the CPU backend, ``device_put``'s copy (it aliases an aligned buffer instead). On a 25
    x 1024 x 100 float32 chunk (about 5 ms in all) the copy cost 1.2 ms and a fresh buffer's
    zero-fill 2.5 ms (docs/design.md).

    Only correct for a consumer that never holds more than one chunk in flight while a
    buffer is filled (the fit loop; :class:`Prefetcher`'s order): call :meth:`next` once
    per gathered chunk.

    Args:
        arrays: name -> array (rows on the first axis), as in :class:`Dataset`.
        rows_shape: the shape of a chunk's row indices, ``(length, B)``.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], rows_shape: tuple[int, ...]):
        self._slots = [{k: aligned_empty((*rows_shape, *a.shape[1:]), a.dtype)
                        for k, a in arrays.items()} for _ in range(2)]
        self._turn = 0

    def next(self) -> dict:
        """The other pair's buffers: name -> array of ``rows_shape + a.shape[1:]``."""
        self._turn ^= 1
        return self._slots[self._turn]


class Dataset(NamedTuple):
    """Named arrays with a common number of rows, streamed in minibatches.

    Attributes:
        arrays: name -> array (NumPy array or read-only memory map), rows on the first axis.
        num_rows: N, the common length.
        batch_size: B, rows per step (1 <= B <= N).
        shuffle: reshuffle the rows every epoch (False: file order).
        seed: two uint32 words from which every epoch's permutation is derived.
    """

    arrays: dict
    num_rows: int
    batch_size: int
    shuffle: bool
    seed: tuple

    @property
    def steps_per_epoch(self) -> int:
        """N // B: full batches per epoch."""
        return self.num_rows // self.batch_size

    @property
    def computed_order(self) -> bool:
        """Whether epoch orders are computed per batch (:func:`vi_ext.orders.permute`), not
        stored."""
        return self.shuffle and orders.computed(self.num_rows)

    def record(self) -> dict:
        """What decides the batches of every step (rows, batch size, order and its seed), as
        a checkpoint records it: a fit resumed with the same record sees the same batches."""
        return {"num_rows": int(self.num_rows), "batch_size": int(self.batch_size),
                "order": orders.scheme(self.num_rows, self.shuffle),
                "seed": [int(w) for w in self.seed]}

    def rows(self, step: int) -> np.ndarray:
        """The row indices of step ``step`` (sorted: a sum over rows ignores their order)."""
        return self.chunk_rows(step, 1, 1)[0]

    def batch(self, step: int) -> dict:
        """The minibatch of step ``step``: name -> array with B rows."""
        idx = self.rows(step)
        return {k: take_rows(a, idx) for k, a in self.arrays.items()}

    def chunk_rows(self, start: int, count: int, length: int) -> np.ndarray:
        """Row indices of steps start .. start+count-1, stacked: ``[length, B]``.

        Slots count .. length-1 (padding for a chunk's static length) repeat the last step.
        The whole chunk is permuted in one vectorized call per epoch it spans.
        """
        B = self.batch_size
        epochs, place = np.divmod(np.arange(start, start + count), self.steps_per_epoch)
        if self.shuffle:
            # the steps of one epoch are consecutive, and so are their positions in its
            # order: one slice of a stored order (or one computed range) per epoch
            rows = np.empty((count, B), np.int64)
            first = np.flatnonzero(np.diff(epochs, prepend=-1))
            for i, j in zip(first, [*first[1:], count], strict=True):
                lo, hi = int(place[i]) * B, (int(place[j - 1]) + 1) * B
                rows[i:j] = orders.epoch_order(self.seed, int(epochs[i]), self.num_rows,
                                               slice(lo, hi)).reshape(j - i, B)
            rows.sort(axis=1)
        else:
            rows = place[:, None] * B + np.arange(B)
        if length > count:
            rows = np.concatenate([rows, np.repeat(rows[-1:], length - count, axis=0)])
        return rows


def as_dataset(data: Mapping[str, Any], batch_size: Any, shuffle: Any,
               key: jax.Array) -> Dataset:
    """Validate fit's ``data``, ``batch_size`` and ``shuffle`` into a :class:`Dataset`."""
    if not isinstance(data, Mapping) or not data:
        raise ArgumentError("data", "expected a dict: model keyword -> array (or a path to a "
                            f".npy file) with one row per data point, got {data!r}.")
    arrays: dict = {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise ArgumentError("data", f"keys must be the model's keyword names, got {name!r}.")
        if isinstance(value, (str, os.PathLike)):
            if not os.path.exists(value):
                raise ArgumentError("data", f"data[{name!r}]: no file {os.fspath(value)!r}.")
            value = open_npy(value)
        elif not isinstance(value, np.ndarray):
            try:
                value = np.asarray(value)
            except Exception as e:  # noqa: BLE001 - reported with the key
                raise ArgumentError("data", f"data[{name!r}] is not an array: {e}") from None
        if value.ndim == 0:
            raise ArgumentError("data", f"data[{name!r}] is a scalar; data arrays need one row "
                                "per data point (pass scalars as model keyword arguments).")
        if value.dtype.kind not in "biuf":
            raise ArgumentError("data", f"data[{name!r}] has dtype {value.dtype}; "
                                "expected numbers.")
        arrays[name] = value
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ArgumentError("data", f"arrays must have the same number of rows, got {lengths}.")
    n = next(iter(lengths.values()))
    if batch_size is None:
        raise ArgumentError("batch_size", "data= needs batch_size= (rows per step).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or not 1 <= batch_size <= n:
        raise ArgumentError("batch_size", f"expected an int in [1, {n}] (the number of rows), "
                            f"got {batch_size!r}.")
    if not isinstance(shuffle, bool):
        raise ArgumentError("shuffle", f"expected True or False, got {shuffle!r}.")
    words = np.asarray(jax.random.key_data(jax.random.fold_in(key, 0x0DA7A)), np.uint32)
    return Dataset(arrays, n, int(batch_size), shuffle, tuple(int(w) for w in words.ravel()))


class StreamPlates(Messenger):
    """Supply the subsample indices of a plate that subsamples the streamed rows.

    A plate declared ``plate(name, N, subsample_size=B)`` (N the rows of ``data``, B the batch
    size) would draw B of N indices at every step (O(N) on the CPU); fit has drawn the rows
    already, so the plate gets ``arange(B)``: indexing the batch with them is the identity,
    and the plate still scales the batch's log likelihood by N / B.
    """

    def __init__(self, fn: Callable | None, num_rows: int, batch_size: int):
        self.num_rows, self.batch_size = num_rows, batch_size
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "plate" or msg["value"] is not None:
            return
        size, subsample = tuple(msg["args"])[:2]
        if subsample == self.batch_size and size != self.num_rows:
            # (the data plate declared with another N: it would draw its own indices)
            raise ArgumentError(
                "data", f"the plate '{msg['name']}' subsamples {subsample} of {size} rows, but "
                f"data= has {self.num_rows} rows: declare it with the data's size "
                f"(num_data={self.num_rows}) so that the batch is scaled by N / B.")
        if (size, subsample) == (self.num_rows, self.batch_size):
            msg["value"] = jnp.arange(self.batch_size)


def check_scaled(trace: Mapping[str, dict], dataset: Dataset) -> None:
    """Raise if an observed site's batch is not scaled up to the N rows of data.

    Args:
        trace: a model trace run on the first batch.
        dataset: the streamed data.
    """
    n, b = dataset.num_rows, dataset.batch_size
    if n == b:
        return
    for site in trace.values():
        if site["type"] != "sample" or not site.get("is_observed"):
            continue
        shape = np.shape(site["value"])
        scale = site.get("scale")
        scaled = scale is not None and bool(np.all(np.isclose(np.asarray(scale), n / b)))
        if b in shape and not scaled:
            raise ArgumentError(
                "data",
                f"the observed site '{site['name']}' has a minibatch of {b} rows but its log "
                f"likelihood is scaled by {1.0 if scale is None else scale}, not N / B = "
                f"{n}/{b}: the fit would weigh {b} rows as if they were all the data. Declare "
                "the data plate with the full size and the batch size, e.g. "
                "numpyro.plate('data', num_data, subsample_size=x.shape[0]), and pass "
                f"num_data={n} to fit.",
            )


class Prefetcher:
    """Gather the batches of the next chunk of steps while the device computes this one.

    The fit loop calls :meth:`get` for the chunk it is about to run, dispatches the chunk
    (JAX dispatch is asynchronous: the call returns while the device computes), then calls
    :meth:`prepare` for the following chunk, which gathers its rows on the host during the
    device's computation. Gathering on the main thread, after dispatch, measured faster on
    2 cores than a background thread: the thread competed with the device's own threads for
    the cores and with the main thread for the GIL (docs/design.md). Only the rows of a
    computed epoch order (N above :data:`vi_ext.orders.STORED_ORDER_MAX_ROWS`: a millisecond
    or two of integer arithmetic a chunk) are computed one chunk ahead, on a thread, beside
    the gather's reads.

    Args:
        dataset: the :class:`Dataset`.
        length: the chunk length (static: shorter chunks are padded).
        put: ``rows [length, B] -> device arrays`` (see
            :func:`vi_ext.sharding.put_batches`).
    """

    def __init__(self, dataset: Dataset, length: int, put: Callable[[np.ndarray], Any]):
        self.dataset, self.length, self.put = dataset, length, put
        self._ready: tuple | None = None
        self._rows: tuple | None = None
        self._pool: ThreadPoolExecutor | None = None

    def _chunk_rows(self, start: int, count: int) -> np.ndarray:
        ahead, self._rows = self._rows, None
        if ahead is not None and ahead[:2] == (start, count):
            return ahead[2].result()
        return self.dataset.chunk_rows(start, count, self.length)

    def _load(self, start: int, count: int) -> Any:
        return self.put(self._chunk_rows(start, count))

    def prepare(self, start: int, count: int, then: tuple[int, int] | None = None) -> None:
        """Gather steps start..start+count-1 now, for a later :meth:`get`; with ``then``
        (start, count) of the chunk after it, compute that chunk's rows on a thread
        meanwhile (a computed epoch order costs milliseconds of arithmetic a chunk, which
        runs beside the gather's reads)."""
        rows = self._chunk_rows(start, count)
        if then is not None and self.dataset.computed_order:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="vi_ext-rows")
            self._rows = (*then, self._pool.submit(self.dataset.chunk_rows, *then,
                                                   self.length))
        self._ready = (start, count, self.put(rows))

    def get(self, start: int, count: int) -> Any:
        """The batches of steps start..start+count-1 (prepared ones if they match)."""
        ready, self._ready = self._ready, None
        if ready is not None and ready[:2] == (start, count):
            return ready[2]
        return self._load(start, count)

    def close(self) -> None:
        """Stop the rows thread, if any."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._rows = None
