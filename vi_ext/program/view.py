"""What a strategy sees of its draw after the program has run: :class:`DrawView`.

The view answers, from the program's structure (:mod:`vi_ext.program.structure`) and the
values of its run, the questions strategies ask to decide validity and to build their terms:

- ``view.signal``: the draw's *learning signal*, position by position. Write the program's
  value as F = sum_t a_t t + R, where the t are its terms (log densities position by
  position, logmeanexp outputs) in which F is affine with a coefficient a_t free of any random
  quantity, and R is the rest. A term that does not depend on the draw (nor on anything
  downstream of it) has zero covariance with the draw's score, so it can be dropped:

      signal_j[n] = sum_{t depends on j} sum_{positions of t matching n} a_t t  +  R [j in R],

  where a position of t matches position n of draw j when they share the particle and the
  plate indices that both sit in (plates declare conditional independence, as in NumPyro's
  TraceGraph_ELBO); t's other axes are summed. For the ELBO with local latents in a plate this
  is each position's own ``log p(x_n, z_n) - log q(z_n)``; for a mean over particles, each
  particle's own log weight. In a re-run of the program for a continuation strategy whose
  pinned draw depends on this one, the whole value is the signal (the re-run is weighted as a
  whole by the pinned draw's probability, which depends on this draw).
- ``view.leave_one_out()``: the signal with a leave-one-out baseline (VIMCO, generalized): when
  F depends on the draw through a term a_L L with L = logmeanexp over the draw's particles of
  an input x aligned with them, particle k's baseline is a_L L^{(-k)}, L with x_k replaced by
  the mean of the other x's, which does not depend on particle k; unbiased for any program
  of that shape (any other dependence is left in the signal unchanged). When instead each
  particle's signal is made of its own particle's terms (a mean of particles), the baseline
  is the mean of the other particles' signals (Kool, van Hoof & Welling, "Buy 4 REINFORCE
  samples, get a baseline for free!", 2019).
- ``view.logmeanexp()``: that logmeanexp, with its input x, the coefficient a_L, the static
  coefficient c of x in this draw's ``sim`` call's log q, and whether F depends on the call's
  draws only through L (DReG's requirement).
- ``view.log_prob_affine`` / ``view.log_prob_coefficient``: is F affine in the draw's log q
  term (with a coefficient free of randomness), and that coefficient when static.
- ``view.value_used``: whether the program's value (or another draw) depends on the raw value
  of the draw (an ``integrate`` draw's placeholder must not be used).

Every refusal goes through :meth:`DrawView.refuse`, which names the site and the strategy.

Reference: Schulman, Heess, Weber & Abbeel, "Gradient Estimation Using Stochastic
Computation Graphs", NeurIPS 2015 (costs downstream of a stochastic node); Mnih & Rezende,
"Variational inference for Monte Carlo objectives", ICML 2016 (leave-one-out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from vi_ext.errors import SiteError

sg = jax.lax.stop_gradient


class LogMeanExp(NamedTuple):
    """The logmeanexp through which a program's value depends on a draw.

    Attributes:
        x: its input, shape [outer particle axes..., K] (gradient stopped).
        weights: softmax(x) over the last axis, the self-normalized weights.
        coefficient: a_L, the coefficient of the output in the value (shape of the outer
            particle axes).
        log_q_coefficient: c, the static coefficient of x_k in the log q of this draw's
            ``sim`` call in particle k, or None when it is not one number.
        only_channel: the value depends on the draws of this draw's ``sim`` call only
            through this logmeanexp.
    """

    x: Any
    weights: Any
    coefficient: Any
    log_q_coefficient: float | None
    only_channel: bool


def particle_ids(path: tuple) -> tuple:
    """The addresses of the particles calls around a frame path, outermost first."""
    return tuple(path[: i + 1] for i in range(len(path)))


def axis_keys(shape: tuple, path: tuple, plates: tuple) -> list:
    """A key per axis of a recorded array: its particles call, its plate, or None."""
    keys: list = [None] * len(shape)
    pids = particle_ids(path)
    for i, pid in enumerate(pids):
        keys[i] = ("particles", pid)
    for name, dim, size in plates:
        axis = len(shape) + dim
        if len(pids) <= axis < len(shape) and int(shape[axis]) == int(size):
            keys[axis] = ("plate", name, int(size))
    return keys


def to_positions(x: jax.Array, keys: list) -> tuple[jax.Array, list]:
    """Sum the axes without a key; the array and its remaining keys."""
    drop = tuple(i for i, k in enumerate(keys) if k is None)
    if drop:
        x = jnp.sum(x, axis=drop)
    return x, [k for k in keys if k is not None]


def align(x: jax.Array, keys: list, target_keys: list, target_shape: tuple) -> jax.Array:
    """Reduce an array with keyed axes onto the positions of another: axes whose key the
    target lacks are summed, the target's axes that ``x`` lacks are broadcast."""
    x, keys = to_positions(x, keys)
    drop = tuple(i for i, k in enumerate(keys) if k not in target_keys)
    if drop:
        x = jnp.sum(x, axis=drop)
        keys = [k for i, k in enumerate(keys) if i not in drop]
    order = sorted(range(len(keys)), key=lambda i: target_keys.index(keys[i]))
    x = jnp.transpose(x, order) if order != list(range(len(keys))) else x
    keys = [keys[i] for i in order]
    shape = [1] * len(target_keys)
    for k, s in zip(keys, x.shape, strict=True):
        shape[target_keys.index(k)] = s
    return jnp.broadcast_to(jnp.reshape(x, shape), target_shape)


