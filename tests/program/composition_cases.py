"""Generated objective programs, their exact expectations, and the models they run on.

The property test (``test_composition_property.py``) checks the objective language's promise:
every program it accepts, with every mix of per-site strategies, gives an unbiased estimate of
the gradient of the program's expected value, and what it cannot show valid it refuses with a
:class:`vi_ext.SiteError` naming the site and the strategy. This module holds the pieces:

- a small AST of objective programs (:class:`Block` and the expression nodes), printable as
  the program it stands for (:func:`show`);
- :func:`compile_program`, which turns an AST into a program over vi_ext's primitives
  (``sim``, ``density``, ``particles``, ``logmeanexp``);
- :func:`exact_value_and_grad`, an evaluator that is independent of vi_ext: it lays every
  guide draw of the program on its own axis of a grid of weighted atoms (the support of a
  discrete guide, with its probabilities; Gauss-Hermite nodes of a Gaussian guide, moved with
  the parameters), evaluates the program on the whole grid in plain ``jax.numpy`` (float64)
  and differentiates the weighted sum with ``jax.grad``;
- the models (:data:`MODELS`), each a NumPyro model and guide together with the same model
  and guide written as plain log densities for the evaluator;
- hypothesis strategies (:func:`cases`) that draw a model, a program within the evaluator's
  budget, an objective name and a strategy per guide site.

Programs are closed: the body of ``particles`` sees only its own draws, so the K copies of a
body are independent of each other and of the rest of the program.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

import vi_ext as vx
from vi_ext.program import density, logmeanexp, marginal, particles, sim

# --------------------------------------------------------------------------------------------
# The AST


@dataclass(frozen=True)
class LogW:
    """``density(model, q_i) - q_i.log_density``: the importance log weight of sim ``i``."""

    i: int


@dataclass(frozen=True)
class LogP:
    """``density(model, q_i)``: log p(x, z) at the draw of sim ``i``."""

    i: int


@dataclass(frozen=True)
class NegLogQ:
    """``-q_i.log_density``."""

    i: int


@dataclass(frozen=True)
class LogPDict:
    """``density(model, dict(q_i.values))``: the model's density at a plain dict of values."""

    i: int


@dataclass(frozen=True)
class LogPMix:
    """``density(model, {first site: q_i's value, other sites: q_j's values})``."""

    i: int
    j: int


@dataclass(frozen=True)
class Value:
    """``jnp.sum(q_i.values[site])``: a draw used as a number."""

    i: int
    site: str


@dataclass(frozen=True)
class MargLogW:
    """``m = marginal(guide, keep=<the model's sites>, num_particles=m)``, then
    ``density(model, m) - m.log_density``: the HVI (m = 0) or IWHVI log weight; it makes its
    own 1 + m guide draws."""

    m: int
    keep: tuple[str, ...]


@dataclass(frozen=True)
class Const:
    """A constant."""

    c: float


@dataclass(frozen=True)
class Lin:
    """``a * e1 + b * e2``."""

    a: float
    e1: Any
    b: float
    e2: Any


def scale(a: float, e: Any) -> Lin:
    """``a * e``."""
    return Lin(a, e, 0.0, Const(0.0))


@dataclass(frozen=True)
class Mul:
    """``e1 * e2``."""

    e1: Any
    e2: Any


@dataclass(frozen=True)
class Unary:
    """``op(e)`` with op one of ``exp``, ``square``, ``tanh``."""

    op: str
    e: Any


@dataclass(frozen=True)
class LogMeanExp2:
    """``logmeanexp(jnp.stack([e1, e2]))``."""

    e1: Any
    e2: Any


@dataclass(frozen=True)
class Reduce:
    """``xs = particles(k, body)``, then ``lme * logmeanexp(xs) + mean * jnp.mean(xs)``
    (a zero coefficient leaves its term out of the program)."""

    k: int
    body: Block
    lme: float
    mean: float


@dataclass(frozen=True)
class Block:
    """A scope: ``sims`` independent ``sim(guide)`` calls, then an expression over them."""

    sims: int
    expr: Any


UNARY: dict[str, Callable] = {"exp": jnp.exp, "square": jnp.square, "tanh": jnp.tanh}


