"""The structure of a staged program: which tags the value depends on, where it is affine
(and with which static coefficient), and whether a logmeanexp's input is aligned with a
particles call. Validity of every strategy is read from these facts."""

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from vi_ext.program.context import Frame
from vi_ext.program.primitives import density, logmeanexp, particles, sim
from vi_ext.program.structure import analyse, tag


def _structure(fn, *args):
    return analyse(fn, *args)


def test_affine_terms_and_their_static_coefficients():
    def f(x, y):
        a, b = tag(x, ("lp", ("d0",), "a")), tag(y, ("lq", ("s0", "z")))
        return jnp.sum(a) - 2.0 * jnp.sum(b) / 4.0

    st = _structure(f, jnp.ones(3), jnp.ones(2))
    assert st.affine(("lp", ("d0",), "a")) and st.coefficient(("lp", ("d0",), "a")) == 1.0
    assert st.affine(("lq", ("s0", "z"))) and st.coefficient(("lq", ("s0", "z"))) == -0.5
    assert st.terms == {("lp", ("d0",), "a"), ("lq", ("s0", "z"))}


def test_products_and_nonlinear_functions_are_not_affine():
    def f(x, y):
        a, b = tag(x, ("lp", ("d0",), "a")), tag(y, ("lp", ("d0",), "b"))
        return jnp.sum(a) * jnp.sum(b) + jnp.exp(jnp.sum(b))

    st = _structure(f, jnp.ones(3), jnp.ones(2))
    assert not st.affine(("lp", ("d0",), "a")) and not st.affine(("lp", ("d0",), "b"))
    assert st.terms == frozenset()
    assert st.residual_deps() >= {("lp", ("d0",), "a"), ("lp", ("d0",), "b")}


def test_a_coefficient_that_depends_on_a_random_value_is_not_free_of_randomness():
    def f(x, z):
        a, v = tag(x, ("lp", ("d0",), "a")), tag(z, ("v", ("s0", "z")))
        return jnp.sum(a) * v

    st = _structure(f, jnp.ones(3), jnp.ones(()))
    assert not st.affine(("lp", ("d0",), "a"))
    assert st.value_depends(("v", ("s0", "z")))


def test_dependence_of_terms_on_draws_follows_the_dataflow():
    def f(z, w):
        z, w = tag(z, ("v", ("s0", "z"))), tag(w, ("v", ("s0", "w")))
        lp = tag(dist.Normal(z, 1.0).log_prob(2.0), ("lp", ("d0",), "x"))
        lw = tag(dist.Normal(0.0, 1.0).log_prob(w), ("lp", ("d0",), "w"))
        return lp + lw

    st = _structure(f, jnp.zeros(()), jnp.zeros(()))
    assert ("v", ("s0", "z")) in st.deps(("lp", ("d0",), "x"))
    assert ("v", ("s0", "w")) not in st.deps(("lp", ("d0",), "x"))


def model(x=None):
    z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x=None):
    numpyro.sample("z", dist.Normal(numpyro.param("m", 0.0), 1.0))


def _program_structure(program):
    def run(params, key):
        with Frame(params, key, {}, mode="analysis"):
            return program()

    return analyse(run, {"m": jnp.zeros(())}, jax.random.PRNGKey(0))


def log_w():
    q = sim(guide, x=1.0)
    return density(model, q, x=1.0) - q.log_density


def test_a_mean_of_particles_is_affine_in_each_particles_terms():
    st = _program_structure(lambda: jnp.mean(particles(4, log_w)))
    lq = ("lq", ("p0", "s0", "z"))
    assert st.affine(lq) and st.coefficient(lq) == -0.25
    assert st.avals[lq].shape == (4,)


def test_a_logmeanexp_of_particles_is_aligned_with_them():
    st = _program_structure(lambda: logmeanexp(particles(4, log_w)))
    assert not st.affine(("lq", ("p0", "s0", "z")))
    assert st.affine(("lme", ("m0",)))
    assert st.aligned(("lmein", ("m0",))) == (("p0",), 0)
    form = st.input_form(("lmein", ("m0",)))
    assert form.lin[("lq", ("p0", "s0", "z"))].value == -1.0


def test_a_logmeanexp_of_centred_particles_is_not_aligned():
    def centred():
        lw = particles(4, log_w)
        return logmeanexp(lw - jnp.mean(lw))

    st = _program_structure(centred)
    assert st.aligned(("lmein", ("m0",))) is None


def test_a_selection_depends_on_its_predicate():
    """jnp.where(z > 0.5, a, b) with tag-free a, b depends on z (a guide site whose
    distribution is chosen by an upstream draw)."""

    def f(z, a):
        z = tag(z, ("v", ("s0", "z1")))
        lp = tag(jnp.where(z > 0.5, a, 2.0 * a), ("lq", ("s0", "z2")))
        return lp

    st = _structure(f, jnp.zeros(()), jnp.ones(()))
    assert ("v", ("s0", "z1")) in st.deps(("lq", ("s0", "z2")))