class Evaluation:
    """One run of a program, shared by the views of its draws (built by the transform)."""

    def __init__(self, value, info, structure, draw_records, term_values, lme_inputs,
                 coefficients, state):
        self.value = value
        self.info = info
        self.structure = structure
        self.draw_records = draw_records
        self.term_values = term_values
        self.lme_inputs = lme_inputs
        self.coefficients = coefficients
        self.state = state
        self._residual = None

    def residual(self) -> jax.Array:
        """R = F - sum_t a_t t over the affine terms (gradient stopped)."""
        if self._residual is None:
            total = sg(self.value)
            for label in self.structure.terms:
                total = total - jnp.sum(sg(self.coefficients[label] * self.term_values[label]))
            self._residual = total
        return self._residual


class DrawView:
    """One draw, as its strategy sees it in ``contribute`` and ``answer``.

    Attributes:
        site: the :class:`~vi_ext.estimators.base.Site` (its ``fn`` batched over the
            particles around the draw).
        strategy: the draw's strategy.
        value: the draw's value (particle axes leading).
        log_prob: its log density per position as it entered log q, differentiable
            (shape: particle axes + sample_shape + batch_shape).
        data: what the strategy's ``Draw`` carried in ``data``.
        state: the strategy state (read-only).
        program_value: the program's value F (gradient stopped).
    """

    def __init__(self, address: tuple, evaluation: Evaluation):
        ev = evaluation
        info = ev.info.draws[address]
        rec = ev.draw_records[address]
        self.address = address
        self.strategy = info.strategy
        self.site = info.site._replace(fn=rec.fn)
        self.value = rec.value
        self.log_prob = rec.log_prob
        self.data = rec.data
        self.state = ev.state
        self.program_value = sg(ev.value)
        self._ev = ev
        self._info = info

    # -- refusing ---------------------------------------------------------------------
    def refuse(self, reason: str) -> None:
        """Raise an error naming the site, the strategy and the reason."""
        raise SiteError(self.site.name, f"{self.strategy.name}() cannot be used for this draw "
                        f"(at {'/'.join(self.address)}): {reason}")

    # -- positions --------------------------------------------------------------------
    @property
    def keys(self) -> list:
        return axis_keys(jnp.shape(self.log_prob), self._info.path, self.site.plates)

    @property
    def position_log_prob(self) -> jax.Array:
        """The draw's log density per position (particle and plate axes; others summed)."""
        return to_positions(self.log_prob, self.keys)[0]

    # -- structure --------------------------------------------------------------------
    @property
    def structure(self):
        if self._ev.structure is None:
            raise RuntimeError("the program's structure was not analysed for this run")
        return self._ev.structure

    @property
    def log_prob_affine(self) -> bool:
        """The value is affine in this draw's log q term, with a coefficient free of any
        random quantity."""
        return self.structure.affine(("lq", self.address))

    @property
    def log_prob_coefficient(self) -> float | None:
        return self.structure.coefficient(("lq", self.address))

    def without_direct_log_prob_gradient(self) -> jax.Array:
        """A surrogate term that cancels the gradient of the value through this draw's log q
        at the drawn value, a_t * d/dphi log q_phi(z) with z held: it has mean zero given the
        draw's parents, so removing it keeps the estimate unbiased and lowers its variance
        (NumPyro's TraceGraph_ELBO does the same for non-reparameterized sites). Zero when
        the value is not affine in the log q term with a coefficient free of randomness."""
        label = ("lq", self.address)
        ev = self._ev
        if ev.coefficients is None or label not in self.structure.terms:
            return jnp.zeros(())
        a = sg(ev.coefficients[label])
        return -jnp.sum(a * (self.log_prob - sg(self.log_prob)))

    @property
    def value_used(self) -> bool:
        """The program's value, or another draw, depends on this draw's raw value."""
        v = ("v", self.address)
        return self.structure.value_depends(v) or bool(self.downstream_draws())

    def terms_affine(self) -> list[tuple]:
        """The labels of this draw's terms (its log q, the factors averaged over it) in
        which the value is *not* affine with a coefficient free of randomness."""
        mine = [label for label in self.structure.labels
                if (label[0] == "lq" and label[1] == self.address)
                or (label[0] == "lpe" and label[2] == self.address)]
        return [label for label in mine if not self.structure.affine(label)]

    def downstream_draws(self) -> list[tuple]:
        """Addresses of the other draws that depend on this draw: their value or their log
        density does (a draw pinned by a re-run of the program counts, through its log
        density, since the re-run's weight q(pinned | parents) depends on its parents)."""
        v = ("v", self.address)
        st = self.structure
        out = []
        for a, info in self._ev.info.draws.items():
            if a == self.address:
                continue
            deps = st.deps(("lq", a)) if info.pinned else st.deps(("v", a)) | st.deps(("lq", a))
            if v in deps:
                out.append(a)
        return out

    def _pinned_downstream(self) -> bool:
        return any(self._ev.info.draws[a].pinned for a in self.downstream_draws())

    def draw_info(self, address: tuple):
        """Static facts (site, strategy, draw flags) of another draw of the run."""
        return self._ev.info.draws[address]

    def sim_draws(self) -> list[tuple]:
        """Addresses of the draws made by the same ``sim`` call as this one."""
        return [a for a, i in self._ev.info.draws.items() if i.sim == self._info.sim]

    # -- signals ----------------------------------------------------------------------
    @property
    def signal(self) -> jax.Array:
        """The draw's learning signal per position (see the module docstring)."""
        ev = self._ev
        if ev.coefficients is None:
            raise RuntimeError(f"{self.strategy.name}: no learning signal was computed; "
                               "return Draw(..., signal=True) from sample().")
        keys = self.keys
        pos, pkeys = to_positions(sg(self.log_prob), keys)
        if self._pinned_downstream():
            # a re-run's value is weighted, as a whole, by q(pinned | ...) which depends on
            # this draw: every term of it belongs to the signal
            return jnp.broadcast_to(sg(ev.value), pos.shape)
        out = jnp.zeros(pos.shape, pos.dtype)
        for label in sorted(ev.structure.terms, key=repr):
            if not self._depends(label):
                continue
            t = sg(ev.coefficients[label] * ev.term_values[label])
            tinfo = ev.info.terms[label]
            out = out + align(t, axis_keys(jnp.shape(t), tinfo.path, tinfo.plates), pkeys,
                              pos.shape)
        if self._own & ev.structure.residual_deps():
            out = out + ev.residual()
        return out

    @property
    def _own(self) -> frozenset:
        """The tags that stand for this draw: its value and its log q term (which a
        strategy may have computed before the value was tagged)."""
        return frozenset({("v", self.address), ("lq", self.address)})

    def _depends(self, label: tuple) -> bool:
        return label in self._own or bool(self._own & self.structure.deps(label))

    def logmeanexp(self) -> LogMeanExp | str:
        """The logmeanexp over this draw's particles through which the value depends on the
        draw, or a string saying why there is none."""
        ev, st = self._ev, self.structure
        path = self._info.path
        if not path:
            return "the draw is not made inside vx.program.particles"
        pid = path
        found = []
        for label in st.terms:
            if label[0] != "lme" or not self._depends(label):
                continue
            al = st.aligned(("lmein", label[1]))
            lme_path = tuple(label[1][:-1])
            if al is not None and tuple(al[0]) == tuple(pid) and al[1] == len(lme_path):
                found.append(label)
        if len(found) != 1:
            return ("the value does not depend on it through one logmeanexp over the "
                    "particles in which it is drawn, with a coefficient free of randomness "
                    "and an input whose k-th element depends on particle k only"
                    if not found else "the value depends on it through several "
                    "logmeanexps over its particles")
        label = found[0]
        x = sg(ev.lme_inputs[label[1]])
        mine = [("lq", a) for a in self.sim_draws()]
        form = st.input_form(("lmein", label[1]))
        cs = {form.lin[m].value if m in form.lin and not form.lin[m].deps else None
              for m in mine}
        c = cs.pop() if len(cs) == 1 else None
        sim_values = {(k, a) for a in self.sim_draws() for k in ("v", "lq")}
        others = [t for t in st.terms if t != label and st.deps(t) & sim_values]
        only = not others and not (st.residual_deps() & sim_values)
        return LogMeanExp(x, jax.nn.softmax(x, axis=-1), sg(ev.coefficients[label])
                          if ev.coefficients is not None else None, c, only)

    def leave_one_out(self) -> jax.Array:
        """The learning signal minus a leave-one-out baseline over the particles in which
        the draw is made (see the module docstring): through a logmeanexp over them when the
        value has one (VIMCO, generalized), else, when the signal of each particle is made of
        that particle's own terms (a mean of particles), the mean of the other particles'
        signals (Kool, van Hoof & Welling, 2019). Refuses by name otherwise."""
        lme = self.logmeanexp()
        if isinstance(lme, str) and self._particle_local():
            return self._mean_of_others()
        if isinstance(lme, str):
            self.refuse("a leave-one-out baseline needs the value to depend on the draw "
                        f"through a logmeanexp over its particles ({lme}), or through terms "
                        "of its own particle only (a mean of particles). Use baseline=None, "
                        "'average' or a learned baseline.")
        x = lme.x
        k = x.shape[-1]
        if k < 2:
            self.refuse("a leave-one-out baseline needs K >= 2 particles.")
        others_mean = (jnp.sum(x, axis=-1, keepdims=True) - x) / (k - 1)
        eye = jnp.eye(k, dtype=bool)
        swapped = jnp.where(eye, others_mean[..., :, None], x[..., None, :])  # [.., K, K]
        loo = logsumexp(swapped, axis=-1) - jnp.log(k)  # [.., K]: L with x_k replaced
        baseline = lme.coefficient[..., None] * loo
        path = self._info.path
        b_keys = [("particles", p) for p in particle_ids(path)]
        keys = self.keys
        pos, pkeys = to_positions(self.log_prob, keys)
        return self.signal - align(baseline, b_keys, pkeys, pos.shape)

    def _particle_local(self) -> bool:
        """Every part of the signal lives in the particle of the draw: no residual, and each
        term depending on the draw is made inside its particles call."""
        path = self._info.path
        if not path or self._own & self.structure.residual_deps():
            return False
        for label in self.structure.terms:
            if self._depends(label):
                tpath = self._ev.info.terms[label].path
                if tuple(tpath[: len(path)]) != tuple(path):
                    return False
        return True

    def _mean_of_others(self) -> jax.Array:
        signal = self.signal
        axis = len(self._info.path) - 1  # the draw's own particles axis
        k = signal.shape[axis]
        if k < 2:
            self.refuse("a leave-one-out baseline needs K >= 2 particles.")
        others = (jnp.sum(signal, axis=axis, keepdims=True) - signal) / (k - 1)
        return signal - others


def state_key(prefix: str, address: tuple) -> str:
    """A strategy-state entry for one draw: ``prefix/address``."""
    return prefix + "/" + "/".join(address)


def merge_state(updates: list[Mapping[str, Any]]) -> dict:
    out: dict = {}
    for u in updates:
        out.update(u)
    return out
