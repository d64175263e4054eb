"""The strategy protocol: how one draw of a guide site is made and differentiated.

A *strategy* decides, for one draw of a guide sample site, how its value is produced and what
it adds to the surrogate whose reverse-mode derivative is the gradient estimate. The protocol
is small and public; the built-in strategies use it exactly as a user's would, and the
transformation (:mod:`vi_ext.program.transform`) knows no particular strategy.

A strategy is an object with

``name: str``
    used in error messages and reports.

``sample(site, key) -> Draw`` (or a bare array, meaning ``Draw(value)``)
    called when the guide reaches the site inside :func:`vi_ext.program.sim`; ``site`` is a
    :class:`Site` (its ``address`` names this draw: two ``sim`` calls, or two particles, are
    two draws). The :class:`Draw` returned says what the strategy needs from the program.

``contribute(view) -> Contribution`` (optional)
    called after the program has returned its value F, with a
    :class:`~vi_ext.program.view.DrawView`: the draw, its log density, the structure of the
    program (is F affine in this draw's terms? through which ``logmeanexp`` does F depend on
    it?), the learning signal if one was asked for, the strategy state. It returns the terms
    this draw adds to the surrogate, its state update, or a rescaling of its pathwise
    derivative, or refuses with ``view.refuse(reason)``.

``answer(view, run) -> (surrogate, value)`` (optional; with ``Draw(continuation=True)``)
    combines re-runs of the whole program, ``run({address: value})``, in which this draw is
    pinned and every other draw sees the same random numbers (enumeration, measure-valued
    derivatives).

Strategies are attached per call (``estimators={"z": vx.estimators.reparam()}``) or in the
guide (``numpyro.sample("z", d, infer={"estimator": vx.estimators.reparam()})``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax


class Site(NamedTuple):
    """What a strategy sees of one draw of a guide sample site.

    Attributes:
        name: the site's name.
        fn: the site's NumPyro distribution, already expanded by the enclosing plates.
        sample_shape: the ``sample_shape`` the site was called with.
        infer: the site's ``infer`` dict.
        address: the draw's address in the program: the ``particles`` and ``sim`` calls that
            lead to it, then the site name. Unique per draw.
        plates: the site's plates, ``(name, dim, size)`` with ``dim`` < 0 counted from the
            right of the batch shape.
    """

    name: str
    fn: Any
    sample_shape: tuple[int, ...]
    infer: dict
    address: tuple = ()
    plates: tuple = ()


class Draw(NamedTuple):
    """A strategy's draw of a site, and what the strategy needs from the program.

    Attributes:
        value: the site's value (shape ``sample_shape + batch_shape + event_shape``). A
            pathwise strategy returns a differentiable function of the site's parameters; a
            score-function strategy a value with its gradient stopped.
        log_prob: the site's log density to enter ``log q``, position by position (shape
            ``sample_shape + batch_shape``); None: ``fn.log_prob(value)``.
        intermediates: NumPyro's sampling intermediates of the value (a transformed
            distribution scores its draw from them without inverting its transform).
        stop_params: score the draw with the guide's parameters held constant (the values
            upstream of it in the guide stay live), as sticking-the-landing and DReG do.
        integrate: take the expectation over this site exactly, position by position, in
            ``sim`` (its ``log q`` term becomes E_q[log q]) and in ``density`` (the model's
            factors of the site are averaged under q); the value is a placeholder the program
            must not use.
        continuation: the strategy answers with re-runs of the program (``answer``).
        signal: compute the draw's learning signal (the part of F that depends on it, per
            position) and hand it to ``contribute`` as ``view.signal``.
        data: anything (a pytree of arrays) the strategy wants back in ``contribute`` or
            ``answer``, e.g. a key for its own later draws.
    """

    value: Any
    log_prob: Any = None
    intermediates: Any = None
    stop_params: bool = False
    integrate: bool = False
    continuation: bool = False
    signal: bool = False
    data: Any = None


class Contribution(NamedTuple):
    """What a draw adds to the surrogate (see the module docstring).

    Attributes:
        surrogate: a scalar added to the surrogate (its value should be zero in expectation
            or exactly; only its gradient matters).
        state: entries of the strategy state to replace after this estimate (carried by
            ``fit`` across steps, read as ``view.state`` on the next one).
        path_scale: scale the pathwise derivative of every draw of this draw's ``sim`` call
            by this factor (one per particle, shape of the particle axes): the program is
            run once more, with the same random numbers, and the guide's parameters'
            tangents in that call multiplied by it (DReG's reweighting).
    """

    surrogate: Any = 0.0
    state: dict = {}
    path_scale: Any = None


@runtime_checkable
class Strategy(Protocol):
    """A per-draw gradient strategy (see the module docstring)."""

    name: str

    def sample(self, site: Site, key: jax.Array) -> Draw:
        """Draw the site; say what the strategy needs from the program."""
        ...


def is_strategy(obj: Any) -> bool:
    """True when ``obj`` follows the strategy protocol."""
    return callable(getattr(obj, "sample", None)) and isinstance(getattr(obj, "name", None), str)


def as_draw(out: Any) -> Draw:
    """A strategy's ``sample`` output as a :class:`Draw` (a bare value means a plain draw)."""
    return out if isinstance(out, Draw) else Draw(out)