def show(node: Any, depth: int = 0) -> str:
    """The program an AST stands for, in a compact notation: ``lw(q0)`` is
    ``density(model, q0) - q0.log_density``, ``lp``/``lq`` its two parts; sims of nested
    scopes are named q, r, s, ... by depth."""
    letter = "qrstuv"[depth]
    name = lambda i: f"{letter}{i}"  # noqa: E731
    if isinstance(node, Block):
        if not node.sims:
            return show(node.expr, depth)
        sims = ", ".join(name(i) for i in range(node.sims))
        return f"[{sims} = sim()] {show(node.expr, depth)}"
    if isinstance(node, LogW):
        return f"lw({name(node.i)})"
    if isinstance(node, LogP):
        return f"lp({name(node.i)})"
    if isinstance(node, NegLogQ):
        return f"-lq({name(node.i)})"
    if isinstance(node, LogPDict):
        return f"lp(dict({name(node.i)}))"
    if isinstance(node, LogPMix):
        return f"lp(mix({name(node.i)}, {name(node.j)}))"
    if isinstance(node, Value):
        return f"{name(node.i)}.{node.site}"
    if isinstance(node, MargLogW):
        return f"lw(marginal(M={node.m}))"
    if isinstance(node, Const):
        return repr(node.c)
    if isinstance(node, Lin) and node.b == 0:
        return f"{node.a}*{show(node.e1, depth)}"
    if isinstance(node, Lin):
        return f"({node.a}*{show(node.e1, depth)} + {node.b}*{show(node.e2, depth)})"
    if isinstance(node, Mul):
        return f"({show(node.e1, depth)} * {show(node.e2, depth)})"
    if isinstance(node, Unary):
        return f"{node.op}({show(node.e, depth)})"
    if isinstance(node, LogMeanExp2):
        return f"lme([{show(node.e1, depth)}, {show(node.e2, depth)}])"
    if isinstance(node, Reduce):
        xs = f"particles({node.k}, {show(node.body, depth + 1)})"
        terms = []
        if node.lme:
            terms.append(f"{node.lme}*lme({xs})")
        if node.mean:
            terms.append(f"{node.mean}*mean({xs if not node.lme else 'same'})")
        return "(" + " + ".join(terms) + ")"
    raise TypeError(node)


def count_draws(block: Block) -> int:
    """How many guide draws one run of ``block`` makes (particles multiply their body's)."""
    return block.sims + _expr_draws(block.expr)


def _expr_draws(e: Any) -> int:
    if isinstance(e, Reduce):
        return e.k * count_draws(e.body)
    if isinstance(e, (Lin, Mul, LogMeanExp2)):
        return _expr_draws(e.e1) + _expr_draws(e.e2)
    if isinstance(e, Unary):
        return _expr_draws(e.e)
    if isinstance(e, MargLogW):
        return 1 + e.m
    return 0


# --------------------------------------------------------------------------------------------
# The compiler: AST -> a program over vi_ext's primitives


def compile_program(program: Block) -> Callable[..., jax.Array]:
    """``program(model, guide, *args, **kwargs) -> scalar`` written with the primitives."""

    def run(model, guide, *args, **kwargs):
        return _run_block(program, model, guide, args, kwargs)

    return run


def _run_block(block: Block, model, guide, args, kwargs):
    qs = [sim(guide, *args, **kwargs) for _ in range(block.sims)]
    log_p: dict[int, jax.Array] = {}

    def lp(i):  # one density call per sim, however often the expression uses it
        if i not in log_p:
            log_p[i] = density(model, qs[i], *args, **kwargs)
        return log_p[i]

    def ev(e):
        if isinstance(e, LogW):
            return lp(e.i) - qs[e.i].log_density
        if isinstance(e, LogP):
            return lp(e.i)
        if isinstance(e, NegLogQ):
            return -qs[e.i].log_density
        if isinstance(e, LogPDict):
            return density(model, dict(qs[e.i].values), *args, **kwargs)
        if isinstance(e, LogPMix):
            first, *_ = qs[e.i].values
            values = {**qs[e.j].values, first: qs[e.i].values[first]}
            return density(model, values, *args, **kwargs)
        if isinstance(e, Value):
            return jnp.sum(jnp.asarray(qs[e.i].values[e.site], float))
        if isinstance(e, MargLogW):
            m = marginal(guide, *args, keep=list(e.keep), num_particles=e.m, **kwargs)
            return density(model, m, *args, **kwargs) - m.log_density
        if isinstance(e, Const):
            return jnp.asarray(e.c, float)
        if isinstance(e, Lin):
            return e.a * ev(e.e1) + e.b * ev(e.e2)
        if isinstance(e, Mul):
            return ev(e.e1) * ev(e.e2)
        if isinstance(e, Unary):
            return UNARY[e.op](ev(e.e))
        if isinstance(e, LogMeanExp2):
            return logmeanexp(jnp.stack([ev(e.e1), ev(e.e2)]))
        if isinstance(e, Reduce):
            xs = particles(e.k, lambda: _run_block(e.body, model, guide, args, kwargs))
            out = jnp.zeros(())
            if e.lme:
                out = out + e.lme * logmeanexp(xs)
            if e.mean:
                out = out + e.mean * jnp.mean(xs)
            return out
        raise TypeError(e)

    return ev(block.expr)


# --------------------------------------------------------------------------------------------
# The models, in NumPyro and as plain log densities


def _normal_lp(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)


def _bern_lp(z, p):
    return z * jnp.log(p) + (1 - z) * jnp.log1p(-p)


def _bern_logits_lp(z, t):
    return z * jax.nn.log_sigmoid(t) + (1 - z) * jax.nn.log_sigmoid(-t)


