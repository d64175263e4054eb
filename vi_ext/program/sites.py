"""Log densities of NumPyro traces, site by site.

    log p(trace) = sum_{sample sites s} scale_s * sum(log p_s(value_s))

with plate subsampling scales applied as NumPyro does. The per-site form is what the
diagnostics use to name the sites whose log density went non-finite.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax.numpy as jnp
from numpyro.distributions.util import is_identically_one

from vi_ext.errors import SiteError


def site_log_prob(site: dict, *, check_shape: bool = False) -> jnp.ndarray:
    """The scaled log density of one sample site of a NumPyro trace, summed to a scalar.

    Args:
        site: a sample-site message of a NumPyro trace.
        check_shape: require the value's shape to equal the distribution's
            ``batch_shape + event_shape`` (used for latent values supplied by a guide).
    """
    return jnp.sum(site_log_prob_array(site, check_shape=check_shape))


def site_log_prob_array(site: dict, *, check_shape: bool = False) -> jnp.ndarray:
    """The scaled log density of one sample site, position by position (shape
    ``sample_shape + batch_shape``); see :func:`site_log_prob`."""
    fn, value = site["fn"], site["value"]
    if check_shape:
        expected = tuple(fn.shape())
        got = tuple(jnp.shape(value))
        if got != expected:
            raise SiteError(
                site["name"],
                f"the guide's value has shape {got} but the model's distribution there has "
                f"shape {expected} (batch_shape + event_shape, plates included). Make the "
                "guide sample the site inside the same plates and with the same event shape.",
            )
    if site.get("intermediates"):
        lp = fn.log_prob(value, site["intermediates"])
    else:
        lp = fn.log_prob(value)
    scale = site.get("scale")
    if scale is not None and not is_identically_one(scale):
        lp = scale * lp
    return lp


def sample_sites(trace: dict, *, observed: bool | None = None) -> Iterable[dict]:
    """The sample sites of a trace, optionally only the observed or only the latent ones."""
    for site in trace.values():
        if site["type"] != "sample":
            continue
        if observed is None or bool(site.get("is_observed")) == observed:
            yield site


def nonfinite_site_names(trace: dict) -> list[str]:
    """Names of the sample sites of ``trace`` whose (summed) log density is not finite.

    A site that cannot be scored at all (a shape error) is left out: that is reported
    elsewhere, with its own message.
    """
    bad = []
    for s in sample_sites(trace):
        try:
            ok = bool(jnp.isfinite(site_log_prob(s)))
        except Exception:  # noqa: BLE001 - see the docstring
            ok = True
        if not ok:
            bad.append(s["name"])
    return bad
