"""Plots of fits (matplotlib, imported lazily: the ``examples`` extra)."""

from __future__ import annotations

import os

import numpy as np


def moving_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centered moving median ignoring non-finite entries (a robust loss smoother)."""
    x = np.asarray(x, dtype=float)
    out = np.full_like(x, np.nan)
    half = window // 2
    for i in range(len(x)):
        w = x[max(0, i - half) : i + half + 1]
        w = w[np.isfinite(w)]
        if w.size:
            out[i] = np.median(w)
    return out


def plot_losses(losses, path: str | None = None, smooth: int | None = None,
                title: str = "loss") -> str | None:
    """Loss per step (light) and its moving median (dark), log-scaled when all positive."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    losses = np.asarray(losses, dtype=float)
    window = smooth or max(1, len(losses) // 50)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(len(losses))
    ax.plot(steps, losses, color="0.75", lw=0.6, label="per step")
    ax.plot(steps, moving_median(losses, window), color="C0", lw=1.5,
            label=f"moving median ({window})")
    finite = losses[np.isfinite(losses)]
    if finite.size and np.all(finite > 0) and finite.max() / max(finite.min(), 1e-300) > 50:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"-{title}")
    ax.set_title(f"fit: -{title} per step")
    ax.legend(frameon=False)
    fig.tight_layout()
    if path is None:
        return None
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
