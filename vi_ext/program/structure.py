"""What an objective program's value is made of: a dataflow analysis of its staged form.

Strategies decide their validity from the program's *structure*, never from its name. To
know it, the transformation stages the program once (``jax.make_jaxpr``) with the values it
cares about marked by an identity primitive, :data:`tag_p`, and walks the resulting jaxpr:

- ``("v", address)``: the value of a draw (one site of one ``sim`` call, at ``address``);
- ``("lq", address)``: that draw's log density in the guide, position by position;
- ``("lp", density_address, site)``: a model factor (or a guide's, when ``density`` scores a
  guide), position by position; ``("lpe", ...)``: a factor group summed or averaged over an
  enumerated site;
- ``("lme", address)`` and ``("lmein", address)``: the output and the input of a
  :func:`~vi_ext.program.logmeanexp`;
- ``("pout", address, i)``: the i-th output of a :func:`~vi_ext.program.particles` call.

For every variable of the jaxpr the walk computes a :class:`Form`: the tags it depends on,
and among them those in which it is *affine*, F = c * t + (terms free of t), together with
what the coefficient c depends on and, when c is a static number, its value. Linear
primitives (add, sub, neg, sums, reshapes, products and quotients by tag-free operands)
keep affinity; every other primitive makes its inputs' tags non-linear. Calls (``jit``,
``custom_jvp_call``, ...) are analysed inside; loops and conditionals conservatively.

Three questions are answered from it:

- does the program's value F depend on a tag (and on which tags does a tag depend: the draws
  upstream of a model factor, say);
- is F affine in a tag with a coefficient free of every random quantity (then that term can
  be given its own learning signal, as TraceGraph_ELBO does, or integrated exactly);
- is the input of a ``logmeanexp`` *aligned* with a ``particles`` call (its k-th element a
  function of the k-th particle only), which leave-one-out baselines and DReG need.

The analysis is conservative: where it cannot show a property it reports it absent, and the
strategy that needs it refuses by name. It runs at trace time only; it costs nothing per step.

Reference: the dependency tracking follows NumPyro's provenance tracking
(``numpyro.ops.provenance``), which walks jaxprs the same way to find which sample sites a
site depends on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
from jax.extend import core
from jax.interpreters import ad, batching, mlir

# ----------------------------------------------------------------------------------------
# the tag primitive


tag_p = core.Primitive("vx_tag")
tag_p.def_impl(lambda x, *, label: x)
tag_p.def_abstract_eval(lambda x, *, label: x)
mlir.register_lowering(tag_p, lambda ctx, x, *, label: [x])


def _tag_jvp(primals, tangents, *, label):
    return tag_p.bind(primals[0], label=label), tangents[0]


def _tag_batch(args, dims, *, label):
    # particle axes lead: each enclosing vmap moves its axis to the front, so a tag bound at
    # particle depth d has its d particle axes first, outermost first
    (x,), (d,) = args, dims
    if d is None:
        return tag_p.bind(x, label=label), d
    x = jax.numpy.moveaxis(x, d, 0)
    return tag_p.bind(x, label=label), 0


ad.primitive_jvps[tag_p] = _tag_jvp
batching.primitive_batchers[tag_p] = _tag_batch

#: tag kinds that are terms of the program's value (log densities and their combinations)
TERM_KINDS = frozenset({"lq", "lp", "lpe", "lme"})


def is_term(label: tuple) -> bool:
    """Whether a tag label names a term (a log density or a logmeanexp output)."""
    return label[0] in TERM_KINDS


# ----------------------------------------------------------------------------------------
# forms


class Coef(NamedTuple):
    """The coefficient of a tag in an affine form: the tags it depends on, and its value
    (a Python number) when it is static and the same for every element, else None."""

    deps: frozenset
    value: float | None


class Form:
    """How a variable depends on the tags: ``lin`` maps the tags it is affine in to their
    coefficient; ``nonlin`` holds the tags it depends on otherwise."""

    __slots__ = ("lin", "nonlin")

    def __init__(self, lin: Mapping | None = None, nonlin: Iterable = ()):
        nonlin = frozenset(nonlin)
        self.lin = {t: c for t, c in (lin or {}).items() if t not in nonlin}
        self.nonlin = nonlin

    @property
    def deps(self) -> frozenset:
        return frozenset(self.lin) | self.nonlin

    def __repr__(self) -> str:
        return f"Form(lin={self.lin}, nonlin={set(self.nonlin)})"


EMPTY = Form()


def _merge(*forms: Form, signs: Iterable[float] | None = None) -> Form:
    """Sum of forms (with signs): coefficients of a common tag add."""
    signs = list(signs) if signs is not None else [1.0] * len(forms)
    lin: dict = {}
    nonlin: set = set()
    for f, s in zip(forms, signs, strict=True):
        nonlin |= f.nonlin
        for t, c in f.lin.items():
            v = None if c.value is None else s * c.value
            if t in lin:
                old = lin[t]
                v = None if (old.value is None or v is None) else old.value + v
                lin[t] = Coef(old.deps | c.deps, v)
            else:
                lin[t] = Coef(c.deps, v)
    # a static coefficient that cancels to zero: the sum does not depend on the tag at all
    lin = {t: c for t, c in lin.items() if not (c.value == 0.0 and t not in nonlin)}
    return Form(lin, nonlin)


def _scaled(f: Form, by: Form, value: float | None) -> Form:
    """``f`` times a factor whose form is ``by`` (its static value ``value``, if known)."""
    if not f.lin and not f.nonlin:
        return EMPTY
    by_deps = by.deps
    lin, nonlin = {}, set(f.nonlin) | set(by_deps)
    for t, c in f.lin.items():
        if t in by_deps:
            nonlin.add(t)
        else:
            v = None if (c.value is None or value is None) else c.value * value
            lin[t] = Coef(c.deps | by_deps, v)
    return Form(lin, nonlin)


def _unknown_values(f: Form) -> Form:
    return Form({t: Coef(c.deps, None) for t, c in f.lin.items()}, f.nonlin)


def _nonlinear(*forms: Form) -> Form:
    deps: set = set()
    for f in forms:
        deps |= f.deps
    return Form({}, deps) if deps else EMPTY


# ----------------------------------------------------------------------------------------
# the walk

_KEEP = {
    "reduce_sum", "reshape", "squeeze", "expand_dims", "transpose", "convert_element_type",
    "copy", "copy_p", "stop_gradient", "reduce_precision", "optimization_barrier",
}
_LINEAR_UNKNOWN = {"slice", "rev", "cumsum", "cumlogsumexp_never"}
_INDEXED = {"dynamic_slice": 1, "gather": 1}  # operand first, then index operands
_CALLS = {"jit", "pjit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call",
          "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_lin"}


def _literal_value(atom: Any) -> float | None:
    """The Python value of a scalar literal, else None."""
    if isinstance(atom, core.Literal):
        try:
            import numpy as np

            v = np.asarray(atom.val)
            if v.size == 1:
                return float(v.reshape(()))
        except (TypeError, ValueError):
            return None
    return None


def _sub_jaxpr(eqn) -> tuple[Any, list] | None:
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(name)
        if j is None:
            continue
        if hasattr(j, "jaxpr"):  # ClosedJaxpr
            return j.jaxpr, list(j.consts)
        return j, []
    return None


class _Walk:
    """One pass over a jaxpr computing forms (and, optionally, particle alignment)."""

    def __init__(self, cut: frozenset = frozenset()):
        self.cut = cut
        self.tag_inputs: dict[tuple, Form] = {}
        self.tag_avals: dict[tuple, Any] = {}
        self.tag_aligned: dict[tuple, tuple | None] = {}

    def run(self, jaxpr, in_forms: list[Form], in_aligned: list) -> tuple[list, list]:
        env: dict = {}
        aligned: dict = {}
        for v, f, a in zip(jaxpr.invars, in_forms, in_aligned, strict=True):
            env[v] = f
            if a is not None:
                aligned[v] = a

        def read(atom):
            if isinstance(atom, core.Literal):
                return EMPTY
            return env.get(atom, EMPTY)

        def read_aligned(atom):
            if isinstance(atom, core.Literal):
                return None
            return aligned.get(atom)

        for eqn in jaxpr.eqns:
            ins = [read(a) for a in eqn.invars]
            ins_al = [read_aligned(a) for a in eqn.invars]
            outs, outs_al = self.rule(eqn, ins, ins_al)
            for v, f, a in zip(eqn.outvars, outs, outs_al, strict=True):
                env[v] = f
                if a is not None:
                    aligned[v] = a
        return [read(a) for a in jaxpr.outvars], [read_aligned(a) for a in jaxpr.outvars]

    # -- one equation ------------------------------------------------------------------
    def rule(self, eqn, ins: list[Form], ins_al: list) -> tuple[list, list]:
        name = eqn.primitive.name
        n_out = len(eqn.outvars)
        if eqn.primitive is tag_p:
            label = eqn.params["label"]
            self.tag_inputs[label] = ins[0]
            self.tag_avals[label] = eqn.outvars[0].aval
            self.tag_aligned[label] = ins_al[0]
            own = Form({label: Coef(frozenset(), 1.0)})
            if label in self.cut:
                out = own
            else:
                out = _merge(ins[0], own)
            al = ins_al[0]
            if label[0] == "pout":  # a particles call's output: its particle axis
                al = (label[1], label[3])
            return [out], [al]
        sub = _sub_jaxpr(eqn) if name in _CALLS else None
        if sub is not None:
            jaxpr, consts = sub
            n_const = len(jaxpr.invars) - len(ins)
            if n_const >= 0 and len(consts) == 0:
                forms, al = self.run(jaxpr, [EMPTY] * n_const + ins, [None] * n_const + ins_al)
                return forms, al
            if len(jaxpr.invars) == len(ins):
                return self.run(jaxpr, ins, ins_al)
        out = self.form_rule(name, eqn, ins)
        al = self.align_rule(name, eqn, ins, ins_al)
        return [out] * n_out, [al] * n_out

    def form_rule(self, name: str, eqn, ins: list[Form]) -> Form:
        if not any(f.lin or f.nonlin for f in ins):
            return EMPTY
        if name in ("add", "add_any"):
            return _merge(*ins)
        if name == "sub":
            return _merge(ins[0], ins[1], signs=(1.0, -1.0))
        if name == "neg":
            return _merge(ins[0], signs=(-1.0,))
        if name in _KEEP:
            return ins[0] if len(ins) == 1 else _nonlinear(*ins)
        if name == "broadcast_in_dim":
            grows = _size(eqn.outvars[0].aval) != _size(eqn.invars[0].aval)
            return _unknown_values(ins[0]) if grows else ins[0]
        if name in _LINEAR_UNKNOWN:
            return _unknown_values(ins[0]) if len(ins) == 1 else _nonlinear(*ins)
        if name in _INDEXED:
            k = _INDEXED[name]
            if any(f.deps for f in ins[k:]):
                return _nonlinear(*ins)
            return _unknown_values(ins[0])
        if name == "concatenate":
            return _merge(*ins)
        if name == "pad":
            return _unknown_values(_merge(*ins))
        if name == "mul":
            a, b = ins
            va, vb = _literal_value(eqn.invars[0]), _literal_value(eqn.invars[1])
            return _merge(_scaled(a, b, vb), _scaled(b, a, va))
        if name == "dot_general":
            a, b = ins
            return _merge(_unknown_values(_scaled(a, b, None)),
                          _unknown_values(_scaled(b, a, None)))
        if name == "div":
            a, b = ins
            vb = _literal_value(eqn.invars[1])
            out = _scaled(a, b, None if not vb else 1.0 / vb)
            return Form(out.lin, out.nonlin | b.deps)
        if name == "integer_pow" and eqn.params.get("y") == 1:
            return ins[0]
        if name == "select_n":
            # affine in the cases, with coefficients that depend on the predicate; the
            # predicate itself enters non-linearly
            pred, cases = ins[0], ins[1:]
            chosen = _unknown_values(_merge(*cases))
            if not pred.deps:
                return chosen
            return _merge(_scaled(chosen, pred, None), Form({}, pred.deps))
        return _nonlinear(*ins)

    def align_rule(self, name: str, eqn, ins: list[Form], ins_al: list):
        """The particle alignment (call id, axis) of the output, or None."""
        al = [a for a in ins_al if a is not None]
        if not al or any(a != al[0] for a in al):
            return None
        pid, axis = al[0]
        for v, a in zip(eqn.invars, ins_al, strict=True):
            if a is not None and a[1] >= len(getattr(v.aval, "shape", ())):
                return None  # (a stale axis: be conservative)
        out_aval = eqn.outvars[0].aval
        # operands that are not aligned must not depend on the particles at all
        for f, a in zip(ins, ins_al, strict=True):
            if a is None and any(t[0] == "pout" and t[1] == pid for t in f.deps):
                return None
            if a is None and any(_inside(t, pid) for t in f.deps):
                return None
        shape = getattr(out_aval, "shape", ())
        if name in _ELEMENTWISE:
            for v, a in zip(eqn.invars, ins_al, strict=True):
                if a is not None and tuple(v.aval.shape) != tuple(shape):
                    return None
            return (pid, axis)
        if name in ("reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin"):
            axes = tuple(eqn.params.get("axes", ()))
            if axis in axes:
                return None
            return (pid, axis - sum(1 for x in axes if x < axis))
        if name == "broadcast_in_dim":
            bd = tuple(eqn.params["broadcast_dimensions"])
            in_shape = tuple(eqn.invars[0].aval.shape)
            if ins_al[0] is None or axis >= len(bd):
                return None
            new = bd[axis]
            if shape[new] != in_shape[axis]:
                return None
            return (pid, new)
        if name == "squeeze":
            dims = tuple(d % len(eqn.invars[0].aval.shape) for d in eqn.params["dimensions"])
            if axis in dims:
                return None
            return (pid, axis - sum(1 for d in dims if d < axis))
        if name == "reshape":
            in_shape = tuple(eqn.invars[0].aval.shape)
            if in_shape[: axis + 1] == tuple(shape[: axis + 1]):
                return (pid, axis)
            return None
        return None


_ELEMENTWISE = {
    "add", "add_any", "sub", "mul", "div", "neg", "exp", "log", "log1p", "expm1", "exp2",
    "integer_pow", "pow", "max", "min", "abs", "sign", "tanh", "logistic", "sqrt", "rsqrt",
    "square", "select_n", "convert_element_type", "stop_gradient", "copy", "copy_p",
    "is_finite", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "erf", "lgamma",
    "digamma", "sin", "cos", "atan2", "cbrt", "clamp", "reduce_precision", "nextafter",
}


def _size(aval) -> int:
    n = 1
    for s in getattr(aval, "shape", ()):
        n *= int(s)
    return n


def _inside(label: tuple, pid: tuple) -> bool:
    """A tag bound inside the body of the particles call ``pid``."""
    addr = _address_of(label)
    return addr is not None and len(addr) > len(pid) and tuple(addr[: len(pid)]) == tuple(pid)


def _address_of(label: tuple):
    if label[0] in ("v", "lq", "lme", "lmein"):
        return label[1]
    if label[0] in ("lp", "lpe"):
        return label[1]
    if label[0] == "pout":
        return label[1]
    return None


# ----------------------------------------------------------------------------------------
# the structure of a program


class Structure:
    """The analysed structure of one staged run of an objective program.

    Attributes:
        avals: tag label -> the abstract value (shape, dtype) of the tagged array, with the
            particle axes of the enclosing ``particles`` calls leading.
    """

    def __init__(self, jaxpr, consts):
        self._jaxpr, self._consts = jaxpr, consts
        walk = _Walk()
        n = len(jaxpr.invars)
        (value,), _ = walk.run(jaxpr, [EMPTY] * n, [None] * n)
        self.value_form = value
        self._inputs = walk.tag_inputs
        self.avals = walk.tag_avals
        self._aligned = walk.tag_aligned
        self.terms = self._affine_terms()
        self._cut_value: Form | None = None

    # -- plain facts -------------------------------------------------------------------
    @property
    def labels(self) -> list[tuple]:
        return list(self.avals)

    def deps(self, label: tuple) -> frozenset:
        """The tags a tagged value depends on (transitively)."""
        f = self._inputs.get(label)
        return f.deps if f is not None else frozenset()

    def input_form(self, label: tuple) -> Form:
        """The form of a tagged value in the tags upstream of it."""
        return self._inputs.get(label, EMPTY)

    def value_depends(self, label: tuple) -> bool:
        """Whether the program's value depends on the tagged value at all."""
        return label in self.value_form.deps

    def affine(self, label: tuple) -> bool:
        """The value is affine in the tagged value, with a coefficient that depends on no
        random quantity of the program (no tag); true when it does not depend on it."""
        if label not in self.value_form.deps:
            return True
        c = self.value_form.lin.get(label)
        return c is not None and not c.deps

    def coefficient(self, label: tuple) -> float | None:
        """The static coefficient of the value in a tag it is affine in, when known (0 when
        the value does not depend on it)."""
        if label not in self.value_form.deps:
            return 0.0
        c = self.value_form.lin.get(label)
        return None if c is None else c.value

    def aligned(self, label: tuple) -> tuple | None:
        """For a tag: the (particles call, axis) its input is aligned with, or None."""
        return self._aligned.get(label)

    # -- the term decomposition -------------------------------------------------------
    def _affine_terms(self) -> frozenset:
        """Terms t with F = sum_t a_t t + R, no term affinely upstream of another."""
        terms = {t for t in self.avals
                 if is_term(t) and t in self.value_form.lin and self.affine(t)}
        changed = True
        while changed:
            changed = False
            for t in sorted(terms, key=repr):
                up = {u for u in self._inputs[t].lin if is_term(u)} & terms
                if up:
                    terms -= up | {t}
                    changed = True
                    break
        return frozenset(terms)

    def residual_deps(self) -> frozenset:
        """The tags the residual R = F - sum_t a_t t depends on (the affine terms cut)."""
        if self._cut_value is None:
            walk = _Walk(cut=self.terms)
            n = len(self._jaxpr.invars)
            (value,), _ = walk.run(self._jaxpr, [EMPTY] * n, [None] * n)
            self._cut_value = value
        return self._cut_value.deps - self.terms


def analyse(fn: Callable, *args: Any) -> Structure:
    """Stage ``fn(*args) -> scalar`` (args abstract: arrays or ShapeDtypeStructs) and
    analyse it."""
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(jax.numpy.shape(x), jax.numpy.result_type(x)), args)
    closed = jax.make_jaxpr(fn)(*abstract)
    return Structure(closed.jaxpr, closed.consts)


def tag(x: Any, label: tuple) -> Any:
    """Mark ``x`` (an array) with ``label`` in the staged program."""
    return tag_p.bind(x, label=label)
