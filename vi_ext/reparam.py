"""Centered and non-centered forms of a model: a centering learned by the fit (used by NUTS),
or the non-centered form the default fit races against the model as written.

A latent z ~ F(loc, scale) of a location-scale family F (Normal, Laplace, Cauchy, Logistic,
Gumbel, StudentT) can be sampled partially centered (Gorinova, Moore & Hoffman, 2020):

    z_c ~ F(c loc, scale^c),     z = loc + scale^(1 - c) (z_c - c loc),     c in [0, 1],

which leaves the joint distribution of z and the rest of the model unchanged for every c:
c = 1 is the centered model, c = 0 the non-centered one (z_c ~ F(0, 1)). Which one a
hierarchical model wants depends on the data: centered when the data pin each z down,
non-centered when the prior dominates, as in eight schools, whose centered form is a funnel.

:func:`learned_centering` wraps a model so that each such site gets NumPyro's
``LocScaleReparam(centered=None)``: c is a model parameter ``<site>_centered``, which
:func:`vi_ext.fit` optimizes with the guide (maximizing the ELBO picks the parameterization
a Gaussian guide fits best, which is one NUTS finds easy). :meth:`FitResult.refine` then
samples the model at the learned c: the same posterior, a better geometry. On centered
eight schools the fit learns c ~ 0.04 and refine's effective samples per second rise
about 16-fold (benchmarks/refine.py).

:func:`noncentered` fixes c = 0 for the sites it names, and :func:`hierarchical_sites` finds
the sites where the choice matters: the location-scale latents whose location or scale
depends on another latent (for a site with a constant location and scale the two forms
differ by an affine map, which a Gaussian guide absorbs). :func:`noncentered` reaches into
``scan`` bodies, where a state-space model draws its states: non-centered, the path is a
deterministic function of its first state and innovations. ``vx.fit(model)`` with the
default guide runs a short race of the default fit of the model as written against that
of its non-centered form, and fits the better (``reparam="auto"``,
:mod:`vi_ext.fit.forms`). It does not learn c during the fit: where the best c is 0 or 1
(Neal's funnel, a banana) its logit drifts towards infinity at every step, and no
stationarity test can say the fit has converged.

Reference:
    Gorinova, Moore, Hoffman. Automatic Reparameterisation of Probabilistic Programs.
    ICML 2020 (VIP, variationally inferred parameterization).
    Papaspiliopoulos, Roberts, Skold. A general framework for the parametrization of
    hierarchical models. Statistical Science 2007 (centered and non-centered forms).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.contrib.control_flow.scan import scan_wrapper
from numpyro.distributions import constraints
from numpyro.infer.inspect import get_dependencies
from numpyro.infer.reparam import LocScaleReparam

from vi_ext.errors import ArgumentError, SiteError

#: families with loc and scale that LocScaleReparam rebuilds; value: their shape parameters
FAMILIES: dict[type, tuple[str, ...]] = {
    dist.Normal: (),
    dist.Laplace: (),
    dist.Cauchy: (),
    dist.Logistic: (),
    dist.Gumbel: (),
    dist.StudentT: ("df",),
}


def _base(fn):
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn


def _in_scan(msg: dict) -> bool:
    """A site of a ``numpyro.contrib.control_flow.scan`` body as the handlers outside the body
    see it: scan hands it to them with its value already drawn, so it cannot be
    reparameterized from there (:class:`_IntoScan` reaches into the body instead)."""
    return bool(msg.get("_control_flow_done")) or "_scan_current_index" in msg.get("infer", {})


class _IntoScan(handlers.reparam):
    """NumPyro's ``reparam`` handler carried into the bodies of ``scan`` (and of scans
    nested in them).

    ``scan`` runs its body under ``block`` and hands the body's sites to the handlers outside
    it only afterwards, stacked over time and with their values drawn: a reparam handler
    outside the body cannot change how a site in it is sampled. ``scan`` does announce
    itself first, as a ``control_flow`` message whose arguments hold the body function; this
    handler wraps that body in a copy of itself, so that inside the body each site meets the
    same ``config`` as a site outside, before it is sampled. The sites the body then reports
    (a reparameterized ``z`` as ``z_decentered`` and a deterministic ``z``) reach the outer
    handlers as any scanned site does; this handler leaves those reports alone.
    """

    def process_message(self, msg):
        if msg["type"] == "control_flow" and msg["fn"] is scan_wrapper:
            # (cond announces itself the same way; its branches are left as written)
            body, *rest = msg["args"]
            msg["args"] = (_IntoScan(body, config=self.config), *rest)
            return
        if msg.get("_control_flow_done"):
            return
        super().process_message(msg)


def _shape_params(site: dict) -> tuple[str, ...] | None:
    """The shape parameters of a latent site of a real-valued location-scale family (what
    LocScaleReparam copies unchanged); None for any other site. Works on a message or on a
    trace's record of it, in a scan body or not."""
    if site["type"] != "sample" or site.get("is_observed") or \
            site["name"].endswith("_decentered"):
        return None
    base = _base(site["fn"])
    shape_params = FAMILIES.get(type(base))
    if shape_params is None or base.support is not constraints.real:
        return None
    return shape_params


