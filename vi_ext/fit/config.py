"""fit's options, once: :class:`FitConfig` holds every option of :func:`vi_ext.fit` and of
:func:`vi_ext.fit.fitter.build`, with its default and its check.

``fit(model, *args, num_steps=2000, y=y)`` sorts its keyword arguments with
:meth:`FitConfig.split`: names of options go to the config, everything else to the model.
:meth:`FitConfig.check` validates the options before anything is traced, so a wrong
argument fails in milliseconds and names itself. A guide that runs its own fit (boosting's
``BoostedMixture``) says which options it honours (:class:`FitsItself`); fit refuses the
others by name instead of dropping them.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import optax
from jax.sharding import Mesh

from vi_ext import objectives as _objectives
from vi_ext.errors import ArgumentError
from vi_ext.keys import as_key
from vi_ext.program.objective import Objective
from vi_ext.program.transform import check_estimators
from vi_ext.start import Start
from vi_ext.stopping import Stationary, is_rule

#: stationarity events of the default stopping rule (the step size is then 1/32 of the first)
DEFAULT_STATIONARY_EVENTS = 5


#: the default cap on steps: the default stopping rule usually ends a fit well before it
DEFAULT_NUM_STEPS = 20000
#: particles of the default objective, the ELBO
DEFAULT_PARTICLES = 4
#: the start choices of the default guide (or a vi_ext.start.Start)
START_CHOICES = ("auto", "median")
#: the reparameterization choices of the default fit (the race of vi_ext.fit.forms)
REPARAM_CHOICES = ("auto", None)


@dataclass(frozen=True)
class FitConfig:
    """Every option of :func:`vi_ext.fit` (see its docstring for what each does).

    Build one directly, ``FitConfig(num_steps=2000, key=1)``, or let fit build it from its
    keyword arguments; ``fit(model, *args, config=cfg, **more)`` takes a config and
    overrides any of its options by name.
    """

    guide: Callable | None = None
    objective: Objective | str | None = None
    optimizer: optax.GradientTransformation | None = None
    num_steps: int = DEFAULT_NUM_STEPS
    key: Any = 0
    progress: bool = True
    estimators: Mapping[str, Any] | None = None
    max_rejections: int = 20
    chunk_size: int | None = None
    init_params: Mapping[str, Any] | None = None
    stopping: Any = "auto"
    start: Any = "auto"
    reparam: str | None = "auto"
    callbacks: Sequence[Callable] | Callable = ()
    callback_every: int | None = None
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int | None = None
    resume: str | os.PathLike | None = None
    data: Mapping[str, Any] | None = None
    batch_size: int | None = None
    shuffle: bool = True
    devices: Any = None
    mesh: Mesh | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split(cls, options: Mapping[str, Any]) -> tuple[FitConfig, dict]:
        """(config, model keyword arguments) from fit's keyword arguments: the names of
        options (and ``config=``, a base config they override) go to the config."""
        options = dict(options)
        base = options.pop("config", None)
        if base is not None and not isinstance(base, FitConfig):
            raise ArgumentError("config", f"expected a vx.FitConfig, got {base!r}.")
        names = set(cls.names())
        chosen = {k: options.pop(k) for k in list(options) if k in names}
        config = dataclasses.replace(base, **chosen) if base is not None else cls(**chosen)
        return config, options

    def replace(self, **changes: Any) -> FitConfig:
        return dataclasses.replace(self, **changes)

    def resolved_objective(self) -> Objective:
        """The objective: ``objective``, or the default, the ELBO: with
        :data:`DEFAULT_PARTICLES` particles for the default guide (measured on the suite of
        docs/defaults.md), with one for a guide of your own (its sites may use strategies
        that cannot run inside ``particles``, as ``enum`` and ``mvd``)."""
        if self.objective is None:
            return _objectives.elbo(num_particles=DEFAULT_PARTICLES if self.guide is None
                                    else 1)
        return _objectives.get(self.objective)

    def resolved_stopping(self) -> tuple:
        """The stopping rules: ``stopping``, or for ``"auto"`` the default,
        ``Stationary(events=5)``."""
        if isinstance(self.stopping, str) and self.stopping == "auto":
            return (Stationary(events=DEFAULT_STATIONARY_EVENTS),)
        return stopping_rules(self.stopping)

    def set_options(self) -> list[str]:
        """Names of the options whose values differ from the defaults."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is f.default:
                continue
            try:
                same = bool(value == f.default)
            except Exception:  # noqa: BLE001 - arrays and odd objects compare badly
                same = False
            if not same:
                out.append(f.name)
        return out

    def check(self) -> FitConfig:
        """Validate every option (before any tracing); the same config with ``callbacks``
        as a tuple."""
        if self.guide is not None and not callable(self.guide):
            raise ArgumentError("guide", "expected a NumPyro guide (a callable) or None for "
                                f"AutoNormal, got {self.guide!r}.")
        check_num_steps(self.num_steps)
        if self.optimizer is not None and not (
            callable(getattr(self.optimizer, "init", None))
            and callable(getattr(self.optimizer, "update", None))
        ):
            raise ArgumentError("optimizer", "expected an optax GradientTransformation (e.g. "
                                f"optax.adam(1e-2)), got {self.optimizer!r}.")
        if not isinstance(self.progress, bool):
            raise ArgumentError("progress", f"expected True or False, got {self.progress!r}.")
        if isinstance(self.max_rejections, bool) or not isinstance(self.max_rejections, int) \
                or self.max_rejections < 1:
            raise ArgumentError("max_rejections",
                                f"expected an int >= 1, got {self.max_rejections!r}.")
        for name in ("chunk_size", "callback_every", "checkpoint_every"):
            _check_positive_int_or_none(name, getattr(self, name))
        if self.checkpoint_every is not None and self.checkpoint is None:
            raise ArgumentError("checkpoint_every", "is set but checkpoint= (the file) is not.")
        if self.batch_size is not None and self.data is None:
            raise ArgumentError("batch_size", "is set but data= (the arrays to stream) is not.")
        self.resolved_objective()
        check_estimators(self.estimators)
        as_key(self.key)
        self.resolved_stopping()
        check_start(self.start, self.guide)
        if self.reparam not in REPARAM_CHOICES:
            raise ArgumentError("reparam", f"expected one of {REPARAM_CHOICES}, got "
                                f"{self.reparam!r}; to fit a form of your choosing, pass the "
                                "model so written (vx.reparam.noncentered(model, sites)).")
        return self.replace(callbacks=_callbacks(self.callbacks))


