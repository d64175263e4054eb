"""Checkpoints of a fit: one ``.npz`` file, written atomically, read back exactly.

A checkpoint holds every leaf of the :class:`~vi_ext.fit.FitState` (unconstrained params,
optimizer state, strategy and stopping-rule state, PRNG key, step counters), the losses so
far, and JSON metadata (format version, the path, shape and dtype of every leaf, the fit's
objective and parameter names). Arrays are stored as they are, so a resumed fit continues
bit for bit where the saved one stopped.

Writing goes to a temporary file in the same directory, which is flushed, fsync'ed and then
renamed over the target (``os.replace`` is atomic on POSIX and Windows): a crash leaves
either the old checkpoint or the new one, never half of one. Reading checks the zip CRCs and
the metadata against the fit being resumed, and never modifies the file.

Why ``.npz`` + JSON and not orbax-checkpoint: see docs/design.md (one portable file, no
extra dependency, readable with numpy alone).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import zipfile
from typing import Any, NamedTuple

import jax
import numpy as np

from vi_ext.errors import VIError

FORMAT = "vi_ext.checkpoint"
VERSION = 1
_META = "__meta__"
_LOSSES = "__losses__"


class CheckpointError(VIError):
    """A checkpoint could not be written, read, or used to resume this fit.

    Attributes:
        path: the checkpoint file.
    """

    def __init__(self, path: str, message: str):
        self.path = str(path)
        super().__init__(f"checkpoint '{path}': {message}")


class Checkpoint(NamedTuple):
    """What :func:`load` returns.

    Attributes:
        state: the saved FitState (same structure as the template passed to ``load``).
        losses: the per-step losses of the steps taken so far.
        meta: the JSON metadata.
    """

    state: Any
    losses: np.ndarray
    meta: dict


def _leaves(state) -> tuple[list[str], list[np.ndarray], Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    paths = [jax.tree_util.keystr(p) for p, _ in flat]
    arrays = [np.asarray(leaf) for _, leaf in flat]
    return paths, arrays, treedef


def save(path: str, state: Any, losses: np.ndarray, info: dict | None = None) -> str:
    """Write ``state`` and ``losses`` to ``path`` atomically.

    Args:
        path: the target file (``.npz`` is conventional; any name works).
        state: a FitState (any pytree of arrays).
        losses: the losses of the steps taken so far.
        info: extra JSON-serializable metadata (objective, parameter names...).

    Returns:
        the path written.
    """
    path = os.fspath(path)
    paths, arrays, _ = _leaves(state)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "leaves": [
            {"path": p, "shape": list(a.shape), "dtype": str(a.dtype)}
            for p, a in zip(paths, arrays, strict=True)
        ],
        "num_losses": int(len(losses)),
        "info": info or {},
    }
    payload = {f"leaf_{i:05d}": a for i, a in enumerate(arrays)}
    payload[_LOSSES] = np.asarray(losses, dtype=np.float64)
    payload[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CheckpointError(path, f"could not be written: {e}") from e
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def read(path: str) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    """The metadata, the leaf arrays (by path) and the losses of a checkpoint file.

    Raises:
        CheckpointError: the file is missing, unreadable, truncated, or not a vi_ext
            checkpoint of a version this vi_ext reads. The file is left untouched.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(
            path, "no such file. Pass resume= the path a previous fit(checkpoint=...) wrote."
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if _META not in names:
                raise CheckpointError(path, "is not a vi_ext checkpoint (no metadata record).")
            meta = json.loads(bytes(z[_META]).decode("utf-8"))
            if meta.get("format") != FORMAT:
                raise CheckpointError(path, "is not a vi_ext checkpoint (unknown format).")
            if meta.get("version") != VERSION:
                raise CheckpointError(
                    path,
                    f"was written in checkpoint format version {meta.get('version')}; this "
                    f"vi_ext reads version {VERSION}. Resume it with the vi_ext that wrote it.",
                )
            leaves = {}
            for i, leaf in enumerate(meta["leaves"]):
                leaves[leaf["path"]] = z[f"leaf_{i:05d}"]  # reading checks the zip CRC
            losses = np.asarray(z[_LOSSES])
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError, UnicodeDecodeError,
            json.JSONDecodeError) as e:
        raise CheckpointError(
            path,
            f"is corrupted or truncated and cannot be read ({type(e).__name__}: {e}). The file "
            "was left as it is; resume from an earlier copy or start the fit afresh.",
        ) from e
    return meta, leaves, losses


def load(path: str, template: Any) -> Checkpoint:
    """Read a checkpoint into the structure of ``template`` (the state of the fit to resume).

    Raises:
        CheckpointError: unreadable (see :func:`read`), or written by a fit with other
            parameters, optimizer or strategies; the message names the first leaf that
            differs.
    """
    meta, saved, losses = read(path)
    paths, arrays, treedef = _leaves(template)
    missing = [p for p in paths if p not in saved]
    extra = [p for p in saved if p not in set(paths)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"this fit has {missing[:3]} which the checkpoint lacks")
        if extra:
            parts.append(f"the checkpoint has {extra[:3]} which this fit lacks")
        raise CheckpointError(
            path,
            "was written by a different fit: " + "; ".join(parts) + ". Resume with the same "
            "model, guide, objective, optimizer and estimators as the fit that wrote it.",
        )
    out = []
    for p, a in zip(paths, arrays, strict=True):
        s = saved[p]
        if s.shape != a.shape or s.dtype != a.dtype:
            raise CheckpointError(
                path,
                f"leaf {p} is {s.dtype}{list(s.shape)} in the checkpoint but "
                f"{a.dtype}{list(a.shape)} in this fit (different data sizes, guide or "
                "optimizer?). Resume with the same setup as the fit that wrote it.",
            )
        out.append(jax.numpy.asarray(s))
    state = jax.tree_util.tree_unflatten(treedef, out)
    return Checkpoint(state, losses, meta)
