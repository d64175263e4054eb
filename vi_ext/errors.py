"""Exceptions raised by vi_ext.

Every error says what was wrong, where (the site or the argument), and what to do instead.
They subclass :class:`ValueError` so that code catching NumPyro's or JAX's value errors keeps
working.
"""

from __future__ import annotations

from typing import Any


class VIError(ValueError):
    """Base class of vi_ext's errors."""


class SiteError(VIError):
    """A problem at one sample site of a model or guide.

    Attributes:
        site: the name of the site at fault.
    """

    def __init__(self, site: str, message: str):
        self.site = site
        super().__init__(f"site '{site}': {message}")


class ArgumentError(VIError, TypeError):
    """A bad argument to a public function, detected before any compilation.

    Attributes:
        argument: the name of the argument at fault.
    """

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(f"argument '{argument}': {message}")


def require_int(value: Any, argument: str, least: int = 1, where: str = "") -> int:
    """``value`` if it is an int >= ``least``, else an :class:`ArgumentError` naming the
    argument (and the function, ``where``)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        prefix = f"{where}(): " if where else ""
        raise ArgumentError(argument, f"{prefix}expected an int >= {least}, got {value!r}.")
    return value


class NonFiniteError(VIError, FloatingPointError):
    """A fit stopped because its loss or gradient kept being non-finite.

    Attributes:
        step: index of the first step of the final run of rejected steps.
        sites: names of the sites whose log density was non-finite there (may be empty when
            the gradient, not the value, was at fault).
        last_good_params: the constrained parameters before the rejected steps.
        result: a partial FitResult holding the last good parameters, when available.
    """

    def __init__(
        self,
        message: str,
        *,
        step: int,
        sites: tuple[str, ...] = (),
        last_good_params: Any = None,
        result: Any = None,
    ):
        self.step = step
        self.sites = tuple(sites)
        self.last_good_params = last_good_params
        self.result = result
        super().__init__(message)


class CallbackError(VIError):
    """A callback passed to fit raised; the original exception is the ``__cause__``.

    Attributes:
        callback: the callback's name.
        step: the number of steps taken when it was called.
        result: a FitResult with the parameters and losses at that step.
    """

    def __init__(self, message: str, *, callback: str, step: int, result: Any = None):
        self.callback = callback
        self.step = step
        self.result = result
        super().__init__(message)