def check_start(start: Any, guide: Any) -> None:
    """``start`` is one of :data:`START_CHOICES` or a :class:`vi_ext.start.Start`, and is
    set only for the default guide."""
    if isinstance(start, Start):
        pass
    elif not isinstance(start, str) or start not in START_CHOICES:
        raise ArgumentError("start", f"expected one of {START_CHOICES} or a "
                            f"vx.start.Start (from vx.start.choose_start), got {start!r}.")
    if guide is not None and not (isinstance(start, str) and start == "auto"):
        raise ArgumentError("start", "chooses where the default guide starts (guide=None); "
                            "a guide of your own starts where its init_loc_fn / params say.")


def check_num_steps(num_steps: Any) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ArgumentError("num_steps", f"expected a positive int, got {num_steps!r}.")
    if num_steps <= 0:
        raise ArgumentError("num_steps", f"must be positive, got {num_steps}.")


def _check_positive_int_or_none(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ArgumentError(name, f"expected an int >= 1 or None, got {value!r}.")


def _callbacks(callbacks: Any) -> tuple:
    if callable(callbacks):
        callbacks = (callbacks,)
    try:
        callbacks = tuple(callbacks or ())
    except TypeError:
        raise ArgumentError(
            "callbacks", f"expected a list of functions cb(step, state, loss), got {callbacks!r}."
        ) from None
    for cb in callbacks:
        if not callable(cb):
            raise ArgumentError(
                "callbacks", f"expected functions cb(step, state, loss), got {cb!r}."
            )
    return callbacks


def stopping_rules(stopping: Any) -> tuple:
    """The stopping rules of ``stopping`` (a rule, a list of them, or None) as a tuple."""
    if stopping is None:
        return ()
    if not is_rule(stopping) and not isinstance(stopping, (list, tuple)):
        raise ArgumentError(
            "stopping",
            f"expected a stopping rule or a list of them (e.g. "
            f"vx.stopping.RelativeLossChange()), got {stopping!r}.",
        )
    # (a rule may itself be a NamedTuple: test for the protocol before iterating)
    rules = (stopping,) if is_rule(stopping) else tuple(stopping)
    for r in rules:
        if not is_rule(r):
            raise ArgumentError(
                "stopping",
                f"expected stopping rules (objects with init, update and converged, e.g. "
                f"vx.stopping.RelativeLossChange()), got {r!r}.",
            )
    return rules


@runtime_checkable
class FitsItself(Protocol):
    """A guide specification that runs its own fit, e.g. ``vx.boosting.BoostedMixture``.

    ``vx.fit(model, guide=spec, ...)`` hands it the model and the checked config; any set
    option not named in ``fit_options`` is refused by name (:func:`refuse_options`).
    """

    fit_options: frozenset

    def fit_model(self, model: Callable, model_args: tuple, model_kwargs: dict,
                  config: FitConfig) -> Any: ...


def refuse_options(config: FitConfig, spec: FitsItself) -> None:
    """Raise an ArgumentError naming the first set option that ``spec`` does not honour."""
    for name in config.set_options():
        if name != "guide" and name not in spec.fit_options:
            raise ArgumentError(
                name, f"does not apply to guide={type(spec).__name__}(...), which runs its own "
                f"fit and takes only {', '.join(sorted(spec.fit_options))} from fit; tune it "
                "through the guide's own settings.")


def signature_with_options(fn: Callable) -> inspect.Signature:
    """``fn(model, *model_args, <every option>, **model_kwargs)``: the signature help()
    and IDEs show for fit and build, from :class:`FitConfig`."""
    params = [inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("model_args", inspect.Parameter.VAR_POSITIONAL)]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                 annotation=f.type)
               for f in dataclasses.fields(FitConfig)]
    params += [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None),
               inspect.Parameter("model_kwargs", inspect.Parameter.VAR_KEYWORD)]
    return inspect.Signature(params, return_annotation=inspect.signature(fn).return_annotation)