def _reparameterizer(msg: dict, centered: float | None = None) -> LocScaleReparam | None:
    """LocScaleReparam(centered) for a message of a site :func:`_shape_params` accepts,
    unless its value is already set inside the model (a substitute or condition handler
    within it); None otherwise. A learned centering (``centered=None``) leaves scan sites
    alone: its parameter ``<site>_centered`` would be declared once per time step."""
    shape_params = _shape_params(msg)
    if shape_params is None or msg.get("value") is not None or \
            (centered is None and _in_scan(msg)):
        return None
    return LocScaleReparam(centered=centered, shape_params=shape_params)


def learned_centering(model: Callable, sites: Iterable[str] | None = None) -> Callable:
    """The model with a learned centering c in [0, 1] for each location-scale latent.

    Args:
        model: a NumPyro model.
        sites: names of the latent sites to reparameterize; ``None``: every latent site of a
            family in :data:`FAMILIES` (sites of other families, and sites inside a
            ``scan`` body, are left alone).

    Returns:
        a NumPyro model with the same arguments. Each reparameterized site ``z`` becomes a
        latent ``z_decentered``, a deterministic ``z`` (so draws still carry ``z``), and a
        model parameter ``z_centered`` (initialized at 0.5) that :func:`vi_ext.fit` learns.

    Raises:
        ArgumentError: ``sites`` is not a collection of names.
        SiteError: when the model first runs, a named site that does not exist, is
            observed, is inside a ``scan`` body, or is not of a location-scale family with
            real support.

    Example:
        >>> vip = vx.reparam.learned_centering(eight_schools.centered)
        >>> res = vx.fit(vip, num_steps=3000, **eight_schools.data())
        >>> res.params["theta_centered"]          # ~0.04: nearly non-centered
        >>> draws = res.refine(num_samples=1000)  # NUTS at the learned parameterization
    """
    return _centered_at(model, sites, None)


def noncentered(model: Callable, sites: Iterable[str] | None = None) -> Callable:
    """The model with each named location-scale latent in non-centered form:

        z ~ F(loc, scale)   becomes   z_decentered ~ F(0, 1),  z = loc + scale * z_decentered,

    the same joint distribution of z and the rest of the model, another geometry (the
    centering c = 0 of :func:`learned_centering`).

    Args:
        model: a NumPyro model.
        sites: names of the latent sites; ``None``: every latent site of a family in
            :data:`FAMILIES`, in ``scan`` bodies too (:func:`hierarchical_sites` lists the
            ones where the form matters).

    Returns:
        a NumPyro model with the same arguments; each named site ``z`` becomes a latent
        ``z_decentered`` and a deterministic ``z``.

    Raises:
        ArgumentError, SiteError: as :func:`learned_centering`.

    Example:
        >>> nc = vx.reparam.noncentered(eight_schools.centered, sites=["theta"])
        >>> res = vx.fit(nc, **eight_schools.data())   # draws carry theta and theta_decentered
    """
    return _centered_at(model, sites, 0.0)


