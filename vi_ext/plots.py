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


def scalar_marginals(draws: dict, max_panels: int) -> list[tuple[str, np.ndarray]]:
    """(label, [S] draws) for the first ``max_panels`` scalar components of ``draws``."""
    out = []
    for name, v in draws.items():
        v = np.asarray(v, dtype=float).reshape(len(v), -1)
        for j in range(v.shape[1]):
            if len(out) >= max_panels:
                return out
            out.append((name if v.shape[1] == 1 else f"{name}[{j}]", v[:, j]))
    return out


def plot_fit(losses, posterior: dict | None, prior: dict | None, path: str | None = None,
             smooth: int | None = None, title: str = "loss",
             max_panels: int = 12) -> str | None:
    """The loss curve on top; below, histograms of guide draws against prior draws.

    The x-range of each marginal is the guide's 0.5-99.5% range widened threefold, so a
    wide prior (e.g. a half-Cauchy) does not flatten the posterior to a spike.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = scalar_marginals(posterior, max_panels) if posterior else []
    ncols = min(4, max(1, len(panels)))
    nrows = -(-len(panels) // ncols) if panels else 0
    fig = plt.figure(figsize=(max(6, 2.6 * ncols), 3.5 + 2.2 * nrows))
    grid = fig.add_gridspec(1 + nrows, ncols, height_ratios=[1.6] + [1.0] * nrows)
    ax = fig.add_subplot(grid[0, :])
    for i, (label, q) in enumerate(panels):
        pa = fig.add_subplot(grid[1 + i // ncols, i % ncols])
        q = q[np.isfinite(q)]
        lo, hi = np.percentile(q, [0.5, 99.5]) if q.size else (0.0, 1.0)
        mid, half = (lo + hi) / 2, max(hi - lo, 1e-6) * 1.5
        bins = np.linspace(mid - half, mid + half, 50)
        pname = label.split("[")[0]
        if prior and pname in prior:
            p = np.asarray(prior[pname], dtype=float).reshape(len(prior[pname]), -1)
            j = int(label.split("[")[1][:-1]) if "[" in label else 0
            pj = p[:, j]
            inside = pj[(pj >= bins[0]) & (pj <= bins[-1])]
            # a density of all the prior's draws, of which only the visible part is drawn
            pa.hist(inside, bins=bins, color="0.8", label="prior",
                    weights=np.full(len(inside), 1.0 / (len(pj) * (bins[1] - bins[0]))))
        pa.hist(q, bins=bins, density=True, histtype="step", color="C0", lw=1.5,
                label="guide")
        pa.set_title(label, fontsize=9)
        pa.tick_params(labelsize=7)
        pa.set_yticks([])
        if i == 0:
            pa.legend(frameon=False, fontsize=7)
    losses = np.asarray(losses, dtype=float)
    window = smooth or max(1, len(losses) // 50)
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
