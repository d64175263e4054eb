"""The strategy a site gets when the user names none."""

from __future__ import annotations

from vi_ext.errors import SiteError
from vi_ext.estimators.base import Site, Strategy
from vi_ext.estimators.reparam import Reparam


def default_strategy(site: Site) -> Strategy:
    """Reparameterization where the distribution supports it, else a clear error.

    Args:
        site: the guide sample site.

    Raises:
        SiteError: the site's distribution has no reparameterized sampler and no strategy was
            chosen for it.
    """
    if getattr(site.fn, "has_rsample", False):
        return Reparam()
    kind = type(site.fn).__name__
    raise SiteError(
        site.name,
        f"the guide samples a {kind} distribution, which cannot be reparameterized, and no "
        "gradient strategy was chosen for it. Pass one per call, e.g. "
        "estimators={'" + site.name + "': vx.estimators.enum()}, or in the guide with "
        "infer={'estimator': ...}.",
    )