def hierarchical_sites(model: Callable, args: tuple = (), kwargs: dict | None = None,
                       trace: dict | None = None) -> tuple[str, ...]:
    """The latent sites of a location-scale family whose distribution depends on another
    latent site: the sites whose centered and non-centered forms differ by more than an
    affine map. A site in a ``scan`` body qualifies when it depends on a latent other than
    itself at the previous step (a state-space model's state, whose location is the
    dynamics applied to the last state and whose scale is a latent noise level).

    Dependencies are NumPyro's provenance analysis (``numpyro.infer.inspect.
    get_dependencies``), on the model's own arguments.

    Args:
        model: a NumPyro model.
        args: its positional arguments.
        kwargs: its keyword arguments (observations included).
        trace: a prior trace of the model, if one is at hand (saves a run of the model: the
            dependency analysis is skipped when no site could qualify).

    Returns:
        the site names, in the model's order; empty when there are none.
    """
    kwargs = dict(kwargs or {})
    if trace is None:
        with numpyro.validation_enabled(False):
            trace = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    candidates = [n for n, s in trace.items() if _shape_params(s) is not None]
    if not candidates:
        return ()
    latent = {n for n, s in trace.items() if s["type"] == "sample" and not s.get("is_observed")}
    with numpyro.validation_enabled(False):
        deps = get_dependencies(model, tuple(args), kwargs)["prior_dependencies"]
    return tuple(n for n in candidates if (set(deps.get(n, ())) - {n}) & latent)


def _centered_at(model: Callable, sites: Iterable[str] | None, centered: float | None
                 ) -> Callable:
    if not callable(model):
        raise ArgumentError("model", f"expected a NumPyro model (a function), got {model!r}.")
    if sites is not None:
        if isinstance(sites, str) or not all(isinstance(s, str) for s in sites):
            raise ArgumentError("sites", f"expected a list of site names, got {sites!r}.")
        sites = frozenset(sites)

    def config(msg):
        if sites is not None and msg["name"] not in sites:
            return None
        rp = _reparameterizer(msg, centered)
        if rp is None and sites is not None and msg["type"] == "sample":
            _refuse(msg)
        return rp

    # a fixed centering reaches into scan bodies; a learned one cannot (_reparameterizer)
    handler = handlers.reparam if centered is None else _IntoScan

    @functools.wraps(model)
    def wrapped(*args, **kwargs):
        if sites is None:
            return handler(model, config=config)(*args, **kwargs)
        with handlers.trace() as tr:
            out = handler(model, config=config)(*args, **kwargs)
        names = {n.removesuffix("_decentered") for n, s in tr.items()
                 if s["type"] in ("sample", "deterministic")}
        missing = sorted(sites - names)
        if missing:
            raise SiteError(missing[0], "is not a site of the model; sites=[...] names "
                            f"sites the model has ({sorted(names)}).")
        return out

    return wrapped


def _refuse(msg: dict) -> None:
    name = msg["name"]
    if msg.get("is_observed"):
        raise SiteError(name, "is observed; a centering applies to latent sites only.")
    if _in_scan(msg):
        raise SiteError(name, "is sampled inside a scan body, where a learned centering's "
                        "parameter would be declared once per step; non-center it "
                        "(vx.reparam.noncentered) or write the centering in the body.")
    if msg.get("value") is not None:
        raise SiteError(name, "has its value set inside the model (a substitute or condition "
                        "handler within it): there is nothing to reparameterize.")
    base = _base(msg["fn"])
    families = ", ".join(f.__name__ for f in FAMILIES)
    raise SiteError(name, f"is {type(base).__name__} with support {base.support}; a "
                    f"centering needs a location-scale family with real support ({families}).")
