"""marginal() and the HVI family."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import vi_ext as vx
from models import cone
from vi_ext.program import density, expectation, marginal


def tractable_guide():
    """u ~ N(a, 1), z ~ N(u, 1): the marginal is q(z) = N(a, sqrt 2)."""
    a = numpyro.param("a", 0.4)
    u = numpyro.sample("u", dist.Normal(a, 1.0))
    numpyro.sample("z", dist.Normal(u, 1.0))


def exact_reverse(kept):
    """q(u | z) = N((a + z)/2, sqrt(1/2)), exactly (a is the guide's param)."""
    a = numpyro.param("a", 0.4)
    numpyro.sample("u", dist.Normal((a + kept["z"]) / 2, jnp.sqrt(0.5)))


def model():
    numpyro.sample("z", dist.Normal(0.0, 1.0))


@pytest.mark.parametrize("num_particles", [0, 3])
def test_marginal_is_exact_with_the_exact_reverse_model(num_particles):
    @expectation
    def gap(model_, guide, *args, **kwargs):
        q = marginal(guide, keep=["z"], proposal=exact_reverse, num_particles=num_particles)
        return q.log_density - dist.Normal(0.4, jnp.sqrt(2.0)).log_prob(q.values["z"])

    params = {"a": jnp.array(0.4)}
    for k in range(3):
        v, _ = vx.estimate(gap, model, tractable_guide, params, key=k)
        assert abs(float(v)) < 1e-5


def test_marginal_upper_bounds_log_q_on_average():
    """E[log q_hat(z)] >= log q(z), and the gap shrinks with M (default proposal q(u))."""
    def gap_for(m):
        @expectation
        def gap(model_, guide, *args, **kwargs):
            q = marginal(guide, keep=["z"], num_particles=m)
            return q.log_density - dist.Normal(0.4, jnp.sqrt(2.0)).log_prob(q.values["z"])

        keys = jax.random.split(jax.random.PRNGKey(0), 3000)
        vals = jax.jit(jax.vmap(lambda k: vx.estimate(gap, model, tractable_guide,
                                                      {"a": jnp.array(0.4)}, key=k)[0]))(keys)
        return float(vals.mean()), float(vals.std() / np.sqrt(len(vals)))

    g0, se0 = gap_for(0)
    g8, se8 = gap_for(8)
    assert g0 > -4 * se0 and g8 > -4 * se8
    assert g8 < g0


def test_cone_bounds_are_ordered_and_below_the_evidence():
    params = vx.init_params(cone.model, cone.hierarchical_guide, key=0, z=5.0)
    params = {**params, "radius": jnp.sqrt(5.0), "sigma_x": jnp.array(0.3),
              "sigma_y": jnp.array(0.3)}
    keys = jax.random.split(jax.random.PRNGKey(1), 2000)
    means = {}
    for obj in (vx.objectives.hvi(), vx.objectives.iwhvi(5), vx.objectives.diwhvi(5, 5)):
        vals = jax.jit(jax.vmap(lambda k, o=obj: vx.estimate(o, cone.model,
                                                             cone.hierarchical_guide, params,
                                                             key=k, z=5.0)[0]))(keys)
        means[obj.name] = (float(vals.mean()), float(vals.std() / np.sqrt(len(vals))))
    log_pz = cone.log_evidence()
    (h, sh), (i, si), (d, sd) = means["hvi"], means["iwhvi"], means["diwhvi"]
    assert h < i + 4 * np.hypot(sh, si)
    assert i < d + 4 * np.hypot(si, sd)
    assert d < log_pz + 4 * sd


def test_circle_guide_is_the_hierarchical_guide_at_radius_sqrt_z():
    sig = {"sigma_x": jnp.array(0.3), "sigma_y": jnp.array(0.4)}
    obj = vx.objectives.diwhvi(3, 2)
    a = vx.estimate(obj, cone.model, cone.circle_guide, sig, key=3, z=5.0)
    b = vx.estimate(obj, cone.model, cone.hierarchical_guide,
                    {**sig, "radius": jnp.sqrt(5.0)}, key=3, z=5.0)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5)
    for name in sig:
        np.testing.assert_allclose(a[1][name], b[1][name], rtol=1e-4)


def test_fit_with_iwhvi_on_the_cone():
    res = vx.fit(cone.model, z=5.0, guide=cone.hierarchical_guide,
                 objective=vx.objectives.iwhvi(3), num_steps=600, progress=False)
    assert np.all(np.isfinite(res.losses))
    # the fitted radius moves to the ring x^2 + y^2 ~= 5
    assert abs(float(res.params["radius"]) - np.sqrt(5.0)) < 0.4
    draws = res.sample(100)
    assert set(draws) == {"x", "y"}


def test_density_of_a_guide_conditioned_on_everything():
    @expectation
    def dens(model_, guide, *args, **kwargs):
        return density(guide, {"u": 0.1, "z": 0.3})

    v, _ = vx.estimate(dens, model, tractable_guide, {"a": jnp.array(0.4)}, key=0)
    exact = dist.Normal(0.4, 1.0).log_prob(0.1) + dist.Normal(0.1, 1.0).log_prob(0.3)
    np.testing.assert_allclose(v, exact, rtol=1e-6)


def test_the_density_side_of_marginal_is_unbiased_for_q():
    """density(Marginal(...), z) = log q_hat(z) with E[q_hat(z)] = q(z) (default proposal
    q(u), M = 2), checked at a fixed z against the exact marginal N(a, sqrt 2)."""
    from vi_ext.program import Marginal

    z0 = jnp.array(0.9)

    @expectation
    def ratio(model_, guide, *args, **kwargs):
        log_q_hat = density(Marginal(guide, keep=["z"], num_particles=2), {"z": z0})
        return jnp.exp(log_q_hat - dist.Normal(0.4, jnp.sqrt(2.0)).log_prob(z0))

    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    v, _ = jax.jit(jax.vmap(lambda k: vx.estimate(ratio, model, tractable_guide,
                                                  {"a": jnp.array(0.4)}, key=k)))(keys)
    v = np.asarray(v)
    assert abs(v.mean() - 1.0) <= 4.5 * v.std(ddof=1) / np.sqrt(len(v))


def test_hvi_draws_the_guide_once():
    """HVI learns the kept sites from its own joint draw: one draw per site, no extra sim."""
    from vi_ext.program.context import Frame

    def hier_model():
        numpyro.sample("z", dist.Normal(0.0, 1.0))

    frame = Frame({"a": jnp.array(0.4)}, jax.random.PRNGKey(0), {})
    with frame:
        vx.objectives.hvi().program(hier_model, tractable_guide)
    assert sorted(a[-1] for a in frame.info.draws) == ["u", "z"]