def hermite(num_nodes: int, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and log weights of E_{e ~ N(0,1)}[f(e)] ~ sum_i w_i f(e_i), padded to ``size``
    nodes with weightless ones (at 0, log weight -inf), so that rules of different sizes
    share one shape."""
    x, w = np.polynomial.hermite.hermgauss(num_nodes)
    pad = (size or num_nodes) - num_nodes
    return (np.concatenate([np.sqrt(2.0) * x, np.zeros(pad)]),
            np.concatenate([np.log(w / np.sqrt(np.pi)), np.full(pad, -np.inf)]))


@dataclass(frozen=True)
class GuideSite:
    """A latent site of a guide, and the kind of strategies it admits."""

    name: str
    kind: str  # "discrete" or "continuous"


@dataclass(frozen=True)
class ModelCase:
    """A NumPyro model and guide, and the same written for the exact evaluator.

    Attributes:
        num_atoms: the number of atoms of one draw at the default resolution.
        nodes: Gauss-Hermite nodes per Gaussian site (0 for a discrete guide).
        atoms: ``(params, rule) -> (values, log_weights)``: the guide's distribution as
            weighted atoms (site -> [n, *site shape], [n]), exact for a discrete guide, the
            product of the 1-D Gauss-Hermite ``rule`` (nodes, log weights) over its Gaussian
            sites otherwise; differentiable in the guide's parameters.
        log_p: ``(params, values) -> log p(x, z)``, values batched on leading axes.
        log_q: ``(params, values) -> log q(z)``, likewise.
        keep: for a hierarchical guide, its sites that the model has (the others are
            auxiliary, to be marginalized by ``marginal``).
        log_q_aux: ``(params, values) -> log q(u)``, the guide's marginal of its auxiliary
            sites (drawn first, independently of the kept ones).
    """

    name: str
    model: Callable
    guide: Callable
    params: dict
    kwargs: dict
    sites: tuple[GuideSite, ...]
    num_atoms: int
    atoms: Callable = field(repr=False)
    log_p: Callable = field(repr=False)
    log_q: Callable = field(repr=False)
    nodes: int = 0
    keep: tuple[str, ...] = ()
    log_q_aux: Callable | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return self.name


# bern: z ~ Bernoulli(sigmoid(theta)), x ~ N(2z - 1, 1); guide z ~ Bernoulli(phi)
BERN_X = 0.5


def bern_model(x=None):
    theta = numpyro.param("theta", 0.2)
    z = numpyro.sample("z", dist.Bernoulli(logits=theta))
    numpyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)


def bern_guide(x=None):
    phi = numpyro.param("phi", 0.6, constraint=dist.constraints.unit_interval)
    numpyro.sample("z", dist.Bernoulli(phi))


BERN = ModelCase(
    name="bern", model=bern_model, guide=bern_guide,
    params={"theta": jnp.array(0.2), "phi": jnp.array(0.6)}, kwargs={"x": BERN_X},
    sites=(GuideSite("z", "discrete"),), num_atoms=2,
    atoms=lambda p, _: ({"z": jnp.array([0.0, 1.0])}, _bern_lp(jnp.array([0.0, 1.0]), p["phi"])),
    log_p=lambda p, v: _bern_logits_lp(v["z"], p["theta"])
    + _normal_lp(BERN_X, 2.0 * v["z"] - 1.0, 1.0),
    log_q=lambda p, v: _bern_lp(v["z"], p["phi"]),
)


# bern_chain: two dependent Bernoulli sites in the guide (z2's probability depends on z1)
CHAIN_X = 0.8


def bern_chain_model(x=None):
    theta = numpyro.param("theta", -0.3)
    z1 = numpyro.sample("z1", dist.Bernoulli(logits=theta))
    z2 = numpyro.sample("z2", dist.Bernoulli(jnp.where(z1 > 0.5, 0.7, 0.25)))
    numpyro.sample("x", dist.Normal(z1 + 2.0 * z2 - 1.5, 1.0), obs=x)


def bern_chain_guide(x=None):
    phi = numpyro.param("phi", 0.55, constraint=dist.constraints.unit_interval)
    psi = numpyro.param("psi", jnp.array([0.3, 0.65]), constraint=dist.constraints.unit_interval)
    z1 = numpyro.sample("z1", dist.Bernoulli(phi))
    numpyro.sample("z2", dist.Bernoulli(jnp.where(z1 > 0.5, psi[1], psi[0])))


def _bern_chain_log_q(p, v):
    return _bern_lp(v["z1"], p["phi"]) + _bern_lp(
        v["z2"], jnp.where(v["z1"] > 0.5, p["psi"][1], p["psi"][0]))


_CHAIN_Z = np.array(list(itertools.product([0.0, 1.0], repeat=2)))

BERN_CHAIN = ModelCase(
    name="bern_chain", model=bern_chain_model, guide=bern_chain_guide,
    params={"theta": jnp.array(-0.3), "phi": jnp.array(0.55), "psi": jnp.array([0.3, 0.65])},
    kwargs={"x": CHAIN_X},
    sites=(GuideSite("z1", "discrete"), GuideSite("z2", "discrete")), num_atoms=4,
    atoms=lambda p, _: (v := {"z1": jnp.asarray(_CHAIN_Z[:, 0]), "z2": jnp.asarray(_CHAIN_Z[:, 1])},
                     _bern_chain_log_q(p, v)),
    log_p=lambda p, v: _bern_logits_lp(v["z1"], p["theta"])
    + _bern_lp(v["z2"], jnp.where(v["z1"] > 0.5, 0.7, 0.25))
    + _normal_lp(CHAIN_X, v["z1"] + 2.0 * v["z2"] - 1.5, 1.0),
    log_q=_bern_chain_log_q,
)


# bern_plate: three independent positions in a plate
PLATE_X = jnp.array([0.3, -1.0, 2.0])


def bern_plate_model(x=None):
    theta = numpyro.param("theta", 0.1)
    with numpyro.plate("n", 3):
        z = numpyro.sample("z", dist.Bernoulli(logits=theta))
        numpyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)


def bern_plate_guide(x=None):
    phi = numpyro.param("phi", jnp.array([0.2, 0.5, 0.7]),
                        constraint=dist.constraints.unit_interval)
    with numpyro.plate("n", 3):
        numpyro.sample("z", dist.Bernoulli(phi))


_PLATE_Z = np.array(list(itertools.product([0.0, 1.0], repeat=3)))

BERN_PLATE = ModelCase(
    name="bern_plate", model=bern_plate_model, guide=bern_plate_guide,
    params={"theta": jnp.array(0.1), "phi": jnp.array([0.2, 0.5, 0.7])},
    kwargs={"x": PLATE_X},
    sites=(GuideSite("z", "discrete"),), num_atoms=8,
    atoms=lambda p, _: ({"z": jnp.asarray(_PLATE_Z)},
                     jnp.sum(_bern_lp(jnp.asarray(_PLATE_Z), p["phi"]), -1)),
    log_p=lambda p, v: jnp.sum(_bern_logits_lp(v["z"], p["theta"])
                               + _normal_lp(PLATE_X, 2.0 * v["z"] - 1.0, 1.0), -1),
    log_q=lambda p, v: jnp.sum(_bern_lp(v["z"], p["phi"]), -1),
)


# gauss: z ~ N(theta, 1), x ~ N(z, 1); guide z ~ N(m, s)
GAUSS_X = 1.3
GAUSS_NODES = 24


def gauss_model(x=None):
    theta = numpyro.param("theta", 0.1)
    z = numpyro.sample("z", dist.Normal(theta, 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def gauss_guide(x=None):
    m = numpyro.param("m", 0.3)
    s = numpyro.param("s", 0.8, constraint=dist.constraints.positive)
    numpyro.sample("z", dist.Normal(m, s))


def _gauss_atoms(p, rule):
    e, lw = rule
    return {"z": p["m"] + p["s"] * e}, lw


GAUSS = ModelCase(
    name="gauss", model=gauss_model, guide=gauss_guide,
    params={"theta": jnp.array(0.1), "m": jnp.array(0.3), "s": jnp.array(0.8)},
    kwargs={"x": GAUSS_X},
    sites=(GuideSite("z", "continuous"),), num_atoms=GAUSS_NODES,
    atoms=_gauss_atoms, nodes=GAUSS_NODES,
    log_p=lambda p, v: _normal_lp(v["z"], p["theta"], 1.0) + _normal_lp(GAUSS_X, v["z"], 1.0),
    log_q=lambda p, v: _normal_lp(v["z"], p["m"], p["s"]),
)


# gauss_chain: z1 -> z2 in model and guide (z2 ~ N(a z1 + b, s2) in the guide)
GCHAIN_X = 0.9
GCHAIN_NODES = 16


def gauss_chain_model(x=None):
    theta = numpyro.param("theta", -0.2)
    z1 = numpyro.sample("z1", dist.Normal(theta, 1.0))
    z2 = numpyro.sample("z2", dist.Normal(z1, 1.0))
    numpyro.sample("x", dist.Normal(z2, 1.0), obs=x)


def gauss_chain_guide(x=None):
    m1 = numpyro.param("m1", 0.2)
    s1 = numpyro.param("s1", 0.9, constraint=dist.constraints.positive)
    a = numpyro.param("a", 0.5)
    b = numpyro.param("b", 0.1)
    s2 = numpyro.param("s2", 0.7, constraint=dist.constraints.positive)
    z1 = numpyro.sample("z1", dist.Normal(m1, s1))
    numpyro.sample("z2", dist.Normal(a * z1 + b, s2))


def _gauss_chain_atoms(p, rule):
    e, lw = rule
    e1, e2 = (x.reshape(-1) for x in jnp.meshgrid(e, e, indexing="ij"))
    lw = (lw[:, None] + lw[None, :]).reshape(-1)
    z1 = p["m1"] + p["s1"] * e1
    return {"z1": z1, "z2": p["a"] * z1 + p["b"] + p["s2"] * e2}, lw


GAUSS_CHAIN = ModelCase(
    name="gauss_chain", model=gauss_chain_model, guide=gauss_chain_guide,
    params={"theta": jnp.array(-0.2), "m1": jnp.array(0.2), "s1": jnp.array(0.9),
            "a": jnp.array(0.5), "b": jnp.array(0.1), "s2": jnp.array(0.7)},
    kwargs={"x": GCHAIN_X},
    sites=(GuideSite("z1", "continuous"), GuideSite("z2", "continuous")),
    num_atoms=GCHAIN_NODES**2,
    atoms=_gauss_chain_atoms, nodes=GCHAIN_NODES,
    log_p=lambda p, v: _normal_lp(v["z1"], p["theta"], 1.0) + _normal_lp(v["z2"], v["z1"], 1.0)
    + _normal_lp(GCHAIN_X, v["z2"], 1.0),
    log_q=lambda p, v: _normal_lp(v["z1"], p["m1"], p["s1"])
    + _normal_lp(v["z2"], p["a"] * v["z1"] + p["b"], p["s2"]),
)


# mixed: c ~ Bernoulli, then z ~ Normal depending on c, in model and guide
MIXED_X = 0.7
MIXED_NODES = 20


def mixed_model(x=None):
    theta = numpyro.param("theta", 0.3)
    c = numpyro.sample("c", dist.Bernoulli(logits=theta))
    z = numpyro.sample("z", dist.Normal(2.0 * c - 1.0, 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def mixed_guide(x=None):
    phi = numpyro.param("phi", 0.4, constraint=dist.constraints.unit_interval)
    m = numpyro.param("m", -0.2)
    d = numpyro.param("d", 0.8)
    s = numpyro.param("s", 0.75, constraint=dist.constraints.positive)
    c = numpyro.sample("c", dist.Bernoulli(phi))
    numpyro.sample("z", dist.Normal(m + d * c, s))


def _mixed_atoms(p, rule):
    e, lw = rule
    c = jnp.repeat(jnp.array([0.0, 1.0]), e.shape[0])
    e = jnp.tile(e, 2)
    lw = jnp.tile(lw, 2) + _bern_lp(c, p["phi"])
    return {"c": c, "z": p["m"] + p["d"] * c + p["s"] * e}, lw


MIXED = ModelCase(
    name="mixed", model=mixed_model, guide=mixed_guide,
    params={"theta": jnp.array(0.3), "phi": jnp.array(0.4), "m": jnp.array(-0.2),
            "d": jnp.array(0.8), "s": jnp.array(0.75)},
    kwargs={"x": MIXED_X},
    sites=(GuideSite("c", "discrete"), GuideSite("z", "continuous")),
    num_atoms=2 * MIXED_NODES,
    atoms=_mixed_atoms, nodes=MIXED_NODES,
    log_p=lambda p, v: _bern_logits_lp(v["c"], p["theta"])
    + _normal_lp(v["z"], 2.0 * v["c"] - 1.0, 1.0) + _normal_lp(MIXED_X, v["z"], 1.0),
    log_q=lambda p, v: _bern_lp(v["c"], p["phi"]) + _normal_lp(v["z"], p["m"] + p["d"] * v["c"],
                                                               p["s"]),
)

# hier: a hierarchical guide u -> z for a model of z alone; marginal() integrates u out
HIER_X = 0.6
HIER_NODES = 16


def hier_model(x=None):
    theta = numpyro.param("theta", 0.2)
    z = numpyro.sample("z", dist.Normal(theta, 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def hier_guide(x=None):
    mu = numpyro.param("mu", 0.1)
    su = numpyro.param("su", 0.7, constraint=dist.constraints.positive)
    sz = numpyro.param("sz", 0.6, constraint=dist.constraints.positive)
    u = numpyro.sample("u", dist.Normal(mu, su))
    numpyro.sample("z", dist.Normal(u, sz))


def _hier_atoms(p, rule):
    e, lw = rule
    e1, e2 = (x.reshape(-1) for x in jnp.meshgrid(e, e, indexing="ij"))
    u = p["mu"] + p["su"] * e1
    return {"u": u, "z": u + p["sz"] * e2}, (lw[:, None] + lw[None, :]).reshape(-1)


HIER = ModelCase(
    name="hier", model=hier_model, guide=hier_guide,
    params={"theta": jnp.array(0.2), "mu": jnp.array(0.1), "su": jnp.array(0.7),
            "sz": jnp.array(0.6)},
    kwargs={"x": HIER_X},
    sites=(GuideSite("u", "continuous"), GuideSite("z", "continuous")),
    num_atoms=HIER_NODES**2,
    atoms=_hier_atoms, nodes=HIER_NODES,
    log_p=lambda p, v: _normal_lp(v["z"], p["theta"], 1.0) + _normal_lp(HIER_X, v["z"], 1.0),
    log_q=lambda p, v: _normal_lp(v["u"], p["mu"], p["su"]) + _normal_lp(v["z"], v["u"],
                                                                         p["sz"]),
    keep=("z",),
    log_q_aux=lambda p, v: _normal_lp(v["u"], p["mu"], p["su"]),
)

MODELS = (BERN, BERN_CHAIN, BERN_PLATE, GAUSS, GAUSS_CHAIN, MIXED, HIER)


# --------------------------------------------------------------------------------------------
# The exact evaluator (independent of vi_ext)

#: the evaluator's grid holds num_atoms ** draws points; programs are generated within it
ATOM_BUDGET = 2**17
#: and with at most this many guide draws, which bounds vi_ext's compile time
MAX_DRAWS = 6


def max_draws(mc: ModelCase) -> int:
    """The most guide draws a program on ``mc`` may make for the exact evaluator."""
    return min(MAX_DRAWS, int(math.floor(math.log(ATOM_BUDGET) / math.log(mc.num_atoms)
                                         + 1e-9)))


def exact_expectation(mc: ModelCase, program: Block, params: dict,
                      rule: tuple | None = None) -> jax.Array:
    """E[F] of the program's value F, by summing over the grid of the draws' atoms (for a
    Gaussian guide, with the Gauss-Hermite ``rule``, by default ``hermite(mc.nodes)``)."""
    num_draws = count_draws(program)
    if rule is None and mc.nodes:
        rule = tuple(jnp.asarray(x) for x in hermite(mc.nodes))
    values, log_w = mc.atoms(params, rule)
    n = log_w.shape[0]
    counter = itertools.count()
    draw_log_w = []

    def place(d, x):  # atom axis of draw d, site dims after the draw axes
        return x.reshape((1,) * d + (n,) + (1,) * (num_draws - d - 1) + x.shape[1:])

    def site_sum(x):
        return jnp.sum(x, axis=tuple(range(num_draws, x.ndim)))

    def new_draw():
        d = next(counter)
        draw_log_w.append(place(d, log_w))
        return {s: place(d, v) for s, v in values.items()}

    def block(b: Block):
        draws = [new_draw() for _ in range(b.sims)]

        def ev(e):
            if isinstance(e, LogW):
                return mc.log_p(params, draws[e.i]) - mc.log_q(params, draws[e.i])
            if isinstance(e, (LogP, LogPDict)):
                return mc.log_p(params, draws[e.i])
            if isinstance(e, NegLogQ):
                return -mc.log_q(params, draws[e.i])
            if isinstance(e, LogPMix):
                first = mc.sites[0].name
                return mc.log_p(params, {**draws[e.j], first: draws[e.i][first]})
            if isinstance(e, Value):
                return site_sum(draws[e.i][e.site])
            if isinstance(e, MargLogW):  # log p(x, z) - log mean_m q(z | u_m)
                joint, *extra = [new_draw() for _ in range(1 + e.m)]
                kept = {s: joint[s] for s in e.keep}
                log_ratios = [mc.log_q(params, {**u, **kept}) - mc.log_q_aux(params, u)
                              for u in (joint, *extra)]
                log_q_hat = logsumexp(jnp.stack(jnp.broadcast_arrays(*log_ratios)), axis=0)
                return mc.log_p(params, kept) - (log_q_hat - jnp.log(1 + e.m))
            if isinstance(e, Const):
                return jnp.asarray(e.c)
            if isinstance(e, Lin):
                return e.a * ev(e.e1) + e.b * ev(e.e2)
            if isinstance(e, Mul):
                return ev(e.e1) * ev(e.e2)
            if isinstance(e, Unary):
                return UNARY[e.op](ev(e.e))
            if isinstance(e, LogMeanExp2):
                return jnp.logaddexp(ev(e.e1), ev(e.e2)) - jnp.log(2.0)
            if isinstance(e, Reduce):
                xs = jnp.stack(jnp.broadcast_arrays(*[block(e.body) for _ in range(e.k)]))
                out = jnp.zeros(())
                if e.lme:
                    out = out + e.lme * (logsumexp(xs, axis=0) - jnp.log(e.k))
                if e.mean:
                    out = out + e.mean * jnp.mean(xs, axis=0)
                return out
            raise TypeError(e)

        return ev(b.expr)

    value = block(program)
    assert next(counter) == num_draws
    log_prob = sum(draw_log_w, jnp.zeros((1,) * num_draws))
    value = jnp.broadcast_to(value, log_prob.shape)
    return jnp.sum(jnp.exp(log_prob) * value)


#: a compiled program here runs once on small arrays: XLA's backend optimizations and CPU
#: fusion emitters would triple the compile time, which dominates, for nothing
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def run_once(fn: Callable, *args: Any) -> Any:
    """``jax.jit(fn)(*args)``, compiled for compile time (XLA's default options where a
    version of XLA lacks these)."""
    lowered = jax.jit(fn).lower(*args)
    try:
        compiled = lowered.compile(compiler_options=FAST_COMPILE)
    except Exception as err:  # noqa: BLE001 - XLA reports unknown options as a runtime error
        if "compile option" not in str(err):
            raise
        compiled = lowered.compile()
    return compiled(*args)


class Exact(NamedTuple):
    """The exact expectation and gradient, with a bound on the quadrature's error.

    Attributes:
        value: E[F] at ``mc.params``.
        grads: dE[F]/dparams, keyed like the params.
        value_error, grad_errors: for a Gaussian guide, the largest change of value and grads
            under coarser rules (:func:`coarser`), which bounds the error of the full rule
            (quadrature errors shrink with the number of nodes); zero for a discrete guide,
            which is enumerated.
    """

    value: float
    grads: dict
    value_error: float
    grad_errors: dict


def exact_value_and_grad(mc: ModelCase, program: Block) -> Exact:
    """E[F] and dE[F]/dparams at ``mc.params``, in float64 (as numpy), with error bounds."""

    def value_and_grad(params, rule):
        return jax.value_and_grad(exact_expectation, argnums=2)(mc, program, params, rule)

    with jax.enable_x64(True):
        params = {k: jnp.asarray(np.asarray(v), jnp.float64) for k, v in mc.params.items()}
        if not mc.nodes:
            value, grads = run_once(lambda p: value_and_grad(p, None), params)
            return Exact(float(value), {k: np.asarray(g) for k, g in grads.items()}, 0.0,
                         {k: np.zeros(np.shape(g)) for k, g in grads.items()})
        # all rules in one vectorized evaluation: the full one and the coarser ones
        rules = [hermite(n, size=mc.nodes) for n in [mc.nodes, *coarser(mc.nodes)]]
        rules = tuple(jnp.asarray(np.stack(x)) for x in zip(*rules, strict=True))
        values, grads = run_once(jax.vmap(value_and_grad, in_axes=(None, 0)), params, rules)
    values, grads = np.asarray(values), {k: np.asarray(g) for k, g in grads.items()}
    return Exact(float(values[0]), {k: g[0] for k, g in grads.items()},
                 float(np.max(np.abs(values[1:] - values[0]))),
                 {k: np.max(np.abs(g[1:] - g[0]), axis=0) for k, g in grads.items()})


def coarser(nodes: int) -> list[int]:
    """The sizes of the coarser rules whose departures from the full rule bound its error
    (one coarser rule alone can land close to the full one by chance where the integrand has
    a near-kink; three rarely all do)."""
    return sorted({nodes * 5 // 6, nodes * 2 // 3, nodes // 2}, reverse=True)


# --------------------------------------------------------------------------------------------
# Strategies per site, and hypothesis strategies for whole cases

STRATEGIES: dict[str, Callable[[], Any]] = {
    "reparam": vx.estimators.reparam,
    "stl": vx.estimators.stl,
    "dreg": vx.estimators.dreg,
    "reinforce": vx.estimators.reinforce,
    "reinforce_loo": lambda: vx.estimators.reinforce(baseline="loo"),
    "reinforce_average": lambda: vx.estimators.reinforce(baseline="average"),
    "enum": vx.estimators.enum,
    "mvd": vx.estimators.mvd,
    "local_enum": vx.estimators.local_enum,
}

#: the strategies a site of each kind may be given (all valid for Bernoulli / Normal sites)
OPTIONS = {
    "discrete": ("reinforce", "reinforce_loo", "reinforce_average", "enum", "mvd",
                 "local_enum"),
    "continuous": ("reparam", "stl", "dreg", "reinforce", "reinforce_loo",
                   "reinforce_average", "mvd"),
}

OBJECTIVE_NAMES = ("objective", "elbo", "iwae", "renyi", "cubo", "hvi")


@dataclass(frozen=True)
class Case:
    """One check: a program on a model, under an objective name, with a strategy per site."""

    model: ModelCase
    program: Block
    name: str
    mix: tuple[tuple[str, str], ...]  # (site, strategy key)
    must_accept: bool = False

    def estimators(self) -> dict[str, Any]:
        """The ``estimators`` argument of ``vx.estimate``: fresh strategy objects."""
        return {site: STRATEGIES[key]() for site, key in self.mix}

    def __repr__(self) -> str:
        mix = ", ".join(f"{s}={k}" for s, k in self.mix)
        return f"Case({self.model.name}, {self.name!r}, {{{mix}}}: {show(self.program)})"

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints examples with it
        printer.text(repr(self))


COEFFICIENTS = (1.0, -1.0, 0.5, 2.0, -0.3)
CONSTANTS = (0.5, -1.0, 2.0)
REDUCERS = ((1.0, 0.0), (0.0, 1.0), (1.0, 0.3), (2.0, 0.0), (-0.5, 0.0))
MAX_DEPTH = 3
MAX_NEST = 2


#: the largest polynomial degree of a program's value in its Gaussian draws: beyond it the
#: estimates' tails get so heavy that their sample standard error is unreliable at N draws
MAX_DEGREE = 4


class Growth(NamedTuple):
    """How an expression grows with its (standardized Gaussian) draws."""

    degree: int  # its polynomial degree (0: bounded)
    above: bool  # bounded above
    below: bool  # bounded below
    has_exp: bool


def growth(e: Any) -> Growth:
    """The growth of ``e``: a draw is linear, log densities are quadratic (log p bounded
    above, -log q below), tanh is bounded, and exp is only taken of what is bounded above
    (so it is bounded), never inside another exp. The rules are those of Gaussian draws,
    applied to discrete models too (where they are conservative)."""
    if isinstance(e, Const):
        return Growth(0, True, True, False)
    if isinstance(e, Value):
        return Growth(1, False, False, False)
    if isinstance(e, (LogP, LogPDict, LogPMix)):
        return Growth(2, True, False, False)
    if isinstance(e, NegLogQ):
        return Growth(2, False, True, False)
    if isinstance(e, (LogW, MargLogW)):
        return Growth(2, False, False, False)
    if isinstance(e, Unary):
        g = growth(e.e)
        if e.op == "square":
            return Growth(2 * g.degree, g.degree == 0, True, g.has_exp)
        return Growth(0, True, True, g.has_exp or e.op == "exp")  # tanh; exp of bounded above
    if isinstance(e, Lin):
        return _either(_scaled(growth(e.e1), e.a), _scaled(growth(e.e2), e.b))
    if isinstance(e, Mul):
        g1, g2 = growth(e.e1), growth(e.e2)
        bounded = g1.degree == 0 and g2.degree == 0
        return Growth(g1.degree + g2.degree, bounded, bounded, g1.has_exp or g2.has_exp)
    if isinstance(e, LogMeanExp2):  # between the mean and the max of its two inputs
        return _either(growth(e.e1), growth(e.e2))
    if isinstance(e, Reduce):  # likewise, over the particles
        g = growth(e.body.expr)
        parts = [_scaled(g, c) for c in (e.lme, e.mean) if c]
        return parts[0] if len(parts) == 1 else _either(*parts)
    raise TypeError(e)


def _either(g1: Growth, g2: Growth) -> Growth:
    return Growth(max(g1.degree, g2.degree), g1.above and g2.above, g1.below and g2.below,
                  g1.has_exp or g2.has_exp)


def _scaled(g: Growth, c: float) -> Growth:
    return g if c >= 0 else g._replace(above=g.below, below=g.above)


def _leaves(mc: ModelCase, sims: int) -> list:
    out: list = []
    for i in range(sims):
        out += [LogW(i), LogP(i), NegLogQ(i), LogPDict(i)]
        out += [Value(i, s.name) for s in mc.sites]
    if len(mc.sites) > 1:
        out += [LogPMix(i, j) for i in range(sims) for j in range(sims) if i != j]
    return out + [Const(c) for c in CONSTANTS]


def _draw_block(draw, mc: ModelCase, budget: int, depth: int, nest: int,
                top: bool = False) -> tuple[Block, int]:
    """A scope with one or two sims; the top scope may have none, and is then particles (or
    a marginal, for a hierarchical guide)."""
    sims = draw(st.integers(0 if top else 1, min(2, budget)))
    if sims == 0 and mc.keep and draw(st.booleans()):
        m = draw(st.integers(0, min(budget - 1, 1)))
        expr, used = MargLogW(m, mc.keep), 1 + m
    elif sims == 0:
        expr, used = _draw_particles(draw, mc, budget, depth, nest)
    else:
        expr, used = _draw_expr(draw, mc, sims, budget - sims, depth, nest)
    return Block(sims, expr), sims + used


def _draw_particles(draw, mc: ModelCase, budget: int, depth: int, nest: int):
    k = draw(st.integers(1, min(3, budget)))
    body, used = _draw_block(draw, mc, budget // k, depth - 1, nest - 1)
    lme, mean = draw(st.sampled_from(REDUCERS))
    return Reduce(k, body, lme, mean), k * used


def _draw_expr(draw, mc: ModelCase, sims: int, budget: int, depth: int,
               nest: int) -> tuple[Any, int]:
    """An expression over ``sims`` draws of this scope, with at most ``budget`` more draws
    in its particles; returns it and the number of draws it makes."""
    kinds = ["leaf"] + (["marginal"] if mc.keep and budget >= 1 else [])
    if depth > 0:
        kinds += ["lin", "unary", "mul", "lme2"]
        if nest > 0 and budget >= 1:
            kinds += ["particles"]
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        return draw(st.sampled_from(_leaves(mc, sims))), 0
    if kind == "particles":
        return _draw_particles(draw, mc, budget, depth, nest)
    if kind == "marginal":
        m = draw(st.integers(0, min(budget - 1, 1)))
        return MargLogW(m, mc.keep), 1 + m
    e1, u1 = _draw_expr(draw, mc, sims, budget, depth - 1, nest)
    g1 = growth(e1)
    if kind == "unary":
        ops = ["tanh"] + (["square"] if 2 * g1.degree <= MAX_DEGREE else []) + (
            ["exp"] if g1.above and not g1.has_exp else [])
        return Unary(draw(st.sampled_from(ops)), e1), u1
    e2, u2 = _draw_expr(draw, mc, sims, budget - u1, depth - 1, nest)
    if kind == "mul" and g1.degree + growth(e2).degree <= MAX_DEGREE:
        return Mul(e1, e2), u1 + u2
    if kind == "lme2":
        return LogMeanExp2(e1, e2), u1 + u2
    # "lin", or a "mul" whose degree would be too high
    a, b = draw(st.sampled_from(COEFFICIENTS)), draw(st.sampled_from(COEFFICIENTS))
    return Lin(a, e1, b, e2), u1 + u2


@st.composite
def cases(draw, models: tuple[ModelCase, ...] = MODELS) -> Case:
    """A model, a program within the exact evaluator's budget, a name, a strategy per site."""
    mc = draw(st.sampled_from(models))
    program, used = _draw_block(draw, mc, max_draws(mc), MAX_DEPTH, MAX_NEST, top=True)
    assert used == count_draws(program) <= max_draws(mc)
    assert growth(program.expr).degree <= MAX_DEGREE
    name = draw(st.sampled_from(OBJECTIVE_NAMES))
    mix = tuple((s.name, draw(st.sampled_from(OPTIONS[s.kind]))) for s in mc.sites)
    return Case(mc, program, name, mix)
