"""The noisy cone: a ring-shaped posterior that mean-field guides cannot follow.

    x ~ Normal(0, 10),  y ~ Normal(0, 10)
    z ~ Normal(x^2 + y^2, 0.1 + (x^2 + y^2) / 100),   z = 5 observed

The posterior of (x, y) concentrates on the circle x^2 + y^2 ~= 5. The hierarchical guide
draws an angle and then a point near the circle of fitted radius,

    u ~ Uniform(0, 1),  theta = 2 pi u,
    x ~ Normal(r cos theta, sigma_x),  y ~ Normal(r sin theta, sigma_y),

whose marginal q(x, y) is intractable: fit it with vx.objectives.hvi / iwhvi / diwhvi.

Reference: Becker et al., "Probabilistic Programming with Programmable Variational
Inference", PLDI 2024, section 7 (the cone example).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints


def model(z: float | None = 5.0) -> None:
    """x, y ~ N(0, 10); z ~ N(x^2 + y^2, 0.1 + (x^2 + y^2)/100); z observed.

    Args:
        z: the observation (None to simulate it).
    """
    x = numpyro.sample("x", dist.Normal(0.0, 10.0))
    y = numpyro.sample("y", dist.Normal(0.0, 10.0))
    rs = x**2 + y**2
    numpyro.sample("z", dist.Normal(rs, 0.1 + rs / 100.0), obs=z)


def naive_guide(z=5.0) -> None:
    """Mean-field Gaussian over (x, y)."""
    for name in ("x", "y"):
        loc = numpyro.param(f"{name}_loc", 1.0)
        scale = numpyro.param(f"{name}_scale", 1.0, constraint=constraints.positive)
        numpyro.sample(name, dist.Normal(loc, scale))


def hierarchical_guide(z=5.0) -> None:
    """An angle u, then (x, y) near the circle of radius r at that angle.

    u ~ U(0, 1); x ~ N(r cos 2 pi u, sigma_x); y ~ N(r sin 2 pi u, sigma_y).
    """
    radius = numpyro.param("radius", 1.0, constraint=constraints.positive)
    sx = numpyro.param("sigma_x", 1.0, constraint=constraints.positive)
    sy = numpyro.param("sigma_y", 1.0, constraint=constraints.positive)
    u = numpyro.sample("u", dist.Uniform(0.0, 1.0))
    theta = 2.0 * jnp.pi * u
    numpyro.sample("x", dist.Normal(radius * jnp.cos(theta), sx))
    numpyro.sample("y", dist.Normal(radius * jnp.sin(theta), sy))


def circle_guide(z=5.0) -> None:
    """The PLDI'24 artifact's hierarchical family: the circle's radius is fixed at sqrt(z).

    u ~ U(0, 1); x ~ N(sqrt(z) cos 2 pi u, sigma_x); y ~ N(sqrt(z) sin 2 pi u, sigma_y).
    """
    sx = numpyro.param("sigma_x", 1.0, constraint=constraints.positive)
    sy = numpyro.param("sigma_y", 1.0, constraint=constraints.positive)
    u = numpyro.sample("u", dist.Uniform(0.0, 1.0))
    theta = 2.0 * jnp.pi * u
    radius = jnp.sqrt(z)
    numpyro.sample("x", dist.Normal(radius * jnp.cos(theta), sx))
    numpyro.sample("y", dist.Normal(radius * jnp.sin(theta), sy))


def log_evidence(z: float = 5.0, half_width: float = 6.0, n: int = 1201) -> float:
    """log p(z) by quadrature on a grid over (x, y) (the integrand vanishes beyond it)."""
    g = jnp.linspace(-half_width, half_width, n)
    xx, yy = jnp.meshgrid(g, g)
    rs = xx**2 + yy**2
    lp = (dist.Normal(0.0, 10.0).log_prob(xx) + dist.Normal(0.0, 10.0).log_prob(yy)
          + dist.Normal(rs, 0.1 + rs / 100.0).log_prob(z))
    cell = (g[1] - g[0]) ** 2
    return float(jnp.log(jnp.sum(jnp.exp(lp - lp.max())) * cell) + lp.max())


def data() -> dict:
    """The observation z = 5."""
    return {"z": 5.0}
