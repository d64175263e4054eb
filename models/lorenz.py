"""A stochastic Lorenz-63 bridge: a nonlinear state-space model with unknown noise scales.

The state u_t = (x_t, y_t, z_t) follows the Lorenz-63 drift, discretized by Euler-Maruyama
with step dt, and only its first coordinate is observed, before and after a gap:

    f(u) = (10 (y - x),  x (28 - z) - y,  x y - 8/3 z)
    sigma ~ HalfNormal(1),  tau ~ HalfNormal(5)
    u_0 ~ Normal(0, 20 I_3)
    u_t ~ Normal(u_{t-1} + dt f(u_{t-1}), sigma sqrt(dt) I_3)     t = 1..T-1   (centered)
    obs_t ~ Normal(x_t, tau)                                      t in 0..14 and 25..39

with dt = 0.02 and T = 40. The posterior has a mode where the path follows the attractor and
tau is small, and a poor mode where the path sits near the fixed point at the origin and
tau is large enough to call every observation noise; a fit started at the prior median
(u_0 = 0, where the drift vanishes) begins in the second. As written (centered), every
start and every optimizer measured stays there; with the states non-centered
(``vx.reparam.noncentered(model, ["u"])``, what ``vx.fit(model)``'s race chooses), the path is
a deterministic function of u_0 and the innovations, and fits reach the first
(docs/defaults.md).

Data: one path simulated with a fixed seed from a point on the attractor (sigma = 1,
tau = 1).

Reference: Lorenz, "Deterministic nonperiodic flow", J. Atmos. Sci. 1963; the Inference
Gym's ``ConvectionLorenzBridge`` (Ambrogioni et al., "Automatic structured variational
inference", AISTATS 2021).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan

T = 40
DT = 0.02
OBSERVED = np.r_[0:15, 25:40]


def drift(u):
    """The Lorenz-63 vector field at u [..., 3] (sigma = 10, rho = 28, beta = 8/3)."""
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    return jnp.stack([10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z], axis=-1)


def model(obs=None, observed=OBSERVED, n: int = T) -> None:
    """The Lorenz bridge.

    Args:
        obs: observations of the first coordinate at the times ``observed``, or None to
            simulate them.
        observed: indices of the observed times, in 0..n-1.
        n: number of time steps T.
    """
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    tau = numpyro.sample("tau", dist.HalfNormal(5.0))
    u0 = numpyro.sample("u0", dist.Normal(jnp.zeros(3), 20.0).to_event(1))

    def transition(prev, _):
        u = numpyro.sample("u", dist.Normal(prev + DT * drift(prev),
                                            sigma * jnp.sqrt(DT)).to_event(1))
        return u, u

    _, us = scan(transition, u0, None, length=n - 1)
    path = jnp.concatenate([u0[None], us])
    with numpyro.plate("obs", len(observed)):
        numpyro.sample("x_obs", dist.Normal(path[jnp.asarray(observed), 0], tau), obs=obs)


def simulate(n: int = T, sigma: float = 1.0, tau: float = 1.0, seed: int = 5):
    """(path [n, 3], observations) from a point on the attractor."""
    rng = np.random.default_rng(seed)
    u = np.array([1.0, 1.0, 1.0])
    for _ in range(2000):  # onto the attractor, deterministically
        u = u + 0.005 * np.asarray(drift(u))
    path = np.empty((n, 3))
    path[0] = u
    for t in range(1, n):
        path[t] = (path[t - 1] + DT * np.asarray(drift(path[t - 1]))
                   + sigma * np.sqrt(DT) * rng.normal(size=3))
    obs = path[OBSERVED, 0] + tau * rng.normal(size=len(OBSERVED))
    return path.astype(np.float32), obs.astype(np.float32)


def data() -> dict:
    """The bundled observations (simulated with a fixed seed)."""
    return {"obs": simulate()[1]}
