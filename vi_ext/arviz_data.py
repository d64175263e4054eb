"""ArviZ, across its major versions: the one place that knows how 0.x and 1.x differ.

- :func:`draws_to_arviz`: draws as ``InferenceData`` (ArviZ 0.x) or ``DataTree`` (1.x).
- :func:`pareto_smooth`: Pareto-smoothed importance weights and the shape k-hat, by
  ArviZ's PSIS (``az.psislw`` on 0.x, ``arviz_stats``' on 1.x). Every PSIS in vi_ext
  (``FitResult.psis_khat``, ``sample(correct="psis")``) goes through it.

PSIS (Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto Smoothed Importance Sampling", JMLR
2024) replaces the M = min(S / 5, 3 sqrt(S)) largest of S importance weights by the expected
order statistics of a generalized Pareto distribution fitted to them; its shape k-hat says
whether the weights can be trusted (below min(1 - 1 / log10(S), 0.7)).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _arviz_major() -> int:
    import arviz as az

    return int(az.__version__.split(".")[0])


def draws_to_arviz(draws: Mapping[str, np.ndarray], group_by_chain: bool = False,
                   sample_stats: Mapping[str, np.ndarray] | None = None):
    """Draws as ArviZ data: ``InferenceData`` on ArviZ 0.x, ``DataTree`` on ArviZ 1.x.

    Args:
        draws: ``{site: [S, ...]}`` (one chain), or ``{site: [chains, S, ...]}`` with
            ``group_by_chain=True``.
        sample_stats: optional sampler statistics ``{name: [chains, S]}``.
    """
    import arviz as az

    def chains(d):
        return {k: np.asarray(v) if group_by_chain else np.asarray(v)[None]
                for k, v in d.items()}

    groups = {"posterior": chains(draws)}
    if sample_stats:
        groups["sample_stats"] = {k: np.asarray(v) for k, v in sample_stats.items()}
    if _arviz_major() >= 1:
        return az.from_dict(groups)
    return az.from_dict(**groups)


def pareto_smooth(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, self-normalized log weights and the shape k-hat.

    Args:
        log_weights: [S] raw log importance weights log p - log q (any additive constant);
            NaN counts as -inf (zero weight).

    Returns:
        (log of normalized smoothed weights [S], k-hat). k-hat is ``inf`` when the tail has
        too few distinct values to fit (then the weights are only truncated).
    """
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim != 1 or lw.size < 5:
        raise ValueError(f"PSIS needs a 1-d array of at least 5 log weights, got shape "
                         f"{lw.shape}")
    if not np.any(np.isfinite(lw)):
        raise ValueError("PSIS: every log weight is non-finite (-inf or nan); the guide puts no "
                         "mass where the model has density.")
    lw = np.where(np.isnan(lw), -np.inf, lw)
    lw = lw - np.max(lw)
    if _arviz_major() >= 1:
        from arviz_stats.base import array_stats

        # arviz_stats' psislw takes log-likelihoods (PSIS-LOO's ratios are their negatives)
        smoothed, khat = array_stats.psislw(-lw)
    else:
        import arviz as az

        smoothed, khat = az.psislw(lw)
    smoothed = np.asarray(smoothed, dtype=np.float64)
    smoothed = smoothed - np.logaddexp.reduce(smoothed)
    return smoothed, float(khat)


def psis_threshold(num_samples: int) -> float:
    """The largest k-hat at which PSIS is reliable with ``num_samples`` draws."""
    return float(min(1.0 - 1.0 / np.log10(num_samples), 0.7))
